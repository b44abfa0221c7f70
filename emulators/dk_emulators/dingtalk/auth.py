"""Access tokens (issued per app key, expiring, revocable) and the per-app per-API QPS limit with
its penalty window: what stands between a call and its answer."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass

from dk_emulators.dingtalk.wire import (
    ERR_INVALID_TOKEN,
    ERR_SECRET_OR_TOKEN,
    ERR_TOKEN_EXPIRED,
    ERROR_MESSAGES,
    ApiError,
)


@dataclass
class _Token:
    app_key: str
    expires_at: float  # time.monotonic()
    revoked: bool = False


class TokenIssuer:
    """One current token per app key, reissued only once it expired or was revoked."""

    def __init__(self) -> None:
        self._tokens: dict[str, _Token] = {}
        self._current: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tokens)

    def issue(self, app_key: str, ttl: float) -> tuple[str, int]:
        """(token, seconds it stays valid): the current token, or a new one valid for ``ttl``."""
        now = time.monotonic()
        with self._lock:
            current = self._current.get(app_key)
            entry = self._tokens.get(current) if current else None
            if current is None or entry is None or entry.revoked or now >= entry.expires_at:
                current = uuid.uuid4().hex
                entry = _Token(app_key=app_key, expires_at=now + ttl)
                self._tokens[current] = entry
                self._current[app_key] = current
            # Remaining validity, as whole seconds (at least 1 while valid).
            return current, max(1, int(entry.expires_at - now))

    def app_for(self, token: str | None) -> str:
        """The app key a token was issued to; ApiError 40014 / 40001 / 42001 when it is no good."""
        if not token:
            raise ApiError(ERR_INVALID_TOKEN, ERROR_MESSAGES[ERR_INVALID_TOKEN])
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None:
                raise ApiError(ERR_INVALID_TOKEN, ERROR_MESSAGES[ERR_INVALID_TOKEN])
            if entry.revoked:
                raise ApiError(ERR_SECRET_OR_TOKEN, ERROR_MESSAGES[ERR_SECRET_OR_TOKEN])
            if time.monotonic() >= entry.expires_at:
                raise ApiError(ERR_TOKEN_EXPIRED, ERROR_MESSAGES[ERR_TOKEN_EXPIRED])
            return entry.app_key

    def expire_all(self) -> None:
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = 0.0

    def revoke_all(self) -> None:
        with self._lock:
            for token in self._tokens.values():
                token.revoked = True
            self._current.clear()


class QpsLimiter:
    """A one-second sliding window per (app key, API); going over starts a penalty window."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._penalty_until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        # Calls answered with the QPS error, per API: what a client pacing right never sees.
        self.throttled: Counter[str] = Counter()

    def admit(self, app_key: str, api: str, qps: int | None, penalty_s: float) -> float | None:
        """None when the call may go on; else how many seconds the app stays throttled."""
        if not qps:
            return None
        now = time.monotonic()
        key = (app_key, api)
        with self._lock:
            penalty_until = self._penalty_until.get(key, 0.0)
            if now < penalty_until:
                self.throttled[api] += 1
                return penalty_until - now
            window = self._windows.setdefault(key, deque())
            while window and now - window[0] >= 1.0:
                window.popleft()
            if len(window) >= qps:
                self.throttled[api] += 1
                self._penalty_until[key] = now + penalty_s
                return penalty_s
            window.append(now)
        return None
