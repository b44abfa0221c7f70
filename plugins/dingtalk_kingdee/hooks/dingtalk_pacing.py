"""Process-wide shared state of the DingTalk hook: rate limiters per app and API, tokens per app.

DingTalk's budget is per app per API (standard edition: 20 calls/s), and a token serves every
caller of the app: both must be shared by every hook instance and thread of the process. With a
Redis URL (setting ``DK_RATE_LIMIT_REDIS_URL`` or the connection's ``rate_limit_redis_url``) the
limiter is shared by every process too (``dingtalk_pacing_redis``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dingtalk_kingdee.hooks.dingtalk_pacing_redis import Pacer, RedisRateLimiter, connect, key_prefix

log = logging.getLogger(__name__)

# Pace a little under the budget: arrivals jitter on the wire, and one 90018 costs a whole
# penalty window (~1 s = a full second of budget), far more than the headroom.
PACING_HEADROOM = 0.95
# Across processes (and hosts) a slot is taken further from the request it paces (Redis round trip,
# processes competing for the CPU), so the arrivals jitter more: keep more headroom.
SHARED_PACING_HEADROOM = 0.9


def default_workers(qps: float) -> int:
    """Enough calls in flight to reach the budget at up to ~600 ms latency, within sane bounds."""
    return max(4, min(32, math.ceil(qps * 0.6)))


class RateLimiter:
    """Paces calls to at most ``rate`` per second, shared by every thread that holds it.

    Each caller reserves the next free slot (slots are ``1/rate`` apart) and sleeps until it;
    ``penalize`` blocks everybody for a while after the service said "too many".
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = float("-inf")
        self._blocked_until = float("-inf")

    @property
    def rate(self) -> float:
        return 1.0 / self._interval

    def set_rate(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        with self._lock:
            self._interval = 1.0 / rate

    def reserve(self) -> float:
        """Take the next slot; return how long the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot, self._blocked_until)
            self._next_slot = slot + self._interval
            return slot - now

    def penalize(self, seconds: float) -> None:
        """Nobody sends for ``seconds`` from now (throttled or banned)."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def acquire(self) -> None:
        while True:
            delay = self.reserve()
            if delay > 0:
                self._sleep(delay)
            with self._lock:
                # A penalty imposed while we slept voids the slot: queue again behind it.
                if self._clock() >= self._blocked_until:
                    return


_limiters: dict[tuple[str, str, str, str], Pacer] = {}
_limiters_lock = threading.Lock()


def _new_limiter(base_url: str, app_key: str, api: str, rate: float, redis_url: str) -> Pacer:
    local = RateLimiter(rate)
    if not redis_url:
        return local
    try:
        client = connect(redis_url)
    except ImportError:
        log.warning("DingTalk rate limiter: a Redis URL is set but the redis package is not installed; "
                    "pacing within this process only")
        return local
    return RedisRateLimiter(client, key_prefix(base_url, app_key, api), rate, fallback=local)


def shared_limiter(base_url: str, app_key: str, api: str, qps: float, redis_url: str = "") -> Pacer:
    """The one limiter of this app on this API (the budget is per app per API): in this process, or,
    with ``redis_url``, in every process pacing through that Redis (in-process when it fails)."""
    key = (base_url, app_key, api, redis_url)
    rate = qps * (SHARED_PACING_HEADROOM if redis_url else PACING_HEADROOM)
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = _new_limiter(base_url, app_key, api, rate, redis_url)
    if abs(limiter.rate - rate) > 1e-9:
        limiter.set_rate(rate)
    return limiter


def token_refresh_after(expires_in: float) -> float:
    """Seconds after fetching when a token is treated as stale: shortly before it really expires."""
    return max(0.0, expires_in - min(300.0, expires_in * 0.1))


@dataclass
class _CachedToken:
    value: str
    stale_at: float  # time.monotonic()


class TokenCache:
    """Access tokens per (base URL, app key), shared across hook instances in the process.

    One lock per app: concurrent callers wait for the one fetch in progress instead of all
    calling gettoken (which is rate limited itself).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[tuple[str, str], _CachedToken] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock_for(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, key: tuple[str, str], fetch: Callable[[], tuple[str, float]]) -> str:
        cached = self._tokens.get(key)
        if cached is not None and self._clock() < cached.stale_at:
            return cached.value
        with self._lock_for(key):
            cached = self._tokens.get(key)
            if cached is not None and self._clock() < cached.stale_at:
                return cached.value
            value, expires_in = fetch()
            self._tokens[key] = _CachedToken(value, self._clock() + token_refresh_after(expires_in))
            return value

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()

    def invalidate(self, key: tuple[str, str], value: str) -> None:
        """Drop ``value`` unless another caller already replaced it with a fresh token."""
        with self._lock_for(key):
            cached = self._tokens.get(key)
            if cached is not None and cached.value == value:
                del self._tokens[key]


# The tokens of every app this process talks to.
shared_tokens = TokenCache()


def reset_shared_state() -> None:
    """Forget every cached token and rate limiter of this process (after rotating an app secret,
    or between tests whose services reuse a port)."""
    shared_tokens.clear()
    with _limiters_lock:
        _limiters.clear()
