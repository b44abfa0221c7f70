"""How long to wait before trying again (what to do about a failure is ``resolution``'s business)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, of min(cap, base·2^(n-1))."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + rng() * ceiling / 2


@dataclass(frozen=True)
class ExponentialBackoff:
    """``min(cap, base·2^(n-1))`` before retry ``n``; with ``jitter`` the "equal jitter" variant.

    Jitter spreads the retries of many threads sharing one budget (DingTalk's pool); a single
    caller (Kingdee's hook) waits the plain doubling figure.
    """

    base: float
    cap: float
    jitter: bool = True

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        if self.jitter:
            return backoff_delay(attempt, self.base, self.cap, rng)
        return min(self.cap, self.base * (2 ** max(0, attempt - 1)))
