"""DingTalk approval (OA 审批) API client: access token, instance ids, instance detail, comments.

Speaks the "old" oapi style (``https://oapi.dingtalk.com``, ``?access_token=`` in the query string,
always HTTP 200 with an ``errcode`` in the body). See docs/hook-dingtalk.md for the behaviour in
front of every kind of failure the real service is known to produce.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from airflow.providers.http.hooks.http import HttpHook
from urllib3.exceptions import NewConnectionError

from dingtalk_kingdee.errors import DingTalkError, DingTalkUnavailable

DEFAULT_BASE_URL = "https://oapi.dingtalk.com"
DEFAULT_QPS = 20.0

# listids limits (reference: "List instance ids")
LIST_PAGE_SIZE = 20
LIST_MAX_SPAN_MS = 120 * 24 * 3600 * 1000
LIST_MAX_AGE = timedelta(days=365)
LIST_END_LAG = timedelta(minutes=1)
LIST_ID_CAP = 10_000

# errcodes (plain, or as the string sub_code of a wrapping errcode 88)
WRAPPER_ERRCODE = 88
TOKEN_INVALID_CODES = frozenset({40001, 40014, 42001, 33001})
THROTTLE_CODES = frozenset({90018, 90002})
BUSY_CODE = -1

API_GETTOKEN = "gettoken"
API_LISTIDS = "processinstance/listids"
API_GET = "processinstance/get"
API_COMMENT = "process/instance/comment/add"
_PATHS = {
    API_GETTOKEN: "/gettoken",
    API_LISTIDS: "/topapi/processinstance/listids",
    API_GET: "/topapi/processinstance/get",
    API_COMMENT: "/topapi/process/instance/comment/add",
}

# Pace a little under the budget: arrivals jitter on the wire, and one 90018 costs a whole
# penalty window (~1 s = a full second of budget), far more than the headroom.
PACING_HEADROOM = 0.95
PROGRESS_EVERY = 200

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Secrets: the token travels in the query string, so every URL is a secret carrier.
# --------------------------------------------------------------------------------------------

_QUERY_SECRET_RE = re.compile(r"(?i)(access_token|appsecret)=[^&\s'\"]+")
_known_secrets: set[str] = set()
_known_secrets_lock = threading.Lock()


def redact(text: str) -> str:
    """``text`` with every token/secret query parameter and every known secret value masked."""
    text = _QUERY_SECRET_RE.sub(r"\1=***", text)
    with _known_secrets_lock:
        secrets = sorted(_known_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _register_secret(value: str) -> None:
    """Mask ``value`` in our own messages and in Airflow's task logs (secrets masker)."""
    if not value:
        return
    with _known_secrets_lock:
        _known_secrets.add(value)
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    except Exception:  # masking must never break a call; our own redaction still applies
        logging.getLogger(__name__).debug("secrets masker unavailable", exc_info=False)


