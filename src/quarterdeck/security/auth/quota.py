"""Request quotas as token buckets, and the ``RateLimit-*`` header values they imply. Pure.

A limit of L requests per minute is a bucket of capacity L refilled at L/60 per second: a
client may burst up to L requests, then sustains L per minute. Each request takes one token
from every bucket that applies (its key's and its tenant's), or from none when any is empty,
so a refused request costs nothing.

Headers follow the IETF ``RateLimit`` fields draft (draft-ietf-httpapi-ratelimit-headers):

- ``RateLimit-Limit``: the bucket's capacity (requests per minute);
- ``RateLimit-Remaining``: whole tokens left after this request;
- ``RateLimit-Reset``: seconds until the bucket is full again.

With two buckets the headers describe the one closest to running out (fewest remaining; on a
tie the one that takes longer to refill), as the draft recommends. A refused request also gets
``Retry-After``: the seconds until every empty bucket has a token again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PERIOD_S = 60.0
_EPS = 1e-9


@dataclass(frozen=True)
class Quota:
    """One bucket as a request left it."""

    scope: str
    """``key`` or ``tenant``."""
    limit: float
    """Requests per minute, which is also the burst size."""
    tokens: float
    """Tokens left: after the request if it was granted, before it if it was refused."""

    @property
    def refill_per_s(self) -> float:
        return self.limit / PERIOD_S

    @property
    def exhausted(self) -> bool:
        return self.tokens + _EPS < 1.0

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.tokens + _EPS))

    @property
    def reset_s(self) -> int:
        missing = max(0.0, self.limit - self.tokens)
        return max(0, math.ceil(missing / self.refill_per_s - _EPS))

    @property
    def wait_s(self) -> float:
        """Seconds until one whole token is back (0 when there is one now)."""
        return max(0.0, 1.0 - self.tokens) / self.refill_per_s


@dataclass(frozen=True)
class Decision:
    allowed: bool
    quotas: tuple[Quota, ...]

    @property
    def binding(self) -> Quota:
        """The quota the headers describe: closest to running out."""
        return min(self.quotas, key=lambda q: (q.remaining, -q.reset_s))

    @property
    def limited_by(self) -> list[str]:
        return [q.scope for q in self.quotas if q.exhausted]

    @property
    def retry_after_s(self) -> int:
        """Whole seconds (at least 1) until a retry can succeed; 0 when allowed."""
        if self.allowed:
            return 0
        wait = max(q.wait_s for q in self.quotas if q.exhausted)
        return max(1, math.ceil(wait - _EPS))

    def headers(self) -> dict[str, str]:
        q = self.binding
        return {
            "RateLimit-Limit": str(math.floor(q.limit + _EPS)),
            "RateLimit-Remaining": str(q.remaining),
            "RateLimit-Reset": str(q.reset_s),
        }


def decide(quotas: list[Quota]) -> tuple[bool, list[float]]:
    """Given each bucket's tokens *before* a request, whether to grant it and the tokens
    after (the all-or-nothing rule the Redis script implements too)."""
    allowed = all(not q.exhausted for q in quotas)
    after = [max(0.0, q.tokens - 1.0) if allowed else q.tokens for q in quotas]
    return allowed, after
