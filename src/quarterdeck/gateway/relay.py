"""The relay: get one upstream answer worth committing to, then pass its bytes on as they come.

Two phases, with one rule between them: **retries, fallback and the circuit breaker act only
before the first byte reaches the client.** Once a status line is sent, a second attempt would
splice two different answers into one stream (and could run the same tool calls twice), so a
failure after that point goes to the client as the upstream sent it, or as a cut connection.
Buffering the start of a stream to keep a fallback possible is what made LiteLLM's
time-to-first-byte equal to a whole thinking pass (research A3, #39431); we never do it.

:meth:`Relay.open` is the first phase: attempts with the shared retry classification
(``resilience.retry``), ``retry-after`` honoured up to a cap, the shared breakers
(``resilience.breaker``, one per upstream and model) and, when allowed, the configured fallback
models. Upstream error answers come back verbatim (status, body, ``request-id``,
``retry-after``...), because Claude Code's recovery matches their wording.

:class:`RelayResponse` is the second phase, an ASGI response that writes every upstream chunk to
the client the moment it arrives (pings included), tees it into the meter, and on a client
disconnect keeps draining the upstream to its end so the call is billed exactly (bounded by
:class:`DrainSlots`), or stops and leaves the meter's floor estimate to bill.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from quarterdeck.exceptions import ProviderError
from quarterdeck.gateway.errors import UpstreamUnreachable
from quarterdeck.gateway.meter import Metered, StreamMeter, meter_json
from quarterdeck.gateway.upstream import Upstream, UpstreamReply
from quarterdeck.resilience.breaker import Breakers, CircuitOpenError, breaker_name
from quarterdeck.resilience.retry import GiveUp, RetryPolicy, classify

log = structlog.get_logger(__name__)

SERVED_MODEL_HEADER = "x-quarterdeck-served-model"

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One request as it goes upstream: the client's bytes and forwarded headers."""

    path: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    model: str
    tenant: str
    parsed: Mapping[str, Any] | None = None
    """The parsed body, needed only to rewrite ``model`` for a fallback."""
    fallbacks: Sequence[str] = ()
    """The models this call may fail over to, in order (the key's config resolved by
    :func:`fallback_chain`); empty: none."""


@dataclass(slots=True)
class Opened:
    """The outcome of the first phase: a reply to stream, or a final upstream error."""

    status: int
    served_model: str
    reply: UpstreamReply | None = None
    """Set for a 2xx: its body is not read yet."""
    error_body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    attempts: int = 0
    retried_after: list[float] = field(default_factory=list)

    @property
    def request_id(self) -> str | None:
        for key, value in self.headers:
            if key == "request-id":
                return value
        return None

    def error_type(self) -> str | None:
        """``error.type`` of an upstream error body, if it has one."""
        if self.reply is not None:
            return None
        return meter_json(self.error_body).error_type or f"http_{self.status}"


def _error_of(status: int, headers: Sequence[tuple[str, str]], body: bytes) -> ProviderError:
    """An upstream error answer as the retry policy and breakers understand it."""
    retry_after: float | None = None
    should_retry: str | None = None
    for key, value in headers:
        if key == "retry-after":
            try:
                retry_after = max(0.0, float(value))
            except ValueError:
                retry_after = None
        elif key == "x-should-retry":
            should_retry = value.strip().lower()
    error_type = meter_json(body).error_type or "api_error"
    return ProviderError(
        f"upstream answered {status}",
        status_code=status,
        error_type=error_type,
        retry_after=retry_after,
        retryable=should_retry != "false",
    )


def should_retry(
    error: ProviderError,
    attempt: int,
    policy: RetryPolicy,
    now: float,
    started: float,
    retry_after_cap: float,
) -> float | None:
    """Seconds to wait before the next attempt, or None to stop. Pure.

    On top of the shared policy: ``x-should-retry: false`` is obeyed, and a ``retry-after``
    longer than the cap is not waited out here but handed to the client, whose own backoff
    (Claude Code retries up to 10 times) is the right place for a long wait.
    """
    if error.status_code is not None and not error.retryable:
        return None
    if error.retry_after is not None and error.retry_after > retry_after_cap:
        return None
    decision = policy.decide(error, attempt, now, started)
    if isinstance(decision, GiveUp):
        return None
    return decision.delay