class _QueryStringRedactor(logging.Filter):
    """urllib3 logs every request line (with ``?access_token=``) at DEBUG: mask it there."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


_url_log_filter = _QueryStringRedactor()
for _logger_name in ("urllib3.connectionpool", "requests"):
    _logger = logging.getLogger(_logger_name)
    if not any(isinstance(f, _QueryStringRedactor) for f in _logger.filters):
        _logger.addFilter(_url_log_filter)


# --------------------------------------------------------------------------------------------
# Pure pieces: answer classification, backoff, window slicing
# --------------------------------------------------------------------------------------------


class Verdict(enum.Enum):
    OK = "ok"
    TOKEN_INVALID = "token_invalid"  # drop the token, fetch a new one, retry once
    THROTTLED = "throttled"  # 90018 / 90002 / HTTP 429: wait out the penalty window
    BANNED = "banned"  # per-IP ban page or {"status":1111,"wait":5}: wait, then retry
    BUSY = "busy"  # -1 系统繁忙: retry at most 3 times
    TRANSIENT = "transient"  # 5xx, malformed answer, network failure: backoff and retry
    PERMANENT = "permanent"  # anything else, including 90020 (monthly quota)


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    body: dict | None = None
    errcode: int | None = None
    sub_code: str | None = None
    errmsg: str = ""
    wait: float | None = None  # server-suggested wait in seconds (ban JSON)
    # False when the request surely never reached the service (connect failure, throttle
    # refusal): only then may a non-idempotent call be sent again.
    maybe_processed: bool = True


def effective_errcode(errcode: int, sub_code: str | None) -> int | None:
    """The code that says what happened: ``sub_code`` when wrapped under 88 (None if not numeric)."""
    if errcode == WRAPPER_ERRCODE and sub_code is not None:
        try:
            return int(str(sub_code).strip())
        except ValueError:
            return None
    return errcode


def classify_answer(status_code: int, content: bytes) -> Answer:
    """Decide what an HTTP answer from DingTalk means, never trusting status or body alone."""
    if status_code >= 500:
        return Answer(Verdict.TRANSIENT, errmsg=f"HTTP {status_code}")
    text = content.decode("utf-8", errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        snippet = text.strip()[:80]
        if snippet.startswith("<"):
            # The per-IP ban comes back as an HTML page instead of JSON.
            return Answer(Verdict.BANNED, errmsg=f"HTTP {status_code} HTML page instead of JSON",
                          maybe_processed=False)
        if status_code == 429:
            return Answer(Verdict.THROTTLED, errmsg="HTTP 429", maybe_processed=False)
        if 400 <= status_code < 500:
            return Answer(Verdict.PERMANENT, errcode=status_code,
                          errmsg=f"HTTP {status_code}: {snippet!r}")
        return Answer(Verdict.TRANSIENT, errmsg=f"HTTP {status_code} malformed JSON: {snippet!r}")
    if not isinstance(body, dict):
        return Answer(Verdict.TRANSIENT, errmsg=f"HTTP {status_code} JSON is not an object")
    if "errcode" not in body and (body.get("status") == 1111 or "punish" in body):
        try:
            wait_s = float(body.get("wait", 5))
        except (TypeError, ValueError):
            wait_s = 5.0
        return Answer(Verdict.BANNED, body=body, errmsg=f"per-IP ban: {json.dumps(body)[:120]}",
                      wait=wait_s, maybe_processed=False)
    if status_code == 429:
        return Answer(Verdict.THROTTLED, body=body, errmsg="HTTP 429", maybe_processed=False)
    if "errcode" not in body:
        if 400 <= status_code < 500:
            return Answer(Verdict.PERMANENT, body=body, errcode=status_code,
                          errmsg=f"HTTP {status_code}: {text[:120]!r}")
        return Answer(Verdict.TRANSIENT, body=body, errmsg=f"HTTP {status_code} answer without errcode")
    try:
        errcode = int(body["errcode"])
    except (TypeError, ValueError):
        return Answer(Verdict.TRANSIENT, body=body, errmsg=f"unreadable errcode {body['errcode']!r}")
    raw_sub = body.get("sub_code")
    sub_code = None if raw_sub in (None, "") else str(raw_sub)
    errmsg = str(body.get("sub_msg") or body.get("errmsg") or "")
    if errcode == 0:
        return Answer(Verdict.OK, body=body, errcode=0)
    code = effective_errcode(errcode, sub_code)
    if code in TOKEN_INVALID_CODES:
        verdict, processed = Verdict.TOKEN_INVALID, False
    elif code in THROTTLE_CODES:
        verdict, processed = Verdict.THROTTLED, False
    elif code == BUSY_CODE:
        verdict, processed = Verdict.BUSY, False
    else:
        verdict, processed = Verdict.PERMANENT, True
    return Answer(verdict, body=body, errcode=errcode, sub_code=sub_code, errmsg=errmsg,
                  maybe_processed=processed)


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, of min(cap, base·2^(n-1))."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + rng() * ceiling / 2


def to_epoch_ms(moment: datetime) -> int:
    # Rebuilt as a plain datetime: subclasses such as pendulum's (Airflow's context) do their own
    # arithmetic, which mixes badly with the standard library's timedelta.
    utc = moment.astimezone(UTC)
    plain = datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC)
    return (plain - _EPOCH) // timedelta(milliseconds=1)


def slice_window(start_ms: int, end_ms: int, max_span_ms: int = LIST_MAX_SPAN_MS) -> list[tuple[int, int]]:
    """Cut [start, end] into consecutive slices no longer than ``max_span_ms``.

    Neighbouring slices share their boundary millisecond: an instance started exactly there is
    listed twice and de-duplicated, rather than lost to an inclusive/exclusive mismatch.
    """
    if end_ms <= start_ms:
        return []
    slices = []
    lower = start_ms
    while lower < end_ms:
        upper = min(lower + max_span_ms, end_ms)
        slices.append((lower, upper))
        lower = upper
    return slices


def split_slice(start_ms: int, end_ms: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Halve a slice that hit the per-query id cap; None when it cannot be cut any finer."""
    if end_ms - start_ms < 2:
        return None
    middle = start_ms + (end_ms - start_ms) // 2
    return (start_ms, middle), (middle, end_ms)


