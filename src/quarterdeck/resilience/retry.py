"""Whether, and when, to retry a failed dependency call: a pure function of the error and time.

The policy never sleeps and never reads a clock. The caller passes ``now`` and the time the
call ``started`` (its first attempt), and gets back either :class:`RetryAt` (sleep until ``at``)
or :class:`GiveUp` (re-raise). Keeping it pure means every rule below is unit-tested with a
:class:`~quarterdeck.kit.clock.FakeClock` and a seeded ``random.Random``.

Rules, in order:

1. Cancellation (``asyncio.CancelledError``, ``KeyboardInterrupt``...) is never retried.
2. A **spend limit** is never retried, whatever its status. Anthropic reports an exhausted
   credit balance or a workspace spend limit as ``billing_error`` (402) or as a 429/400 whose
   message mentions it; retrying cannot succeed until a human acts, and each retry burns budget
   and wall time. The heuristic: ``error_type`` is ``billing_error``, or the error's text
   contains one of :data:`SPEND_LIMIT_MARKERS` (case-insensitive). It errs towards giving up: a
   plain rate limit whose message happens to mention "billing" ends the call early, which is
   cheaper than a run retrying for two minutes against a hard limit.
3. With an HTTP status: 408, 409, 429 and every 5xx (529 ``overloaded_error`` included) are
   transient; every other status (400, 401, 403, 404, 413, 422...) will fail the same way again.
4. Without a status: ``connection_error`` / ``timeout`` / ``overloaded_error`` ProviderErrors and
   builtin :class:`TimeoutError` / :class:`ConnectionError` are transient; other ProviderErrors
   follow the provider's own ``retryable`` flag; anything else is a bug, not a blip.

Delay: the schedule's delay for this attempt (with +/- ``jitter``), raised to the provider's
``retry_after`` when that is longer. ``retry_after`` is capped at ``max_retry_after`` so a
bogus or hour-long hint cannot park a run, and it never *shortens* the schedule: many clients
retrying on exactly the hinted instant is the thundering herd the schedule exists to avoid.

Budget: at most ``max_attempts`` attempts in all, and no retry that would start more than
``total_budget_s`` after the first attempt began.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from quarterdeck.exceptions import ProviderError
from quarterdeck.kit.backoff import GUIDE_SCHEDULE, scheduled_delay

SPEND_LIMIT_MARKERS: tuple[str, ...] = (
    "spend limit",
    "spending limit",
    "billing",
    "credit balance",
    "insufficient_quota",
    "exceeded your current quota",
)
"""Lower-case substrings that mark a spend/billing limit rather than a rate limit."""

CONTEXT_OVERFLOW_MARKERS: tuple[str, ...] = (
    "prompt is too long",
    "context window",
    "context_length_exceeded",
    "maximum context length",
    "input is too long",
    "too many input tokens",
)
"""Lower-case substrings of the errors Anthropic and OpenAI-compatible servers return when the
conversation does not fit the model's context window."""

RETRYABLE_STATUSES = frozenset({408, 409, 429})
TRANSIENT_ERROR_TYPES = frozenset(
    {"connection_error", "timeout", "timeout_error", "overloaded_error"}
)


def is_context_overflow(error: ProviderError) -> bool:
    """Whether ``error`` says the request does not fit the model's context window.

    Such a call fails the same way on every retry and on any model with the same window, so it
    is never retried; only a larger-context model can serve it.
    """
    if error.status_code not in (None, 400, 413):
        return False
    text = f"{error.error_type} {error.detail}".lower()
    return any(marker in text for marker in CONTEXT_OVERFLOW_MARKERS)


@dataclass(frozen=True)
class Classification:
    """What kind of failure an error is; ``kind`` is a bounded label for metrics and logs."""

    retryable: bool
    kind: str
    reason: str
    trips_breaker: bool
    """True when the failure says the dependency itself is unhealthy (5xx, overload, timeout,
    connection). Caller errors (4xx) and rate limits (429, handled by the rate limiter) do not
    count towards opening a circuit breaker."""


@dataclass(frozen=True)
class RetryAt:
    """Retry at ``at`` (same scale as ``now``), i.e. after sleeping ``delay`` seconds."""

    at: float
    delay: float
    reason: str
    kind: str = "transient"


@dataclass(frozen=True)
class GiveUp:
    """Stop retrying and surface the error.

    ``exhausted`` is True when the error was transient but attempts or budget ran out (a
    fallback model may still help), False when the error is permanent (retrying anywhere won't).
    """

    reason: str
    kind: str = "permanent"
    exhausted: bool = False


