"""The gateway's use-case: one ``POST /v1/messages`` from a client, relayed, metered, recorded.

In order, per call: parse the body once (model, stream, max_tokens), attribute it (tenant from
the key, run from a run token or else a header, Claude Code session and agent from headers),
take the key's tokens-per-minute, reserve the worst case against every budget that applies,
look at the new outgoing content for secrets, then hand the original bytes to the
:class:`~quarterdeck.gateway.relay.Relay`. After the response ended (or the client left) a
:class:`~quarterdeck.gateway.models.GatewayCall` goes to the recorder, which writes it and
settles the hold off the response path.

The collaborators are protocols so the relay can be tested with real parts in any combination:
``BudgetHolds`` (budgets/holds.py), ``GatewayPrices`` (prices.py), ``CallRecorder``
(recorder.py) and ``Inspector`` (inspect.py) satisfy them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
from opentelemetry.trace import Span
from starlette.responses import Response

from quarterdeck.config import Settings
from quarterdeck.gateway import spans
from quarterdeck.gateway.errors import InvalidRequest, classify
from quarterdeck.gateway.key_tokens import KeyTokens, estimate_input_tokens
from quarterdeck.gateway.meter import Metered, ToolUse
from quarterdeck.gateway.models import GatewayCall
from quarterdeck.gateway.prices import server_tool_worst_case
from quarterdeck.gateway.relay import (
    SERVED_MODEL_HEADER,
    DrainSlots,
    Outgoing,
    Relay,
    RelayResponse,
    StreamEnd,
    fallback_chain,
)
from quarterdeck.gateway.upstream import (
    ModelList,
    Upstream,
    VerbatimResponse,
    forwarded_headers,
    relayed_headers,
)
from quarterdeck.kit.ids import new_id
from quarterdeck.resilience.breaker import Breakers
from quarterdeck.resilience.retry import RetryPolicy
from quarterdeck.security.auth.principal import Principal

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who made a call and for what; the inspector and the call record read it."""

    call_id: str
    tenant: str
    key_id: str | None
    run_id: str | None
    session_id: str | None
    agent_id: str | None
    model: str
    stream: bool


class BudgetHolds(Protocol):
    async def reserve(
        self, *, tenant: str, key_id: str | None, run_id: str | None, amount: Decimal
    ) -> str | None: ...


class Prices(Protocol):
    def cost(self, model: str, metered: Metered) -> tuple[Decimal, bool]: ...

    def worst_case(self, model: str, input_tokens: int, max_tokens: int) -> Decimal: ...


class Recorder(Protocol):
    def record(self, call: GatewayCall) -> None: ...


class OutgoingCheck(Protocol):
    @property
    def body(self) -> bytes | None: ...

    @property
    def refused(self) -> str | None: ...