class Relay:
    """The first phase (see the module docstring); one per process, shared by every call."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        policy: RetryPolicy,
        retry_after_cap: float,
        breakers: Breakers | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.upstream = upstream
        self.policy = policy
        self.retry_after_cap = retry_after_cap
        self.breakers = breakers
        self._clock = clock
        self._sleep = sleep

    @staticmethod
    def candidates(out: Outgoing) -> list[str]:
        """The model asked for, then the fallbacks this call may use."""
        return [out.model, *(m for m in dict.fromkeys(out.fallbacks) if m != out.model)]

    async def open(self, out: Outgoing) -> Opened:
        """Attempts until an answer is worth relaying. Raises CircuitOpenError (every candidate's
        breaker is open) or UpstreamUnreachable (no HTTP answer at all)."""
        last: Opened | None = None
        failure: BaseException | None = None
        attempts = 0
        for model in self.candidates(out):
            body = out.body if model == out.model else _with_model(out, model)
            opened, failure, attempts = await self._attempts(out, model, body, attempts)
            if opened is not None and (opened.reply is not None or not _exhausted(opened)):
                return opened
            last = opened or last
        if last is not None:
            return last
        if isinstance(failure, CircuitOpenError):
            raise failure
        raise UpstreamUnreachable(
            f"quarterdeck: upstream unreachable after {attempts} attempt(s): {failure}"
        ) from failure

    async def _attempts(
        self, out: Outgoing, model: str, body: bytes, attempts: int
    ) -> tuple[Opened | None, BaseException | None, int]:
        """Attempts on one model; the Opened is None when no HTTP answer came back."""
        name = breaker_name(self.upstream.name, model)
        started = self._clock()
        waits: list[float] = []
        attempt = 0
        while True:
            attempt += 1
            if self.breakers is not None and not await self.breakers.allow(name):
                retry_in = self.breakers.get(name).retry_in(time.time())
                return None, CircuitOpenError(name, retry_in), attempts
            attempts += 1
            try:
                reply = await self.upstream.send(
                    "POST", out.path, out.headers, body, tenant=out.tenant
                )
            except ProviderError as exc:
                await self._report(name, exc)
                delay = should_retry(
                    exc, attempt, self.policy, self._clock(), started, self.retry_after_cap
                )
                if delay is None:
                    return None, exc, attempts
                waits.append(delay)
                await self._sleep(delay)
                continue
            if reply.status < 400:
                await self._report(name, None)
                return (
                    Opened(reply.status, model, reply, b"", reply.headers, attempts, waits),
                    None,
                    attempts,
                )
            data = await reply.read()
            error = _error_of(reply.status, reply.headers, data)
            await self._report(name, error)
            opened = Opened(reply.status, model, None, data, reply.headers, attempts, waits)
            delay = should_retry(
                error, attempt, self.policy, self._clock(), started, self.retry_after_cap
            )
            if delay is None:
                return opened, error, attempts
            log.info(
                "gateway.retry", model=model, status=reply.status, attempt=attempt, delay=delay
            )
            waits.append(delay)
            await self._sleep(delay)

    async def _report(self, name: str, error: ProviderError | None) -> None:
        if self.breakers is None:
            return
        if error is None:
            await self.breakers.record_success(name)
        elif classify(error).trips_breaker:
            await self.breakers.record_failure(name)
        else:
            await self.breakers.release(name)


def fallback_chain(
    model: str,
    key_config: Sequence[str] | None,
    *,
    default_on: bool,
    chains: Mapping[str, Sequence[str]],
) -> tuple[str, ...]:
    """The models a call for ``model`` may fail over to, in order. Pure.

    ``key_config`` is the calling key's ``gateway_fallback``: None follows the deployment
    default (``chains``, i.e. ``QUARTERDECK_MODEL_FALLBACKS``, when ``default_on``, else
    nothing); ``()`` is never; ``("*",)`` is ``chains`` regardless of the default; anything else
    is the key's own list, in its order. The model asked for is never its own fallback.
    """
    if key_config is None:
        allowed: Sequence[str] = chains.get(model, ()) if default_on else ()
    elif tuple(key_config) == ("*",):
        allowed = chains.get(model, ())
    else:
        allowed = key_config
    return tuple(m for m in dict.fromkeys(allowed) if m != model)


def _exhausted(opened: Opened) -> bool:
    """A transient upstream error (a fallback model may do better), not the request's fault."""
    error = _error_of(opened.status, opened.headers, opened.error_body)
    return classify(error).retryable


