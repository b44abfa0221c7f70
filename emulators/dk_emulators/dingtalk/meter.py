"""The emulator's clock and its monthly metered-call quota.

``SimulatedClock``: real time by default; a test or benchmark may pin it to a moment and move it
(``/_emulator/clock``), so a month of hourly runs passes in minutes. ``MonthlyQuota``: the
organisation's monthly allowance of metered calls (reference "Metered calls"): counted per calendar
month of the emulator's clock in China time, so it resets on the 1st; past it every metered call
answers errcode 90020 until the month turns. ``gettoken`` is not metered (UNVERIFIED: the reference
names the approval list / detail / comment calls and the contacts calls as metered).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from dk_emulators.dingtalk.wire import API_GETTOKEN, CHINA_TZ, ERR_MONTHLY_QUOTA, ApiError

UNMETERED_APIS = frozenset({API_GETTOKEN})


class SimulatedClock:
    """Real time (of ``source``) until ``set`` pins it; then it moves only by ``set`` / ``advance``."""

    def __init__(self, source: Callable[[], datetime] | None = None) -> None:
        self._source = source or (lambda: datetime.now(UTC))
        self._pinned: datetime | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._pinned if self._pinned is not None else self._source()

    @property
    def simulated(self) -> bool:
        return self._pinned is not None

    def set(self, moment: datetime) -> datetime:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"clock time {moment.isoformat()} is naive: give an offset")
        with self._lock:
            self._pinned = moment
        return moment

    def advance(self, seconds: float) -> datetime:
        with self._lock:
            self._pinned = (self._pinned if self._pinned is not None else self._source()) + timedelta(seconds=seconds)
            return self._pinned

    def release(self) -> None:
        """Back to real time."""
        with self._lock:
            self._pinned = None


def month_of(moment: datetime) -> str:
    """The calendar month (``YYYY-MM``) a moment falls in, in China time (DingTalk's month)."""
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m")


class MonthlyQuota:
    """Metered calls per month and per API; ``limit`` None = no quota (the default)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._used: dict[str, Counter[str]] = {}
        self._refused: Counter[str] = Counter()
        self._lock = threading.Lock()

    def admit(self, api: str, moment: datetime) -> None:
        """Count one call of ``api`` at ``moment``; raise the 90020 answer when the month's quota is spent."""
        if api in UNMETERED_APIS:
            return
        month = month_of(moment)
        with self._lock:
            used = self._used.setdefault(month, Counter())
            total = sum(used.values())
            if self.limit is not None and total >= self.limit:
                self._refused[month] += 1
                raise ApiError(ERR_MONTHLY_QUOTA,
                               f"您的企业本月api调用量已超过限制,调用量:{total + self._refused[month]}次,"
                               f"额度:{self.limit}次,请登录开发者后台-资源管理-查看用量明细")
            used[api] += 1

    def usage(self, moment: datetime) -> dict:
        """The month of ``moment``: quota, calls used (total and per API), calls refused; and every month seen."""
        month = month_of(moment)
        with self._lock:
            used = self._used.get(month, Counter())
            return {
                "month": month, "quota": self.limit, "used": sum(used.values()), "by_api": dict(used),
                "refused": self._refused[month],
                "months": {m: {"used": sum(c.values()), "by_api": dict(c), "refused": self._refused[m]}
                           for m, c in sorted(self._used.items())},
            }

    def reset(self) -> None:
        with self._lock:
            self._used.clear()
            self._refused.clear()