def default_workers(qps: float) -> int:
    """Enough calls in flight to reach the budget at up to ~600 ms latency, within sane bounds."""
    return max(4, min(32, math.ceil(qps * 0.6)))


# --------------------------------------------------------------------------------------------
# Process-wide shared state: rate limiters and tokens, keyed per app
# --------------------------------------------------------------------------------------------


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


_limiters: dict[tuple[str, str, str], RateLimiter] = {}
_limiters_lock = threading.Lock()


def shared_limiter(base_url: str, app_key: str, api: str, qps: float) -> RateLimiter:
    """The one limiter of this app on this API in this process (the budget is per app per API)."""
    key = (base_url, app_key, api)
    rate = qps * PACING_HEADROOM
    with _limiters_lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = RateLimiter(rate)
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


_token_cache = TokenCache()


def reset_shared_state() -> None:
    """Forget every cached token and rate limiter of this process (after rotating an app secret,
    or between tests whose services reuse a port)."""
    _token_cache.clear()
    with _limiters_lock:
        _limiters.clear()


# --------------------------------------------------------------------------------------------
# The hook
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying. Defaults suit the real service; tests shorten the waits."""

    transient_attempts: int = 6  # total tries for 5xx / malformed / network / ban
    backoff_base: float = 0.5
    backoff_cap: float = 15.0
    throttle_wait: float = 1.0  # 90018/90002 penalty window
    throttle_retries: int = 30
    ban_wait: float = 5.0  # used when the ban answer does not say how long
    busy_retries: int = 3  # -1 系统繁忙


@dataclass(frozen=True)
class _AppSettings:
    base_url: str
    app_key: str
    app_secret: str = field(repr=False)
    agent_id: str | None
    qps: float
    connect_timeout: float
    read_timeout: float
    max_workers: int


def _extra_value(extra: dict, name: str) -> Any:
    # Airflow 3 stores form fields under their own name; older forms used extra__<type>__<name>.
    value = extra.get(name)
    if value in (None, ""):
        value = extra.get(f"extra__dingtalk__{name}")
    return None if value in (None, "") else value


class DingTalkHook(HttpHook):
    """Client of the DingTalk approval API for one app (connection: app key + app secret).

    Connection: ``host`` = base URL (default https://oapi.dingtalk.com), ``login`` = app key,
    ``password`` = app secret, extra ``{"agent_id": "...", "qps": 20}`` and optionally
    ``connect_timeout``, ``read_timeout`` (seconds) and ``max_workers``.
    """

    conn_name_attr = "dingtalk_conn_id"
    default_conn_name = "dingtalk_default"
    conn_type = "dingtalk"
    hook_name = "DingTalk Approval (OA)"
    default_host = DEFAULT_BASE_URL

    def __init__(
        self,
        dingtalk_conn_id: str = default_conn_name,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_workers: int | None = None,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(method="POST", http_conn_id=dingtalk_conn_id, **kwargs)
        self.dingtalk_conn_id = dingtalk_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_workers = max_workers
        self._app: _AppSettings | None = None
        self._app_lock = threading.Lock()
        self._local = threading.local()
        self._open_sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    # ---- Airflow UI -------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: fetch an access token with the app key and secret."""
        try:
            self._app = None
            self._fetch_token()
        except Exception as exc:
            return False, redact(str(exc))
        return True, "DingTalk issued an access token for this app"

    # ---- connection and sessions ------------------------------------------------------------

    def _set_base_url(self, connection) -> None:
        host = (connection.host or self.default_host).strip()
        if "://" not in host:
            # DingTalk only speaks HTTPS; a bare host name means https.
            host = f"{connection.schema or 'https'}://{host}"
        if connection.port:
            host = f"{host.rstrip('/')}:{connection.port}"
        self.base_url = host.rstrip("/")
        self._base_url_initialized = True

    def get_conn(self, headers: dict[Any, Any] | None = None,
                 extra_options: dict[str, Any] | None = None) -> requests.Session:
        """A plain session: no basic auth (the app secret must never leave in a header) and no
        connection extras as headers (``qps`` is not a header)."""
        if not self._base_url_initialized:
            self._set_base_url(self.get_connection(self.dingtalk_conn_id))
        session = requests.Session()
        session = self._configure_session_from_mount_adapters(session)
        session.headers.update({"Accept": "application/json"})
        if headers:
            session.headers.update(headers)
        return session

    def _settings(self) -> _AppSettings:
        if self._app is not None:
            return self._app
        with self._app_lock:
            if self._app is None:
                conn = self.get_connection(self.dingtalk_conn_id)
                self._set_base_url(conn)
                if not conn.login or not conn.password:
                    raise ValueError(f"connection {self.dingtalk_conn_id!r} needs the app key as login "
                                     "and the app secret as password")
                _register_secret(conn.password)
                extra = conn.extra_dejson
                qps = float(_extra_value(extra, "qps") or DEFAULT_QPS)
                workers = self._max_workers or _extra_value(extra, "max_workers")
                self._app = _AppSettings(
                    base_url=self.base_url,
                    app_key=conn.login,
                    app_secret=conn.password,
                    agent_id=_extra_value(extra, "agent_id"),
                    qps=qps,
                    connect_timeout=float(self._connect_timeout or _extra_value(extra, "connect_timeout")
                                          or 5.0),
                    read_timeout=float(self._read_timeout or _extra_value(extra, "read_timeout") or 30.0),
                    max_workers=int(workers) if workers else default_workers(qps),
                )
        return self._app

    def _new_session(self) -> requests.Session:
        session = self.get_conn()
        with self._sessions_lock:
            self._open_sessions.append(session)
        return session

    def _thread_session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._new_session()
        return session

    def close(self) -> None:
        """Close every HTTP session this hook opened."""
        with self._sessions_lock:
            sessions, self._open_sessions = self._open_sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def _limiter(self, api: str) -> RateLimiter:
        app = self._settings()
        return shared_limiter(app.base_url, app.app_key, api, app.qps)

    # ---- transport --------------------------------------------------------------------------

    def _send(self, session: requests.Session, method: str, api: str, params: dict[str, str],
              body: dict | None) -> Answer:
        app = self._settings()
        url = app.base_url + _PATHS[api]
        try:
            response = session.request(
                method, url, params=params, json=body,
                timeout=(app.connect_timeout, app.read_timeout), allow_redirects=False,
            )
            content = response.content
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise ValueError(f"bad DingTalk base URL {app.base_url!r}: {redact(str(exc))}") from None
        except requests.exceptions.ConnectTimeout as exc:
            return Answer(Verdict.TRANSIENT, errmsg=f"connect timeout: {redact(str(exc))}",
                          maybe_processed=False)
        except requests.exceptions.Timeout as exc:
            return Answer(Verdict.TRANSIENT, errmsg=f"read timeout: {redact(str(exc))}")
        except requests.exceptions.ConnectionError as exc:
            reason = exc.args[0] if exc.args else None
            never_connected = isinstance(getattr(reason, "reason", reason), NewConnectionError)
            return Answer(Verdict.TRANSIENT, errmsg=f"connection error: {redact(str(exc))}",
                          maybe_processed=not never_connected)
        except requests.exceptions.RequestException as exc:
            return Answer(Verdict.TRANSIENT, errmsg=f"{type(exc).__name__}: {redact(str(exc))}")
        return classify_answer(response.status_code, content)

    def _fetch_token(self) -> tuple[str, float]:
        app = self._settings()
        body = self._call(API_GETTOKEN, "GET", None, with_token=False)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise DingTalkUnavailable("gettoken answered errcode 0 without an access_token")
        _register_secret(token)
        try:
            expires_in = float(body.get("expires_in", 7200))
        except (TypeError, ValueError):
            expires_in = 7200.0
        self.log.info("Fetched a DingTalk access token for app %s (valid %.0f s)", app.app_key, expires_in)
        return token, expires_in

    def _token(self) -> str:
        app = self._settings()
        return _token_cache.get((app.base_url, app.app_key), self._fetch_token)

    def _call(self, api: str, method: str, body: dict | None, *, with_token: bool = True,
              idempotent: bool = True, session: requests.Session | None = None) -> dict:
        """One API call with every retry rule; returns the answer body (errcode 0)."""
        app = self._settings()
        policy = self.retry_policy
        session = session or self._thread_session()
        limiter = self._limiter(api)
        transient = throttled = busy = 0
        token_renewed = False
        while True:
            # Wait for the slot first, then read the token: a token read before a long wait in
            # the queue may expire before it is sent.
            limiter.acquire()
            if with_token:
                token = self._token()
                params = {"access_token": token}
            else:
                params = {"appkey": app.app_key, "appsecret": app.app_secret}
            answer = self._send(session, method, api, params, body)
            verdict = answer.verdict
            if verdict is Verdict.OK:
                return answer.body or {}
            if verdict is Verdict.TOKEN_INVALID and with_token:
                if token_renewed:
                    raise self._error(answer, api)
                self.log.info("DingTalk refused the access token on %s (errcode %s%s); fetching a new one",
                              api, answer.errcode, f"/{answer.sub_code}" if answer.sub_code else "")
                _token_cache.invalidate((app.base_url, app.app_key), token)
                token_renewed = True
                continue
            if verdict is Verdict.PERMANENT or verdict is Verdict.TOKEN_INVALID:
                raise self._error(answer, api)
            if not idempotent and answer.maybe_processed:
                raise DingTalkUnavailable(
                    f"DingTalk {api}: {answer.errmsg}; the call may or may not have taken effect, "
                    "so it is not repeated blindly")
            if verdict is Verdict.THROTTLED:
                throttled += 1
                if throttled > policy.throttle_retries:
                    raise DingTalkUnavailable(f"DingTalk {api} still throttled after {throttled - 1} "
                                              f"waits: {answer.errmsg}")
                self.log.warning("DingTalk throttled %s (errcode %s%s); waiting %.1f s",
                                 api, answer.errcode, f"/{answer.sub_code}" if answer.sub_code else "",
                                 policy.throttle_wait)
                limiter.penalize(policy.throttle_wait)
                continue
            if verdict is Verdict.BUSY:
                busy += 1
                if busy > policy.busy_retries:
                    raise DingTalkUnavailable(f"DingTalk {api} busy (errcode -1) after {policy.busy_retries} "
                                              f"retries: {answer.errmsg}")
                delay = backoff_delay(busy, policy.backoff_base, policy.backoff_cap)
                self.log.warning("DingTalk busy on %s (errcode -1); retry %d/%d in %.2f s",
                                 api, busy, policy.busy_retries, delay)
                time.sleep(delay)
                continue
            # BANNED or TRANSIENT
            transient += 1
            if transient >= policy.transient_attempts:
                raise DingTalkUnavailable(f"DingTalk {api} failed {transient} times, last: {answer.errmsg}")
            if verdict is Verdict.BANNED:
                delay = answer.wait if answer.wait is not None else policy.ban_wait
                self.log.warning("DingTalk answered %s on %s; waiting %.1f s", answer.errmsg, api, delay)
                limiter.penalize(delay)
            else:
                delay = backoff_delay(transient, policy.backoff_base, policy.backoff_cap)
                self.log.warning("DingTalk %s failed (%s); attempt %d/%d, retry in %.2f s",
                                 api, answer.errmsg, transient, policy.transient_attempts, delay)
                time.sleep(delay)

    @staticmethod
    def _error(answer: Answer, api: str) -> DingTalkError:
        return DingTalkError(answer.errcode if answer.errcode is not None else 0,
                             redact(answer.errmsg), answer.sub_code, api)

    # ---- public API -------------------------------------------------------------------------

    def list_instance_ids(self, process_code: str, start: datetime, end: datetime) -> Iterator[str]:
        """Ids of the instances of ``process_code`` STARTED in [start, end], each once.

        The window is cut into ≤120-day slices; a slice that hits the 10,000-id cap of one query
        is halved and listed again. ``end`` is kept a minute behind now.
        """
        for name, moment in (("start", start), ("end", end)):
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValueError(f"{name}={moment.isoformat()} is naive: pass a timezone-aware datetime")
        now = datetime.now(UTC)
        if start < now - LIST_MAX_AGE:
            raise ValueError(
                f"start={start.isoformat()} is more than 365 days ago; DingTalk lists instances "
                "started within the last 365 days only")
        end = min(end, now - LIST_END_LAG)
        return self._list_ids(process_code, to_epoch_ms(start), to_epoch_ms(end))

    def _list_ids(self, process_code: str, start_ms: int, end_ms: int) -> Iterator[str]:
        seen: set[str] = set()
        pending = deque(slice_window(start_ms, end_ms))
        self.log.info("Listing %s instances in %d slice(s)", process_code, len(pending))
        while pending:
            lower, upper = pending.popleft()
            returned = 0
            for instance_id in self._list_slice(process_code, lower, upper):
                returned += 1
                if instance_id not in seen:
                    seen.add(instance_id)
                    yield instance_id
            if returned >= LIST_ID_CAP:
                halves = split_slice(lower, upper)
                if halves is None:
                    self.log.error("Slice %d..%d ms holds %d+ ids and cannot be split further; "
                                   "some ids may be missing", lower, upper, LIST_ID_CAP)
                else:
                    self.log.info("Slice %s..%s hit the %d-id cap; listing its halves",
                                  _ms_iso(lower), _ms_iso(upper), LIST_ID_CAP)
                    pending.extendleft(reversed(halves))
            self.log.info("Listed %d ids so far (%s: slice %s..%s gave %d)",
                          len(seen), process_code, _ms_iso(lower), _ms_iso(upper), returned)
        self.log.info("Listed %d ids of %s", len(seen), process_code)

    def _list_slice(self, process_code: str, start_ms: int, end_ms: int) -> Iterator[str]:
        cursor: Any = 0
        seen_cursors = {json.dumps(cursor)}
        pages = 0
        while True:
            body = self._call(API_LISTIDS, "POST", {
                "process_code": process_code, "start_time": start_ms, "end_time": end_ms,
                "size": LIST_PAGE_SIZE, "cursor": cursor,
            })
            result = body.get("result") or {}
            for instance_id in result.get("list") or []:
                yield str(instance_id)
            pages += 1
            if pages % 50 == 0:
                self.log.info("Listing %s: %d pages of slice %s..%s read", process_code, pages,
                              _ms_iso(start_ms), _ms_iso(end_ms))
            next_cursor = result.get("next_cursor")
            if next_cursor is None:
                return
            if json.dumps(next_cursor) in seen_cursors:
                self.log.warning("DingTalk repeated cursor %r on %s; slice ends here",
                                 next_cursor, process_code)
                return
            seen_cursors.add(json.dumps(next_cursor))
            cursor = next_cursor

    def get_instance(self, instance_id: str) -> dict:
        """The ``process_instance`` object of one instance, unchanged."""
        return self._get_instance(instance_id, None)

    def _get_instance(self, instance_id: str, session: requests.Session | None) -> dict:
        body = self._call(API_GET, "POST", {"process_instance_id": instance_id}, session=session)
        instance = body.get("process_instance")
        if not isinstance(instance, dict):
            raise DingTalkError(0, f"answer for {instance_id} has no process_instance object", api=API_GET)
        return instance

    def get_instances(self, ids: Iterable[str]) -> Iterator[tuple[str, dict]]:
        """``(id, process_instance)`` for every id, fetched concurrently within the app's QPS
        budget, yielded as they complete (not in input order). Repeated ids are fetched once."""
        app = self._settings()
        return self._get_many(ids, app.max_workers)

    def _get_many(self, ids: Iterable[str], workers: int) -> Iterator[tuple[str, dict]]:
        # One session per pool thread, closed when this call ends (other calls keep theirs).
        local = threading.local()
        opened: list[requests.Session] = []

        def fetch(instance_id: str) -> dict:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = self.get_conn()
                opened.append(session)
            return self._get_instance(instance_id, session)

        id_iter = iter(ids)
        submitted: set[str] = set()
        in_flight: dict[Future, str] = {}
        done_count = 0
        started = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dingtalk-get")

        def top_up() -> None:
            # Bounded look-ahead: ids may be a lazy listing; never read it all up front.
            while len(in_flight) < workers * 2:
                instance_id = next(id_iter, None)
                if instance_id is None:
                    return
                if instance_id in submitted:
                    continue
                submitted.add(instance_id)
                in_flight[pool.submit(fetch, instance_id)] = instance_id

        try:
            top_up()
            while in_flight:
                finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for future in finished:
                    instance_id = in_flight.pop(future)
                    instance = future.result()
                    done_count += 1
                    if done_count % PROGRESS_EVERY == 0:
                        elapsed = time.monotonic() - started
                        self.log.info("Fetched %d instances (%.1f/s)", done_count,
                                      done_count / elapsed if elapsed else 0.0)
                    yield instance_id, instance
                top_up()
            elapsed = time.monotonic() - started
            self.log.info("Fetched %d instances in %.1f s", done_count, elapsed)
        finally:
            for future in in_flight:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            for session in opened:
                session.close()

    def add_comment(self, instance_id: str, user_id: str, text: str) -> None:
        """Add a comment to an instance (internal apps only). Not repeated after an ambiguous
        failure (timeout, dropped connection, 5xx): that raises ``DingTalkUnavailable``."""
        body = self._call(API_COMMENT, "POST", {"request": {
            "process_instance_id": instance_id, "comment_userid": user_id, "text": text,
        }}, idempotent=False)
        if body.get("result") is False or body.get("success") is False:
            raise DingTalkError(int(body.get("errcode", 0) or 0),
                                f"comment on {instance_id} not accepted: {json.dumps(body)[:200]}",
                                api=API_COMMENT)


def _ms_iso(epoch_ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=epoch_ms)).isoformat(timespec="seconds")
