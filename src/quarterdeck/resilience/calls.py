"""Resilient model calls: rate limits, circuit breakers, retries and the fallback chain.

This is the one place that decides what happens when a provider call fails, so the provider SDKs
run with their own retries off. Per call:

1. wait for rate-limit capacity (a run waiting for capacity is delayed, never failed): one
   request and the call's estimated tokens, settled to its real usage when it answers (a call
   the provider refused before doing any work gives its tokens back; see
   :mod:`~quarterdeck.resilience.tokens`);
2. call through the breaker of ``provider:model`` (an open breaker fails fast);
3. on failure ask :class:`~quarterdeck.resilience.retry.RetryPolicy` whether and when to retry
   (the guide's 1/5/15/30 s schedule, ``retry-after`` honoured and capped, a total budget);
4. when the primary's breaker stays open or its retries are spent, try the model's fallbacks in
   order (configured per model; the guide's example is a smaller model);
5. a context-window error moves to a larger-context model when one is configured.

It is also the one place that prices and counts provider calls (tokens, cost, latency, time to
first token, errors, retries, fallbacks), so every caller of a model gets the same series; what a
*run* did (turns, outcome) is counted by the run worker. For the same reason each call sent to a
provider (every retry, every fallback model) gets its ``chat {model}`` span here, a child of
whatever span is current (a run attempt's ``invoke_agent``); a call an open breaker refused was
never sent, so it gets only an event on the current span. With :class:`Pricing` every model has a
price: one without its own pays the fallback's, and the result says the cost is estimated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import structlog
from opentelemetry import trace
from opentelemetry.trace import Span

from quarterdeck import metrics, tracing
from quarterdeck.exceptions import ProviderError
from quarterdeck.providers import genai_content, telemetry
from quarterdeck.providers.pricing import Pricing
from quarterdeck.providers.types import ModelRequest, ModelResponse, Provider, Usage
from quarterdeck.resilience import tokens
from quarterdeck.resilience.breaker import Breakers, CircuitOpenError, breaker_name
from quarterdeck.resilience.ratelimit import Grant, ProviderLimiter
from quarterdeck.resilience.retry import GiveUp, RetryPolicy, is_context_overflow
from quarterdeck.resilience.traffic import observe_provider_call

log = structlog.get_logger(__name__)

CostFn = Callable[[str, Usage], Decimal | None]
"""The price of one call's usage on a model; None when the model has no known price."""


@dataclass
class CallResult:
    response: ModelResponse
    fallback_from: str | None = None
    fallback_reason: str | None = None
    attempts: int = 1
    cost: Decimal | None = None
    """What the answering call cost (None: unknown price, or the caller has no ``cost_of``)."""
    cost_estimated: bool = False
    """The model has no price of its own: ``cost`` is at the fallback model's price."""


def refused_unprocessed(error: ProviderError) -> bool:
    """A failure the provider answered without processing the prompt (a 4xx, an overload), so
    its tokens do not count against the limits; other failures (5xx, timeouts, a stream cut
    short) may have been processed and keep what they took."""
    status = error.status_code
    return error.overloaded or (status is not None and 400 <= status < 500)


class _GaveUp(Exception):
    def __init__(self, error: ProviderError, exhausted: bool, attempts: int) -> None:
        super().__init__(error.detail)
        self.error = error
        self.exhausted = exhausted
        self.attempts = attempts