Decision = RetryAt | GiveUp


def is_spend_limit(error: BaseException) -> bool:
    """True for an exhausted credit balance / spend limit (see the module docstring)."""
    if isinstance(error, ProviderError):
        if error.error_type == "billing_error" or error.status_code == 402:
            return True
        text = f"{error.error_type} {error.detail}".lower()
    else:
        text = str(error).lower()
    return any(marker in text for marker in SPEND_LIMIT_MARKERS)


def _status_kind(status: int) -> str:
    if status == 429:
        return "rate_limit"
    if status == 529:
        return "overloaded"
    if status >= 500:
        return "server_error"
    if status == 408:
        return "timeout"
    if status == 409:
        return "conflict"
    return f"http_{status}"


def classify(error: BaseException) -> Classification:
    """Sort an error into retryable or not, with a reason; never raises."""
    if isinstance(error, asyncio.CancelledError) or not isinstance(error, Exception):
        return Classification(False, "cancelled", "cancelled", trips_breaker=False)
    if isinstance(error, ProviderError):
        if is_spend_limit(error):
            return Classification(False, "spend_limit", "spend limit reached", False)
        status = error.status_code
        if error.error_type == "overloaded_error" and status is None:
            status = 529
        if status is not None:
            kind = _status_kind(status)
            if status in RETRYABLE_STATUSES or status >= 500:
                trips = status >= 500 or status == 408
                return Classification(True, kind, f"HTTP {status} is transient", trips)
            return Classification(False, kind, f"HTTP {status} will not succeed on retry", False)
        if error.error_type in TRANSIENT_ERROR_TYPES:
            kind = "timeout" if "timeout" in error.error_type else "connection"
            return Classification(True, kind, f"{error.error_type} is transient", True)
        if error.retryable:
            return Classification(True, "provider", "provider marked it retryable", True)
        return Classification(False, "provider", "provider marked it not retryable", False)
    if isinstance(error, TimeoutError):
        return Classification(True, "timeout", "timed out", trips_breaker=True)
    if isinstance(error, ConnectionError):
        return Classification(True, "connection", "connection failed", trips_breaker=True)
    return Classification(False, "error", f"{type(error).__name__} is not transient", False)


@dataclass(frozen=True)
class RetryPolicy:
    """The guide's schedule (1, 5, 15, 30 s) with jitter, a retry-after cap and a total budget.

    ``max_attempts`` counts every attempt, the first included: the default 5 is one call plus
    one retry per schedule entry.
    """

    schedule: tuple[float, ...] = GUIDE_SCHEDULE
    jitter: float = 0.2
    max_attempts: int = 5
    max_retry_after: float = 60.0
    total_budget_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.jitter < 0 or self.max_retry_after < 0 or self.total_budget_s < 0:
            raise ValueError("jitter, max_retry_after and total_budget_s must be >= 0")

    def delay(self, error: BaseException, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        delay = scheduled_delay(attempt, self.schedule, self.jitter, rng)
        hint = getattr(error, "retry_after", None)
        if isinstance(hint, int | float) and hint >= 0:
            delay = max(delay, min(float(hint), self.max_retry_after))
        return delay

    def decide(
        self,
        error: BaseException,
        attempt: int,
        now: float,
        started: float,
        rng: random.Random | None = None,
    ) -> RetryAt | GiveUp:
        """Decide what to do after attempt number ``attempt`` (1-based) failed with ``error``.

        ``now`` and ``started`` are on one clock (monotonic is fine); ``started`` is when the
        first attempt began, so time spent inside slow failing attempts counts against the
        budget too.
        """
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        c = classify(error)
        if not c.retryable:
            return GiveUp(c.reason, kind=c.kind, exhausted=False)
        if attempt >= self.max_attempts:
            return GiveUp(
                f"{c.reason}, but {attempt} attempt(s) made (max {self.max_attempts})",
                kind=c.kind,
                exhausted=True,
            )
        delay = self.delay(error, attempt, rng)
        if now + delay - started > self.total_budget_s:
            return GiveUp(
                f"{c.reason}, but retrying in {delay:.1f}s would exceed the "
                f"{self.total_budget_s:g}s retry budget",
                kind=c.kind,
                exhausted=True,
            )
        return RetryAt(at=now + delay, delay=delay, reason=c.reason, kind=c.kind)
