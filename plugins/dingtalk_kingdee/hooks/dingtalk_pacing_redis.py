"""The DingTalk rate limiter shared through Redis by every process (workers, tasks) of one app.

DingTalk's 20 calls/s is per app and per API, whichever process makes the call: with several Celery
workers (or a backfill next to the hourly run) each process pacing itself alone would together go
over it. This limiter keeps the slot schedule of ``RateLimiter`` (slots ``1/rate`` apart, a penalty
blocks everybody) in two Redis keys per app and API, moved by one Lua script at a time (atomic), on
Redis's clock (so hosts' clocks need not agree).

Redis failing must never fail a sync: the limiter then paces with its in-process fallback, warns
once, and tries Redis again after ``RETRY_REDIS_AFTER`` seconds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

RETRY_REDIS_AFTER = 30.0
# The keys outlive any slot or penalty by far; they only need to go away once an app is idle.
KEY_TTL_MS = 3_600_000
# Short timeouts: a Redis that does not answer must cost a call a moment, not a read timeout.
SOCKET_TIMEOUT = 1.0

# KEYS[1] next free slot, KEYS[2] blocked until (seconds, Redis clock); ARGV[1] interval.
# Returns how long the caller waits for its slot, as a string (Lua numbers would be truncated).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'),
                      tonumber(redis.call('GET', KEYS[2]) or '0'))
redis.call('SET', KEYS[1], string.format('%.6f', slot + tonumber(ARGV[1])), 'PX', ARGV[2])
return string.format('%.6f', slot - now)
"""
# KEYS[1] blocked until; ARGV[1] seconds of penalty (0 = only read). Returns the seconds still blocked.
_BLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local blocked = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now + tonumber(ARGV[1]))
if tonumber(ARGV[1]) > 0 then
  redis.call('SET', KEYS[1], string.format('%.6f', blocked), 'PX', ARGV[2])
end
return string.format('%.6f', math.max(0, blocked - now))
"""


class Pacer(Protocol):
    """What the hook needs of a rate limiter (``dingtalk_pacing.RateLimiter`` or this one)."""

    @property
    def rate(self) -> float: ...

    def set_rate(self, rate: float) -> None: ...

    def acquire(self) -> None: ...

    def penalize(self, seconds: float) -> None: ...


def key_prefix(base_url: str, app_key: str, api: str) -> str:
    """The Redis key prefix of one app on one API (hashed: an app key is not for Redis to show)."""
    digest = hashlib.sha256(f"{base_url}|{app_key}|{api}".encode()).hexdigest()[:24]
    return f"dk:dingtalk:pace:{digest}"


def connect(url: str) -> Any:
    """A Redis client for ``url`` (``redis://host:port/db``); raises ImportError without ``redis``."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)


class RedisRateLimiter:
    """Paces one app's calls on one API to ``rate`` per second across every process using ``client``."""

    def __init__(self, client: Any, prefix: str, rate: float, fallback: Pacer,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        fallback.set_rate(rate)  # checks the rate; both pace alike
        self._client = client
        self._slot_key = f"{prefix}:slot"
        self._blocked_key = f"{prefix}:blocked"
        self._fallback = fallback
        self._sleep = sleep
        self._lock = threading.Lock()
        self._redis_down_until = float("-inf")
        self._reserve = client.register_script(_RESERVE)
        self._block = client.register_script(_BLOCK)

    @property
    def rate(self) -> float:
        return self._fallback.rate

    def set_rate(self, rate: float) -> None:
        self._fallback.set_rate(rate)

    def _redis(self, script: Any, keys: list[str], args: list[Any]) -> float | None:
        """Run ``script``; None when Redis is not usable now (the caller paces in-process)."""
        if time.monotonic() < self._redis_down_until:
            return None
        try:
            return float(script(keys=keys, args=args))
        except Exception as exc:  # any Redis failure (connection, timeout, script): pace locally
            with self._lock:
                first = self._redis_down_until == float("-inf") or time.monotonic() >= self._redis_down_until
                self._redis_down_until = time.monotonic() + RETRY_REDIS_AFTER
            if first:
                log.warning("DingTalk rate limiter: Redis unavailable (%s: %s); pacing within this process "
                            "only for %.0f s, the app's budget is no longer shared with other workers",
                            type(exc).__name__, exc, RETRY_REDIS_AFTER)
            return None

    def acquire(self) -> None:
        while True:
            delay = self._redis(self._reserve, [self._slot_key, self._blocked_key],
                                [1.0 / self._fallback.rate, KEY_TTL_MS])
            if delay is None:
                self._fallback.acquire()
                return
            if delay > 0:
                self._sleep(delay)
            # A penalty imposed while we slept voids the slot: queue again behind it.
            blocked = self._redis(self._block, [self._blocked_key], [0, KEY_TTL_MS])
            if not blocked:
                return

    def penalize(self, seconds: float) -> None:
        """Nobody on this app and API, in any process, sends for ``seconds`` from now."""
        self._fallback.penalize(seconds)
        self._redis(self._block, [self._blocked_key], [seconds, KEY_TTL_MS])