class Inspector(Protocol):
    def outgoing(self, parsed: dict[str, Any], raw: bytes, ctx: CallContext) -> OutgoingCheck: ...

    def observe(
        self, ctx: CallContext, request: dict[str, Any], tool_uses: list[ToolUse]
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The ``gateway_*`` settings the relay reads, resolved once."""

    max_body_bytes: int = 32 * 1024 * 1024
    max_retries: int = 1
    retry_after_cap: float = 10.0
    fallback: bool = False
    """The default for keys without their own ``gateway_fallback`` (see ``fallback_chain``)."""
    tokens_per_minute: float | None = None
    drain_on_disconnect: bool = True
    max_drains: int = 64

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayConfig:
        return cls(
            max_body_bytes=settings.gateway_max_body_bytes,
            max_retries=settings.gateway_max_retries,
            retry_after_cap=settings.gateway_retry_after_cap,
            fallback=settings.gateway_fallback,
            tokens_per_minute=settings.gateway_key_tokens_per_minute,
            drain_on_disconnect=settings.gateway_drain_on_disconnect,
            max_drains=settings.gateway_max_drains,
        )

    def retry_policy(self) -> RetryPolicy:
        """Short waits: the client (Claude Code: up to 10 retries) backs off for longer ones."""
        return RetryPolicy(
            schedule=(0.5, 1.0),
            jitter=0.2,
            max_attempts=self.max_retries + 1,
            max_retry_after=self.retry_after_cap,
            total_budget_s=2 * self.retry_after_cap + 2.0,
        )


@dataclass(frozen=True, slots=True)
class Parsed:
    """What the gateway reads from a Messages request body (parsed once)."""

    body: dict[str, Any]
    model: str
    stream: bool
    max_tokens: int


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One client request as the route read it: its bytes, what they say, whom it is for."""

    raw: bytes
    parsed: Parsed
    headers: Sequence[tuple[str, str]]
    """As received, names lower-case."""
    query: str = ""
    tenant: str | None = None
    """``x-quarterdeck-tenant``: honoured only for a key that acts for every tenant."""
    run_id: str | None = None
    session_id: str | None = None
    agent_id: str | None = None


def attributed_run(principal: Principal, named: str | None) -> str | None:
    """The run a call is for: a run token's run, else what ``x-quarterdeck-run`` names.

    A run token (``principal.run_id``) acts for one run, so its calls are that run's whatever
    the header says: the header may repeat the run (or be absent), but naming another run is
    refused with 400 rather than ignored, since a process that holds one run's token and names
    another is confused or trying to bill someone else, and silently re-attributing its call
    would hide that. For any other caller the header is the client's word, as before (its
    tenant still bounds which run budget it can touch: ``qd_reserve_budget``).
    """
    if principal.run_id is None:
        return named
    if named is not None and named != principal.run_id:
        raise InvalidRequest(
            f"quarterdeck: x-quarterdeck-run names {named}, but this token belongs to run "
            f"{principal.run_id}; a run token calls for its own run only"
        )
    return principal.run_id


class Gateway:
    """The relay service behind ``/v1/messages``, ``count_tokens`` and ``/v1/models``."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        prices: Prices,
        recorder: Recorder,
        holds: BudgetHolds | None = None,
        inspector: Inspector | None = None,
        breakers: Breakers | None = None,
        config: GatewayConfig | None = None,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
        policy: RetryPolicy | None = None,
        known_models: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or GatewayConfig()
        self.upstream = upstream
        self.prices = prices
        self.recorder = recorder
        self.holds = holds
        self.inspector = inspector
        self.relay = Relay(
            upstream,
            policy=policy or self.config.retry_policy(),
            retry_after_cap=self.config.retry_after_cap,
            breakers=breakers,
            clock=clock,
        )
        self.fallbacks = {model: tuple(chain) for model, chain in (fallbacks or {}).items()}
        """``QUARTERDECK_MODEL_FALLBACKS``: whose calls may use it is each key's config."""
        self.drains = DrainSlots(self.config.max_drains)
        tpm = self.config.tokens_per_minute
        self.tokens = KeyTokens(tpm) if tpm else None
        self.model_list = ModelList(upstream, known_models, clock=clock)
        self._clock = clock
        self._server_address = urlsplit(getattr(upstream, "base_url", "") or "").hostname
        """The upstream's host for ``server.address`` on spans (None: in process)."""

    async def aclose(self) -> None:
        await self.upstream.aclose()

    async def models(self) -> Response:
        """``GET /v1/models``: the upstream's list and the price table's, cached."""
        return Response(await self.model_list.body(), media_type="application/json")

    # -- POST /v1/messages ------------------------------------------------------------------
    async def messages(self, request: CallRequest, principal: Principal) -> Response:
        t0 = self._clock()
        parsed, raw = request.parsed, request.raw
        key_id = principal.key_id
        ctx = CallContext(
            new_id("gwc"),
            principal.tenant_for_new(request.tenant),
            key_id,
            attributed_run(principal, request.run_id),
            request.session_id,
            request.agent_id,
            parsed.model,
            parsed.stream,
        )
        estimate = estimate_input_tokens(len(raw))
        taken = 0
        call = GatewayCall(
            id=ctx.call_id,
            created_at=datetime.now(UTC),
            tenant=ctx.tenant,
            key_id=key_id,
            model=parsed.model,
            stream=parsed.stream,
            status=0,
            run_id=ctx.run_id,
            session_id=ctx.session_id,
            agent_id=ctx.agent_id,
        )
        span = spans.open_call(
            call,
            request.headers,
            provider=self.upstream.name,
            server_address=self._server_address,
            max_tokens=parsed.max_tokens,
        )
        try:
            if self.tokens is not None:
                taken = self.tokens.take(key_id, estimate)
            chain = fallback_chain(
                parsed.model,
                principal.gateway_fallback,
                default_on=self.config.fallback,
                chains=self.fallbacks,
            )
            if self.holds is not None:
                # The dearest model that may serve it: a fallback can cost more than the primary.
                worst = max(
                    self.prices.worst_case(m, estimate, parsed.max_tokens)
                    for m in (parsed.model, *chain)
                ) + server_tool_worst_case(parsed.body)
                call.hold_id = await self.holds.reserve(
                    tenant=ctx.tenant, key_id=key_id, run_id=ctx.run_id, amount=worst
                )
            body = raw
            if self.inspector is not None:
                check = self.inspector.outgoing(parsed.body, raw, ctx)
                if check.refused is not None:
                    raise InvalidRequest(check.refused)
                body = check.body if check.body is not None else raw
            path = "/v1/messages" + (f"?{request.query}" if request.query else "")
            headers = forwarded_headers(request.headers)
            out = Outgoing(path, headers, body, parsed.model, ctx.tenant, parsed.body, chain)
            opened = await self.relay.open(out)
        except BaseException as exc:
            self._refused(call, exc, t0, span)
            raise
        call.served_model = opened.served_model
        call.upstream_request_id = opened.request_id
        reply_headers = relayed_headers(opened.headers)
        reply_headers.append((SERVED_MODEL_HEADER, opened.served_model))
        if opened.reply is None:
            call.status = opened.status
            call.error_type = opened.error_type()
            self._finish(call, ctx, parsed, taken, t0, None, span)
            return VerbatimResponse(opened.status, opened.error_body, reply_headers)
        call.status = opened.status

        def finish(end: StreamEnd) -> None:
            call.client_disconnected = end.client_disconnected
            self._finish(call, ctx, parsed, taken, t0, end, span)

        return RelayResponse(
            opened.reply,
            reply_headers,
            started=t0,
            finish=finish,
            drains=self.drains,
            drain_on_disconnect=self.config.drain_on_disconnect,
            clock=self._clock,
        )

    def _refused(self, call: GatewayCall, exc: BaseException, t0: float, span: Span) -> None:
        """Record a call the gateway answered itself (refused, or no upstream answer): its
        refusals show in the reports, and a hold already taken is settled by the recorder."""
        call.status, call.error_type, _, _ = classify(exc)
        call.duration_ms = (self._clock() - t0) * 1000
        self.recorder.record(call)
        spans.refused(span, call)

    def _finish(
        self,
        call: GatewayCall,
        ctx: CallContext,
        parsed: Parsed,
        taken: int,
        t0: float,
        end: StreamEnd | None,
        span: Span,
    ) -> None:
        """Price and record the call; charge the key's real tokens; let the inspector audit;
        end its span."""
        metered = end.metered if end is not None else Metered(finished=True)
        if end is not None:
            call.ttfb_ms = None if end.ttfb_s is None else end.ttfb_s * 1000
            call.duration_ms = (end.ended_at - t0) * 1000
            if end.upstream_failed is not None:
                call.error_type = "upstream_disconnected"
        else:
            call.duration_ms = (self._clock() - t0) * 1000
        if metered.error_type is not None:
            call.error_type = metered.error_type
        call.usage = metered.usage
        call.web_search_requests = metered.web_search_requests
        if end is not None:
            call.cost_usd, call.cost_estimated = self.prices.cost(
                call.served_model or ctx.model, metered
            )
        self.recorder.record(call)
        spans.finished(span, call, metered)
        if self.tokens is not None and call.key_id is not None:
            self.tokens.correct(call.key_id, metered.usage.total_tokens - taken)
        if self.inspector is not None and (metered.tool_uses or _has_tool_results(parsed.body)):
            self.inspector.observe(ctx, parsed.body, metered.tool_uses)

    # -- POST /v1/messages/count_tokens ---------------------------------------------------------
    async def count_tokens(
        self,
        raw: bytes,
        headers: Sequence[tuple[str, str]],
        principal: Principal,
        *,
        query: str = "",
        tenant: str | None = None,
    ) -> Response:
        """Forwarded as is: never billed, never held against a budget, never retried."""
        path = "/v1/messages/count_tokens" + (f"?{query}" if query else "")
        reply = await self.upstream.send(
            "POST", path, forwarded_headers(headers), raw, tenant=principal.tenant_for_new(tenant)
        )
        data = await reply.read()
        return VerbatimResponse(reply.status, data, relayed_headers(reply.headers))


def _has_tool_results(body: Mapping[str, Any]) -> bool:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return False
    content = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )
