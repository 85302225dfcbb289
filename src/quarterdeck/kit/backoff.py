"""Retry schedules as pure functions of the attempt number and a random source."""

from __future__ import annotations

import random
from collections.abc import Sequence

GUIDE_SCHEDULE: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0)
"""The guide's retry intervals for the Anthropic API, in seconds."""


def scheduled_delay(
    attempt: int,
    schedule: Sequence[float] = GUIDE_SCHEDULE,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number ``attempt`` (1-based), with +/- ``jitter`` proportional noise.

    Past the end of the schedule the last interval repeats; jitter spreads retries from many
    runs so they do not arrive at the provider in lockstep.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if not schedule:
        return 0.0
    base = schedule[min(attempt, len(schedule)) - 1]
    if jitter <= 0:
        return base
    r = (rng or random).uniform(-jitter, jitter)
    return max(0.0, base * (1.0 + r))