class ResilientCaller:
    def __init__(
        self,
        provider: Provider,
        *,
        policy: RetryPolicy | None = None,
        breakers: Breakers | None = None,
        limiter: ProviderLimiter | None = None,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
        context_fallbacks: Mapping[str, Sequence[str]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        streaming: bool = False,
        cost_of: CostFn | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        """``pricing`` prices every call (unknown models at its fallback, marked estimated);
        without it, ``cost_of`` (None for an unknown price), else nothing is priced."""
        self.provider = provider
        self.cost_of = cost_of
        self.pricing = pricing
        self.streaming = streaming
        self.policy = policy or RetryPolicy()
        self.breakers = breakers or Breakers()
        self.limiter = limiter
        self.fallbacks = {k: list(v) for k, v in (fallbacks or {}).items()}
        self.context_fallbacks = {k: list(v) for k, v in (context_fallbacks or {}).items()}
        self.sleep = sleep
        self.clock = clock

    def models_for(self, model: str) -> list[str]:
        """Every model a call of ``model`` may end up at (its fallbacks, and theirs for a
        context-window error): a budget hold must cover the dearest of them."""
        found: list[str] = []
        todo = [model]
        while todo and len(found) < 64:
            current = todo.pop(0)
            if current in found:
                continue
            found.append(current)
            todo += self.fallbacks.get(current, []) + self.context_fallbacks.get(current, [])
        return found

    async def call(self, agent_type: str, request: ModelRequest) -> CallResult:
        """The response of the first model in the chain that answers; raises the last error.

        The chain is the model and its fallbacks. A context-window error (the conversation no
        longer fits) is not retried; it switches to the model's larger-context fallbacks, if
        any are configured, because a smaller fallback could not take it either.
        """
        chain = [request.model, *self.fallbacks.get(request.model, [])]
        reason: str | None = None
        index = 0
        while index < len(chain):
            model = chain[index]
            attempt_request = request if index == 0 else dataclasses.replace(request, model=model)
            has_fallback = index < len(chain) - 1
            try:
                response, attempts, cost, estimated = await self._with_retries(
                    agent_type, attempt_request, has_fallback
                )
            except _GaveUp as gave_up:
                larger = self.context_fallbacks.get(model, [])
                if is_context_overflow(gave_up.error) and larger:
                    chain = [*chain[: index + 1], *larger]
                    reason = "context_window"
                elif index == len(chain) - 1 or not gave_up.exhausted:
                    raise gave_up.error from None
                else:
                    reason = gave_up.error.error_type
                log.warning(
                    "model_fallback",
                    from_model=model,
                    to_model=chain[index + 1],
                    reason=reason,
                    error=gave_up.error.detail,
                )
                index += 1
                continue
            if index == 0:
                return CallResult(response, attempts=attempts, cost=cost, cost_estimated=estimated)
            metrics.FALLBACKS.labels(
                metrics.model(request.model),
                metrics.model(model),
                metrics.bounded(reason or ""),
            ).inc()
            return CallResult(response, request.model, reason, attempts, cost, estimated)
        raise AssertionError("unreachable: the chain is never empty")

    def _record(self, agent_type: str, response: ModelResponse) -> tuple[Decimal | None, bool]:
        """Price the answer and count it: tokens, cost, latency and time to first token.
        Returns the cost and whether it is an estimate (the model has no price of its own)."""
        cost: Decimal | None
        if self.pricing is not None:
            cost, estimated = self.pricing.priced(response.model, response.usage)
        else:
            cost = self.cost_of(response.model, response.usage) if self.cost_of else None
            estimated = False
        telemetry.record_call(
            agent_type,
            self.provider.name,
            response.model,
            response.usage,
            cost,
            response.latency_s,
            response.ttft_s,
            unpriced=estimated,
        )
        return cost, estimated

    async def _once(self, request: ModelRequest) -> ModelResponse:
        """One call. Streaming (for real providers) is what gives time to first token."""
        if not self.streaming:
            return await self.provider.complete(request)
        final: ModelResponse | None = None
        async for event in self.provider.stream(request):
            if event.type == "message":
                final = event.response
        if final is None:
            raise ProviderError(
                "the stream ended without a final message",
                status_code=502,
                error_type="api_error",
                retryable=True,
            )
        return final

    async def _traced(
        self, agent_type: str, request: ModelRequest, attempt: int
    ) -> tuple[ModelResponse, Decimal | None, bool]:
        """One call sent to the provider, in its ``chat`` span; priced and counted on success
        (inside the span, so the span carries the cost)."""
        attributes: dict[str, object] = {
            "gen_ai.request.max_tokens": request.max_tokens,
            "quarterdeck.attempt": attempt,
        }
        address = getattr(self.provider, "server_address", None)
        if address:
            attributes["server.address"] = address
        with tracing.chat_span(
            request.model, provider=self.provider.name, attributes=attributes
        ) as span:
            content = span.is_recording() and tracing.record_content()
            if content:
                _request_content(span, request)
            try:
                response = await self._once(request)
            except ProviderError as exc:
                if span.is_recording():
                    tracing.record_error(span, exc.error_type, exc.detail)
                    if exc.status_code is not None:
                        span.set_attribute("http.response.status_code", exc.status_code)
                raise
            except Exception as exc:  # not a provider's answer: still a failed call
                tracing.record_error(span, type(exc).__qualname__, str(exc))
                raise
            cost, estimated = self._record(agent_type, response)
            if span.is_recording():
                usage = response.usage
                tracing.record_usage(
                    span,
                    response_model=response.model,
                    response_id=response.id,
                    request_id=response.request_id,
                    finish_reason=response.stop_reason,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_read_tokens=usage.cache_read_input_tokens,
                    cache_creation_tokens=usage.cache_creation_input_tokens,
                    cost_usd=None if cost is None else float(cost),
                )
                if estimated:
                    span.set_attribute("quarterdeck.cost_estimated", True)
                if content:
                    span.set_attribute(
                        "gen_ai.output.messages", genai_content.output_messages(response)
                    )
            return response, cost, estimated

    async def _with_retries(
        self, agent_type: str, request: ModelRequest, has_fallback: bool = False
    ) -> tuple[ModelResponse, int, Decimal | None, bool]:
        name = breaker_name(self.provider.name, request.model)
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            grant = await self._reserve(request)
            try:
                async with self.breakers.guard(name):
                    response, cost, estimated = await self._traced(agent_type, request, attempt)
            except CircuitOpenError as exc:
                await self._settle(grant, request.model, None)  # no call was made
                _breaker_event(name, exc.retry_in)
                error = ProviderError(
                    f"circuit breaker for {request.model} is open: {exc.detail}",
                    status_code=503,
                    error_type="circuit_open",
                    retry_after=exc.retry_in,
                    retryable=True,
                )
                if has_fallback:  # do not wait for the breaker: the fallback can serve now
                    raise _GaveUp(error, True, attempt) from None
            except ProviderError as exc:
                telemetry.record_error(agent_type, exc)
                observe_provider_call(False, exc.status_code)
                if refused_unprocessed(exc):
                    await self._settle(grant, request.model, None)
                error = exc
            else:
                await self._settle(grant, response.model, response.usage)
                observe_provider_call(True, 200)
                headers = getattr(self.provider, "last_rate_limit_headers", None)
                if self.limiter is not None and headers:
                    await self.limiter.update_from_headers(headers)
                return response, attempt, cost, estimated
            decision = self.policy.decide(error, attempt, self.clock(), started)
            if isinstance(decision, GiveUp):
                raise _GaveUp(error, decision.exhausted, attempt)
            metrics.RETRIES.labels(
                metrics.bounded(self.provider.name), metrics.bounded(error.error_type)
            ).inc()
            await self.sleep(decision.delay)

    async def _reserve(self, request: ModelRequest) -> Grant | None:
        """Wait for one request and the call's estimated tokens (see :mod:`.tokens`)."""
        if self.limiter is None:
            return None
        charge = tokens.before_call(request)
        return await self.limiter.reserve({f: charge.family(f) for f in tokens.TOKEN_FAMILIES})

    async def _settle(self, grant: Grant | None, model: str, usage: Usage | None) -> None:
        """Charge or refund the difference between what was reserved and what the call used
        (``usage`` None: nothing, the provider did no work)."""
        if self.limiter is None or grant is None or not grant.held:
            return
        actual = tokens.after_call(model, usage or Usage())
        await self.limiter.adjust(tokens.settlement(grant.held, actual))


def _request_content(span: Span, request: ModelRequest) -> None:
    """The prompt on the span (content recording on): the conventions' JSON, capped."""
    span.set_attribute("gen_ai.input.messages", genai_content.input_messages(request))
    system = genai_content.system_instructions(request)
    if system is not None:
        span.set_attribute("gen_ai.system_instructions", system)


def _breaker_event(name: str, retry_in: float) -> None:
    """A call an open breaker refused: never sent, so no ``chat`` span, only this event."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(
            "circuit_open",
            {"quarterdeck.breaker": name, "quarterdeck.breaker.retry_in_s": retry_in},
        )
