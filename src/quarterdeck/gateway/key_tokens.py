"""A key's tokens per minute at the gateway: the input estimate taken before a call, the real
usage charged after it.

Why an estimate from the body's size: the call's tokens are known only once the upstream
answers, but the limit must hold before the call is made; an upper bound taken up front and
corrected afterwards keeps concurrent calls inside the limit.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from quarterdeck.gateway.errors import TokenRateLimited
from quarterdeck.resilience.ratelimit import TokenBucket

__all__ = ["BYTES_PER_TOKEN", "KeyTokens", "estimate_input_tokens"]

BYTES_PER_TOKEN = 1
"""Body bytes per input token for the pre-call estimate. It must be an upper bound, or the
budget reservation could be smaller than the call's cost and concurrent calls could pass the
limit: a token covers at least one byte of what was sent, and the JSON around the text only
adds bytes. (Text averages ~4 bytes a token, so the hold is generous; it is settled to the
metered cost when the call ends.)"""
_MAX_BUCKETS = 10_000


def estimate_input_tokens(body_bytes: int) -> int:
    return body_bytes // BYTES_PER_TOKEN + 1


class KeyTokens:
    """Tokens-per-minute per key: the estimate is taken before a call, corrected after it."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.pop(key, None) or TokenBucket.per_minute(self.per_minute, "tokens")
        self._buckets[key] = bucket  # most recently used last: the LRU end is evicted
        if len(self._buckets) > _MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return bucket

    def take(self, key: str, tokens: int) -> int:
        """Take the input estimate ``tokens`` (at most a full bucket: a larger request waits
        for a full one) and return what was taken; raise TokenRateLimited (429, retry-after)
        when the bucket lacks it. The output is charged by :meth:`correct` once known."""
        bucket = self._bucket(key)
        taken = min(tokens, int(bucket.capacity))
        wait = bucket.take(taken, self._clock())
        if wait > 0:
            raise TokenRateLimited(
                f"quarterdeck: this key's limit of {self.per_minute:g} tokens per minute is "
                f"reached; retry in {math.ceil(wait)} s",
                retry_after_s=wait,
            )
        return taken

    def correct(self, key: str, tokens: int) -> None:
        """Charge ``tokens`` more (or give back, when negative) once the real usage is known;
        the bucket may go below zero, which makes the next calls wait it off."""
        bucket = self._bucket(key)
        bucket.available(self._clock())  # refill up to now first
        bucket.tokens = min(bucket.capacity, bucket.tokens - tokens)
