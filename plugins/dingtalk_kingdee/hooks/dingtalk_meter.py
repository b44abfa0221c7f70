"""Counts every DingTalk HTTP call a hook makes, per API: the calls DingTalk meters against the
organisation's monthly quota (reference "Metered calls"), retries and token fetches included."""

from __future__ import annotations

import threading
from collections import Counter

# gettoken is not metered (UNVERIFIED; the reference names list / detail / comment / contacts calls).
UNMETERED_APIS = frozenset({"gettoken"})


class CallMeter:
    """A thread-safe count of calls per API (the pool's threads share one hook)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, api: str) -> None:
        with self._lock:
            self._counts[api] += 1

    def snapshot(self) -> dict[str, int]:
        """Calls per API so far."""
        with self._lock:
            return dict(self._counts)

    def metered(self) -> int:
        """Calls so far that count against the monthly quota."""
        with self._lock:
            return sum(n for api, n in self._counts.items() if api not in UNMETERED_APIS)
