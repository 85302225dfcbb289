"""Latency profiles for the simulated provider: ``0``, ``2s``, or ``lognormal:MEDIAN:SIGMA``."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from quarterdeck.kit.durations import parse_duration


@dataclass(frozen=True)
class LatencyProfile:
    kind: str  # "fixed" or "lognormal"
    median: float
    sigma: float = 0.0

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed" or self.median == 0:
            return self.median
        return rng.lognormvariate(math.log(self.median), self.sigma)

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.median}s"
        return f"lognormal:{self.median}s:{self.sigma}"


def parse_latency(text: str | float) -> LatencyProfile:
    if isinstance(text, int | float):
        return LatencyProfile("fixed", parse_duration(text))
    text = text.strip()
    if text.startswith("lognormal:"):
        parts = text.split(":")
        if len(parts) != 3:
            raise ValueError("lognormal profile is lognormal:MEDIAN:SIGMA, e.g. lognormal:1.5s:0.6")
        median = parse_duration(parts[1])
        try:
            sigma = float(parts[2])
        except ValueError:
            raise ValueError(f"sigma {parts[2]!r} is not a number") from None
        if sigma < 0:
            raise ValueError("sigma must not be negative")
        return LatencyProfile("lognormal", median, sigma)
    return LatencyProfile("fixed", parse_duration(text))