def _with_model(out: Outgoing, model: str) -> bytes:
    """The body with another ``model``: the one place the relay re-serialises (a fallback).
    Parsed again from ``body``, not taken from ``parsed``: the body may have been rewritten
    (secrets redacted) and the fallback must carry what the first attempt carried."""
    return orjson.dumps({**orjson.loads(out.body), "model": model})


class DrainSlots:
    """How many abandoned streams may be drained at once (``gateway_max_drains``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def try_acquire(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active = max(0, self.active - 1)


@dataclass(slots=True)
class StreamEnd:
    """How the second phase ended, for the call record."""

    metered: Metered
    ttfb_s: float | None
    ended_at: float
    client_disconnected: bool = False
    drained: bool = False
    upstream_failed: str | None = None


class RelayResponse(Response):
    """Streams an upstream 2xx to the client chunk by chunk and reports how it ended.

    ``finish`` is called exactly once, in every outcome (finished, upstream broke, client left,
    task cancelled); it must not raise or block. Disconnects are watched only for SSE: a JSON
    answer is read to its end anyway, so its meter is exact either way.
    """

    def __init__(
        self,
        reply: UpstreamReply,
        headers: list[tuple[str, str]],
        *,
        started: float,
        finish: Callable[[StreamEnd], None],
        drains: DrainSlots,
        drain_on_disconnect: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.status_code = reply.status
        self.background = None
        self.body = b""
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        content_type = reply.header("content-type") or ""
        self.sse = content_type.startswith("text/event-stream")
        self._reply = reply
        self._started = started
        self._finish = finish
        self._drains = drains
        self._drain = drain_on_disconnect
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch(receive, gone)) if self.sse else None
        meter = StreamMeter() if self.sse else None
        pieces: list[bytes] = []
        end = StreamEnd(Metered(), None, 0.0)
        drained = complete = False
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async for chunk in self._reply.body:
                if meter is not None:
                    meter.feed(chunk)
                else:
                    pieces.append(chunk)
                if not end.client_disconnected and not complete:
                    # The chunk that ends the stream (message_stop, whole) also ends the
                    # response: one write fewer per call than an empty last body message.
                    complete = meter is not None and meter.result().finished
                    try:
                        await send(
                            {"type": "http.response.body", "body": chunk, "more_body": not complete}
                        )
                    except OSError:  # how an ASGI 2.4 server reports a client that left
                        gone.set()
                    if end.ttfb_s is None:
                        end.ttfb_s = self._clock() - self._started
                    if gone.is_set():
                        end.client_disconnected = True
                        drained = end.drained = self._drain and self._drains.try_acquire()
                if end.client_disconnected and not drained:
                    break  # not draining: the meter's floor estimate bills what was relayed
            else:
                if not end.client_disconnected and not complete:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        except ProviderError as exc:
            # The upstream broke after the status line went out: nothing to retry; the client
            # sees the connection close (we return without finishing the response).
            end.upstream_failed = exc.detail
            log.warning("gateway.upstream_broke_mid_stream", error=exc.detail)
        finally:
            if watcher is not None:
                watcher.cancel()
            if drained:
                self._drains.release()
            end.ended_at = self._clock()
            end.metered = meter.result() if meter is not None else meter_json(b"".join(pieces))
            await self._reply.close()
            try:
                self._finish(end)
            except Exception:  # the call's record must never break the response path
                log.exception("gateway.finish_failed")


async def _watch(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client disconnects (the request body was already read)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
