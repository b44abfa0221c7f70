"""Local emulator of the DingTalk approval API (old ``oapi.dingtalk.com`` style).

Reproduces what a client meets on the real service: tokens that expire, errors that come back
plain or wrapped under errcode 88 with a string ``sub_code``, the listing rules (page size,
120-day window, 365-day look-back, 10,000-id cap, start-time selection, cursor paging), the
per-app per-API QPS limit with its penalty window, and injectable faults (throttling, busy,
gateway errors, the per-IP ban page, malformed bodies, hangs, dropped connections).

Run it in a test with ``DingTalkEmulator().start()`` or from a shell with
``python -m dk_emulators.dingtalk --help``. See docs/emulators-dingtalk.md.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import copy
import json
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from dk_emulators._server import ServerThread, drop_connection, fault_fires, serve_forever

CHINA_TZ = timezone(timedelta(hours=8))
DEFAULT_PROCESS_CODE = "PROC-EXPENSE-DEMO"

# API names used by calls counters, fault targeting and the QPS limiter.
DEMO_ROBOT_TOKEN = "demo-robot-token"
ROBOT_MESSAGE_TYPES = frozenset({"text", "markdown", "link", "actionCard", "feedCard"})
API_GETTOKEN = "gettoken"
API_LISTIDS = "listids"
API_GET = "get"
API_COMMENT = "comment_add"
API_PATHS = {
    API_GETTOKEN: "/gettoken",
    API_LISTIDS: "/topapi/processinstance/listids",
    API_GET: "/topapi/processinstance/get",
    API_COMMENT: "/topapi/process/instance/comment/add",
}

# Listing limits documented by DingTalk.
MAX_PAGE_SIZE = 20
DEFAULT_PAGE_SIZE = 10  # UNVERIFIED: what the server uses when size is omitted
MAX_WINDOW = timedelta(days=120)
MAX_LOOKBACK = timedelta(days=365)
MAX_IDS_PER_QUERY = 10_000
MAX_USERIDS = 10

# Error codes. Token and throttling codes are documented; the parameter-error code and the
# messages of parameter errors are UNVERIFIED choices (see docs/emulators-dingtalk.md).
ERR_WRAPPED = 88
ERR_BUSY = -1
ERR_SECRET_OR_TOKEN = 40001
ERR_INVALID_TOKEN = 40014
ERR_TOKEN_EXPIRED = 42001
ERR_INVALID_CORP = 33001
ERR_MISSING_PARAM = 40035
ERR_BAD_APP_CREDENTIALS = 40096
ERR_INVALID_PARAM = 400002  # UNVERIFIED
ERR_GLOBAL_QPS = 90002
ERR_APP_QPS = 90018
ERR_MONTHLY_QUOTA = 90020

ERROR_MESSAGES = {
    ERR_BUSY: "系统繁忙",
    ERR_SECRET_OR_TOKEN: "获取access_token时Secret错误，或者access_token无效",
    ERR_INVALID_TOKEN: "不合法的access_token",
    ERR_TOKEN_EXPIRED: "access_token超时",
    ERR_INVALID_CORP: "无效的企业ID",
    ERR_BAD_APP_CREDENTIALS: "不合法的appKey或appSecret",
    ERR_GLOBAL_QPS: "服务器过载，该接口调用超出了全局最大qps限制，请稍后重试",  # UNVERIFIED wording
    ERR_MONTHLY_QUOTA: "该应用当月调用接口的次数已达上限",  # UNVERIFIED wording
}
# Codes the real service sometimes returns wrapped under errcode 88 with sub_code as a string.
WRAPPABLE_CODES = frozenset(
    {ERR_SECRET_OR_TOKEN, ERR_INVALID_TOKEN, ERR_TOKEN_EXPIRED, ERR_INVALID_CORP,
     ERR_GLOBAL_QPS, ERR_APP_QPS, ERR_MONTHLY_QUOTA}
)

# Faults that answer with a DingTalk errcode: name -> code. A "_plain" / "_wrapped" suffix
# forces the encoding; without it the emulator's ``wrap_errors`` style decides.
ERRCODE_FAULTS = {
    "invalid_token": ERR_INVALID_TOKEN,
    "expired_token": ERR_TOKEN_EXPIRED,
    "token_40001": ERR_SECRET_OR_TOKEN,
    "token_33001": ERR_INVALID_CORP,
    "qps": ERR_APP_QPS,
    "global_qps": ERR_GLOBAL_QPS,
    "quota": ERR_MONTHLY_QUOTA,
    "busy": ERR_BUSY,
}
TRANSPORT_FAULTS = frozenset(
    {"http_500", "http_502", "ip_ban_html", "ip_ban_json", "malformed_json", "hang", "drop"}
)
WRAP_STYLES = ("plain", "wrapped", "alternate")

IP_BAN_HTML = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>访问被拒绝</title></head>
<body><div class="punish-wrapper"><h1>很抱歉，由于您访问的URL有可能对网站造成安全威胁，您的访问被阻断。</h1>
<p>Sorry, your request has been blocked as it may cause potential threats to the server's security.</p>
<p>请求ID: {request_id}</p></div></body></html>
"""
BAD_GATEWAY_HTML = """<html>
<head><title>502 Bad Gateway</title></head>
<body><center><h1>502 Bad Gateway</h1></center><hr><center>Tengine</center></body>
</html>
"""
INTERNAL_ERROR_HTML = """<html>
<head><title>500 Internal Server Error</title></head>
<body><center><h1>500 Internal Server Error</h1></center><hr><center>Tengine</center></body>
</html>
"""


def known_fault_names() -> list[str]:
    """Every fault name ``inject`` accepts."""
    names = set(TRANSPORT_FAULTS)
    for base in ERRCODE_FAULTS:
        names.update({base, f"{base}_plain", f"{base}_wrapped"})
    return sorted(names)


def parse_errcode_fault(name: str) -> tuple[int, bool | None]:
    """``"qps_wrapped"`` -> (90018, True); ``"busy"`` -> (-1, None): code and forced wrapping."""
    for suffix, forced in (("_wrapped", True), ("_plain", False)):
        if name.endswith(suffix) and name.removesuffix(suffix) in ERRCODE_FAULTS:
            return ERRCODE_FAULTS[name.removesuffix(suffix)], forced
    return ERRCODE_FAULTS[name], None


@dataclass
class Fault:
    """One injected fault: fires on the next ``times`` matching calls, or on a ``rate`` of them."""

    fault: str
    api: str | None = None
    times: int | None = 1
    rate: float | None = None
    fired: int = 0

    def matches(self, api: str) -> bool:
        return self.api is None or self.api == api


@dataclass
class _Token:
    app_key: str
    expires_at: float  # time.monotonic()
    revoked: bool = False


class _RawSendMiddleware:
    """Keep uvicorn's own ``send`` in the scope: the drop fault needs it to reach the transport."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["dk_raw_send"] = send
        await self.app(scope, receive, send)


def china_time_to_ms(text: str) -> int:
    """``"2024-03-06 09:01:02"`` (China time, no offset) -> epoch milliseconds."""
    parsed = datetime.strptime(text.strip()[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA_TZ)
    return int(parsed.timestamp() * 1000)


def format_china_time(moment: datetime | str | None, clock: Callable[[], datetime]) -> str:
    """A datetime (aware; naive = China time), a ready string or None (= now) -> China-time string."""
    if isinstance(moment, str):
        return moment
    if moment is None:
        moment = clock()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CHINA_TZ)
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _instance_dict(item: Any) -> dict:
    """Accept a plain instance dict or anything with an ``.instance`` dict (a SeedClaim)."""
    instance = getattr(item, "instance", item)
    if not isinstance(instance, dict):
        raise TypeError(f"not an instance: {type(item).__name__}")
    return instance


class _ApiError(Exception):
    def __init__(self, code: int, message: str, wrap: bool | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.wrap = wrap


class DingTalkEmulator:
    """The DingTalk approval API over real HTTP, with knobs for the behaviours clients must survive.

    ``wrap_errors``: "plain", "wrapped" or "alternate" (every other wrappable error is wrapped,
    deterministically, starting with plain). ``qps``: calls per second per app key per API
    (``None``/0 = unlimited). ``qps_penalty_s``: how long an app stays throttled on that API.
    ``clock``: returns the current aware datetime (the 365-day rule and default end_time use it).
    """

    def __init__(
        self,
        app_key: str = "demo-app-key",
        app_secret: str = "demo-app-secret",
        qps: int | None = 20,
        latency_ms: float = 0,
        token_ttl: float = 7200,
        instances: Iterable[Any] = (),
        *,
        apps: dict[str, str] | None = None,
        process_codes: Iterable[str] = (DEFAULT_PROCESS_CODE,),
        wrap_errors: str = "alternate",
        qps_penalty_s: float = 1.0,
        hang_seconds: float = 60.0,
        fault_seed: int = 0,
        clock: Callable[[], datetime] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if wrap_errors not in WRAP_STYLES:
            raise ValueError(f"wrap_errors must be one of {WRAP_STYLES}")
        self.apps: dict[str, str] = {app_key: app_secret, **(apps or {})}
        self.app_key = app_key
        self.app_secret = app_secret
        self.qps = qps
        self.latency_ms = latency_ms
        self.token_ttl = token_ttl
        self.wrap_errors = wrap_errors
        self.qps_penalty_s = qps_penalty_s
        self.hang_seconds = hang_seconds
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.process_codes: set[str] = set(process_codes)
        self.calls: Counter[str] = Counter()
        self.comments: list[dict] = []
        # Group-robot webhook (/robot/send): its own access tokens, not the app's.
        self.robot_tokens: set[str] = {DEMO_ROBOT_TOKEN}
        self.robot_messages: list[dict] = []
        self.in_flight = 0  # API calls being answered right now
        self.peak_in_flight = 0  # most API calls answered at the same time (shows latency overlaps)
        self.base_url: str | None = None

        self._lock = threading.RLock()
        self._instances: dict[str, dict] = {}
        self._index: dict[str, list[tuple[int, str]]] = {}
        self._index_dirty = True
        self._tokens: dict[str, _Token] = {}
        self._current_token: dict[str, str] = {}
        self._faults: list[Fault] = []
        self._fault_rng = random.Random(fault_seed)
        self._wrap_counter = 0
        self._qps_windows: dict[tuple[str, str], deque[float]] = {}
        self._qps_penalty_until: dict[tuple[str, str], float] = {}
        self._stopping = threading.Event()
        self._host = host
        self._port = port
        self._server: ServerThread | None = None

        self.add_instances(instances)
        self.fastapi = self._build_app()
        self.app = _RawSendMiddleware(self.fastapi)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Serve on 127.0.0.1 (a free port unless one was given); returns the base URL."""
        self._stopping.clear()
        self._server = ServerThread(self.app, host=self._host, port=self._port)
        self.base_url = self._server.start()
        return self.base_url

    def connection(self, qps: int | None = None) -> dict[str, Any]:
        """An Airflow ``dingtalk`` connection to this emulator with its app key and secret, as the
        connection form stores it: JSON for ``AIRFLOW_CONN_<ID>``. ``qps`` defaults to the emulator's."""
        return {"conn_type": "dingtalk", "host": self.base_url, "login": self.app_key, "password": self.app_secret,
                "extra": {"qps": qps or self.qps or 20, "agent_id": "demo-agent"}}

    def stop(self) -> None:
        self._stopping.set()  # lets hanging answers finish early
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> DingTalkEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ data
    def add_instances(self, instances: Iterable[Any]) -> int:
        """Store instances (dicts shaped like ``process_instance`` plus ``process_instance_id`` and
        ``process_code``, or SeedClaims). An existing id is replaced. Returns how many were stored."""
        count = 0
        with self._lock:
            for item in instances:
                instance = copy.deepcopy(_instance_dict(item))
                instance_id = instance.get("process_instance_id")
                if not instance_id or not instance.get("create_time"):
                    raise ValueError("an instance needs process_instance_id and create_time")
                china_time_to_ms(instance["create_time"])  # refuse unparseable times now, not at listing
                instance.setdefault("process_code", DEFAULT_PROCESS_CODE)
                self._instances[instance_id] = instance
                self.process_codes.add(instance["process_code"])
                count += 1
            self._index_dirty = True
        return count

    def get_instance(self, instance_id: str) -> dict:
        """A copy of the stored instance (with process_instance_id and process_code)."""
        with self._lock:
            return copy.deepcopy(self._instances[instance_id])

    @property
    def instance_count(self) -> int:
        return len(self._instances)

    def set_outcome(self, instance_id: str, status: str, result: str = "",
                    finish_time: datetime | str | None = None) -> dict:
        """Move an instance to a new state (late approval, refusal, termination, cancellation).

        Open tasks are closed and an operation record is appended the way the real service shows
        them. ``finish_time``: aware datetime, China-time string, or None (= now). Returns the
        updated instance.
        """
        status = status.upper()
        if status not in {"NEW", "RUNNING", "COMPLETED", "TERMINATED", "CANCELED"}:
            raise ValueError(f"unknown status {status!r}")
        with self._lock:
            instance = self._instances[instance_id]
            instance["status"] = status
            instance["result"] = result
            if status in {"NEW", "RUNNING"}:
                instance.pop("finish_time", None)
                return copy.deepcopy(instance)
            finished = format_china_time(finish_time, self.clock)
            instance["finish_time"] = finished
            tasks = instance.setdefault("tasks", [])
            records = instance.setdefault("operation_records", [])
            open_tasks = [t for t in tasks if t.get("task_status") in {"RUNNING", "NEW"}]
            if status == "COMPLETED":
                decision = "AGREE" if result == "agree" else "REFUSE"
                actor = open_tasks[0]["userid"] if open_tasks else instance.get("originator_userid", "")
                for position, task in enumerate(open_tasks):
                    task["task_status"] = "COMPLETED" if position == 0 else "CANCELED"
                    task["task_result"] = decision if position == 0 else "NONE"
                    task["finish_time"] = finished
                records.append({"userid": actor, "date": finished, "operation_type": "EXECUTE_TASK_NORMAL",
                                "operation_result": decision})
            else:
                for task in open_tasks:
                    task["task_status"] = "CANCELED"
                    task["task_result"] = "NONE"
                    task["finish_time"] = finished
                records.append({"userid": instance.get("originator_userid", ""), "date": finished,
                                "operation_type": "TERMINATE_PROCESS_INSTANCE", "operation_result": "NONE"})
            return copy.deepcopy(instance)

    # ------------------------------------------------------------------ faults and tokens
    def inject(self, fault: str, api: str | None = None, times: int | None = 1,
               rate: float | None = None) -> Fault:
        """Make upcoming calls fail.

        ``api``: one of gettoken / listids / get / comment_add, or None for all four.
        Without ``rate`` the fault fires on the next ``times`` matching calls (``times=None``:
        every call until ``clear_faults``). With ``rate`` each matching call fails with that
        probability (seeded, so a run is reproducible) until ``clear_faults``; ``times`` is ignored.
        """
        if fault not in known_fault_names():
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(known_fault_names())}")
        if api is not None and api not in API_PATHS:
            raise ValueError(f"unknown api {api!r}; known: {', '.join(API_PATHS)}")
        if rate is not None and not 0 < rate <= 1:
            raise ValueError("rate must be in (0, 1]")
        entry = Fault(fault=fault, api=api, times=None if rate is not None else times, rate=rate)
        with self._lock:
            self._faults.append(entry)
        return entry

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def expire_tokens(self) -> None:
        """Make every issued token expired now (calls with it get 42001)."""
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = 0.0

    def revoke_tokens(self) -> None:
        """Invalidate every issued token as a secret reset would (calls with it get 40001)."""
        with self._lock:
            for token in self._tokens.values():
                token.revoked = True
            self._current_token.clear()

    def state(self) -> dict:
        """What the admin ``state`` endpoint shows."""
        with self._lock:
            statuses = Counter(f"{i.get('status')}/{i.get('result', '')}" for i in self._instances.values())
            return {
                "instances": len(self._instances),
                "statuses": dict(statuses),
                "process_codes": sorted(self.process_codes),
                "comments": len(self.comments),
                "robot_messages": len(self.robot_messages),
                "calls": dict(self.calls),
                "faults": [asdict(f) for f in self._faults],
                "tokens_issued": len(self._tokens),
                "peak_in_flight": self.peak_in_flight,
                "config": {
                    "app_keys": sorted(self.apps), "qps": self.qps, "latency_ms": self.latency_ms,
                    "token_ttl": self.token_ttl, "wrap_errors": self.wrap_errors,
                    "qps_penalty_s": self.qps_penalty_s, "hang_seconds": self.hang_seconds,
                },
            }

    # ------------------------------------------------------------------ answers
    @staticmethod
    def _request_id() -> str:
        return uuid.uuid4().hex[:15]

    def _ok(self, **fields: Any) -> JSONResponse:
        return JSONResponse({"errcode": 0, "errmsg": "ok", **fields, "request_id": self._request_id()})

    def _should_wrap(self, code: int, forced: bool | None) -> bool:
        if code not in WRAPPABLE_CODES:
            return False
        if forced is not None:
            return forced
        if self.wrap_errors == "plain":
            return False
        if self.wrap_errors == "wrapped":
            return True
        with self._lock:
            self._wrap_counter += 1
            return self._wrap_counter % 2 == 0

    def _error(self, error: _ApiError) -> JSONResponse:
        body: dict[str, Any]
        if self._should_wrap(error.code, error.wrap):
            body = {"errcode": ERR_WRAPPED, "sub_code": str(error.code), "sub_msg": error.message,
                    "errmsg": f"ding talk error[subcode={error.code},submsg={error.message}]"}
        else:
            body = {"errcode": error.code, "errmsg": error.message}
        body["request_id"] = self._request_id()
        return JSONResponse(body)

    def _take_fault(self, api: str) -> Fault | None:
        with self._lock:
            for entry in list(self._faults):
                if entry.matches(api) and fault_fires(entry, self._faults, self._fault_rng):
                    return entry
        return None

    def _check_qps(self, app_key: str, api: str) -> None:
        if not self.qps:
            return
        now = time.monotonic()
        key = (app_key, api)
        with self._lock:
            penalty_until = self._qps_penalty_until.get(key, 0.0)
            if now < penalty_until:
                raise self._qps_error(app_key, api, penalty_until - now)
            window = self._qps_windows.setdefault(key, deque())
            while window and now - window[0] >= 1.0:
                window.popleft()
            if len(window) >= self.qps:
                self._qps_penalty_until[key] = now + self.qps_penalty_s
                raise self._qps_error(app_key, api, self.qps_penalty_s)
            window.append(now)

    def _qps_error(self, app_key: str, api: str, remaining_s: float) -> _ApiError:
        until = (self.clock() + timedelta(seconds=remaining_s)).astimezone(CHINA_TZ)
        message = (f"当前应用[{app_key}]调用该接口[{API_PATHS[api]}]超出了该接口承受的最大qps[{self.qps}]，"
                   f"请降低调用频率，限制将在 {until.strftime('%Y-%m-%d %H:%M:%S')} 结束.")
        return _ApiError(ERR_APP_QPS, message)

    def _app_for_token(self, token: str | None) -> str:
        if not token:
            raise _ApiError(ERR_INVALID_TOKEN, ERROR_MESSAGES[ERR_INVALID_TOKEN])
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None:
                raise _ApiError(ERR_INVALID_TOKEN, ERROR_MESSAGES[ERR_INVALID_TOKEN])
            if entry.revoked:
                raise _ApiError(ERR_SECRET_OR_TOKEN, ERROR_MESSAGES[ERR_SECRET_OR_TOKEN])
            if time.monotonic() >= entry.expires_at:
                raise _ApiError(ERR_TOKEN_EXPIRED, ERROR_MESSAGES[ERR_TOKEN_EXPIRED])
            return entry.app_key

    async def _sleep(self, seconds: float) -> None:
        """Asynchronous sleep that ends early when the emulator stops."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.1))

    async def _transport_fault(self, fault: Fault, request: Request) -> Response | None:
        """Answer a non-JSON fault; None means "go on with the normal answer" (after a hang)."""
        name = fault.fault
        if name == "http_500":
            return HTMLResponse(INTERNAL_ERROR_HTML, status_code=500)
        if name == "http_502":
            return HTMLResponse(BAD_GATEWAY_HTML, status_code=502)
        if name == "ip_ban_html":
            return HTMLResponse(IP_BAN_HTML.format(request_id=self._request_id()), status_code=200)
        if name == "ip_ban_json":
            return JSONResponse({"status": 1111, "wait": 5, "source": "x5", "punish": "deny",
                                 "uuid": str(uuid.uuid4())})
        if name == "malformed_json":
            return Response('{"errcode":0,"errmsg":"ok","result":{"list":["', media_type="application/json")
        if name == "hang":
            await self._sleep(self.hang_seconds)
            return None
        if name == "drop":
            drop_connection(request.scope["dk_raw_send"])
            await asyncio.sleep(0.05)  # let the transport notice, so the answer below is discarded
            return Response(status_code=500)
        raise AssertionError(name)

    async def _run(self, api: str, request: Request,
                   handler: Callable[[str, dict, Request], Response], needs_token: bool = True) -> Response:
        """The common path of every API call: count, fault, token, QPS, latency, then the handler."""
        with self._lock:
            self.calls[api] += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._answer(api, request, handler, needs_token)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _answer(self, api: str, request: Request,
                      handler: Callable[[str, dict, Request], Response], needs_token: bool) -> Response:
        fault = self._take_fault(api)
        try:
            if fault is not None and fault.fault in TRANSPORT_FAULTS:
                answer = await self._transport_fault(fault, request)
                if answer is not None:
                    return answer
            elif fault is not None:
                code, forced = parse_errcode_fault(fault.fault)
                message = ERROR_MESSAGES.get(code)
                if message is None:  # 90018 carries the app, the API and the end of the penalty
                    message = self._qps_error(self.app_key, api, self.qps_penalty_s).message
                raise _ApiError(code, message, wrap=forced)
            if needs_token:
                app_key = self._app_for_token(request.query_params.get("access_token"))
                self._check_qps(app_key, api)
            body = await self._read_body(request) if request.method == "POST" else {}
            if self.latency_ms:
                await asyncio.sleep(self.latency_ms / 1000)
            return handler(api, body, request)
        except _ApiError as error:
            if self.latency_ms:
                await asyncio.sleep(self.latency_ms / 1000)
            return self._error(error)

    @staticmethod
    async def _read_body(request: Request) -> dict:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            parsed = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            # topapi also takes form-encoded bodies
            try:
                form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
            except (ValueError, UnicodeDecodeError):
                raise _ApiError(ERR_INVALID_PARAM, "不合法的参数: 请求体不是合法的JSON") from None
            return {key: values[-1] for key, values in form.items()}
        if not isinstance(parsed, dict):
            raise _ApiError(ERR_INVALID_PARAM, "不合法的参数: 请求体必须是JSON对象")
        return parsed

    # ------------------------------------------------------------------ API handlers
    def _gettoken(self, api: str, body: dict, request: Request) -> Response:
        app_key = request.query_params.get("appkey")
        app_secret = request.query_params.get("appsecret")
        if not app_key or app_secret is None:
            raise _ApiError(ERR_MISSING_PARAM, "缺少参数 appkey 或 appsecret")
        if self.apps.get(app_key) != app_secret:
            raise _ApiError(ERR_BAD_APP_CREDENTIALS, ERROR_MESSAGES[ERR_BAD_APP_CREDENTIALS])
        self._check_qps(app_key, api)
        now = time.monotonic()
        with self._lock:
            current = self._current_token.get(app_key)
            entry = self._tokens.get(current) if current else None
            if entry is None or entry.revoked or now >= entry.expires_at:
                current = uuid.uuid4().hex
                entry = _Token(app_key=app_key, expires_at=now + self.token_ttl)
                self._tokens[current] = entry
                self._current_token[app_key] = current
            # Remaining validity, as whole seconds (at least 1 while valid).
            expires_in = max(1, int(entry.expires_at - now))
        return self._ok(access_token=current, expires_in=expires_in)

    def _listids(self, api: str, body: dict, request: Request) -> Response:
        process_code = body.get("process_code")
        if not process_code:
            raise _ApiError(ERR_MISSING_PARAM, "缺少参数 process_code")
        if body.get("start_time") in (None, ""):
            raise _ApiError(ERR_MISSING_PARAM, "缺少参数 start_time")
        start_ms = self._int_param(body, "start_time")
        now_ms = int(self.clock().timestamp() * 1000)
        end_ms = self._int_param(body, "end_time") if body.get("end_time") not in (None, "") else now_ms
        size = self._int_param(body, "size") if body.get("size") not in (None, "") else DEFAULT_PAGE_SIZE
        cursor = self._int_param(body, "cursor") if body.get("cursor") not in (None, "") else 0
        if size > MAX_PAGE_SIZE or size < 1:
            raise _ApiError(ERR_INVALID_PARAM, f"size参数不合法，取值范围为1~{MAX_PAGE_SIZE}")
        if cursor < 0:
            raise _ApiError(ERR_INVALID_PARAM, "cursor参数不合法")
        if process_code not in self.process_codes:
            raise _ApiError(ERR_INVALID_PARAM, f"审批模板不存在: process_code={process_code}")
        if end_ms < start_ms:
            raise _ApiError(ERR_INVALID_PARAM, "end_time不能早于start_time")
        if end_ms - start_ms > MAX_WINDOW.total_seconds() * 1000:
            raise _ApiError(ERR_INVALID_PARAM, "查询时间范围不能超过120天")
        if now_ms - start_ms > MAX_LOOKBACK.total_seconds() * 1000:
            raise _ApiError(ERR_INVALID_PARAM, "start_time不能早于当前时间365天")
        userids: set[str] | None = None
        if body.get("userid_list"):
            userids = {u.strip() for u in str(body["userid_list"]).split(",") if u.strip()}
            if len(userids) > MAX_USERIDS:
                raise _ApiError(ERR_INVALID_PARAM, f"userid_list最多支持{MAX_USERIDS}个用户")

        selected = self._select(process_code, start_ms, end_ms, userids)
        # The service hands out at most MAX_IDS_PER_QUERY ids per query, then stops paging.
        selected = selected[:MAX_IDS_PER_QUERY]
        page = selected[cursor:cursor + size]
        result: dict[str, Any] = {"list": page}
        if cursor + size < len(selected):
            result["next_cursor"] = cursor + size
        return self._ok(result=result)

    @staticmethod
    def _int_param(body: dict, name: str) -> int:
        value = body.get(name)
        if isinstance(value, bool):
            raise _ApiError(ERR_INVALID_PARAM, f"不合法的参数 {name}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise _ApiError(ERR_INVALID_PARAM, f"不合法的参数 {name}") from None

    def _select(self, process_code: str, start_ms: int, end_ms: int, userids: set[str] | None) -> list[str]:
        """Ids of instances of ``process_code`` STARTED in [start, end), oldest first."""
        with self._lock:
            if self._index_dirty:
                index: dict[str, list[tuple[int, str]]] = {}
                for instance_id, instance in self._instances.items():
                    index.setdefault(instance["process_code"], []).append(
                        (china_time_to_ms(instance["create_time"]), instance_id))
                for rows in index.values():
                    rows.sort()
                self._index, self._index_dirty = index, False
            rows = self._index.get(process_code, [])
            low = bisect.bisect_left(rows, (start_ms, ""))
            high = bisect.bisect_left(rows, (end_ms, ""))
            ids = [instance_id for _, instance_id in rows[low:high]]
            if userids is not None:
                ids = [i for i in ids if self._instances[i].get("originator_userid") in userids]
            return ids

    def _get(self, api: str, body: dict, request: Request) -> Response:
        instance_id = body.get("process_instance_id")
        if not instance_id:
            raise _ApiError(ERR_MISSING_PARAM, "缺少参数 process_instance_id")
        with self._lock:
            stored = self._instances.get(str(instance_id))
            if stored is None:
                raise _ApiError(ERR_INVALID_PARAM, f"审批实例不存在: process_instance_id={instance_id}")
            answer = {k: copy.deepcopy(v) for k, v in stored.items()
                      if k not in ("process_instance_id", "process_code")}
        return self._ok(process_instance=answer)

    def _comment_add(self, api: str, body: dict, request: Request) -> Response:
        payload = body.get("request")
        if isinstance(payload, str):  # form-encoded callers send the object as a JSON string
            try:
                payload = json.loads(payload)
            except ValueError:
                payload = None
        if not isinstance(payload, dict):
            raise _ApiError(ERR_MISSING_PARAM, "缺少参数 request")
        for name in ("process_instance_id", "comment_userid", "text"):
            if not payload.get(name):
                raise _ApiError(ERR_MISSING_PARAM, f"缺少参数 request.{name}")
        instance_id = str(payload["process_instance_id"])
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                raise _ApiError(ERR_INVALID_PARAM, f"审批实例不存在: process_instance_id={instance_id}")
            now_text = format_china_time(None, self.clock)
            comment = {"process_instance_id": instance_id, "comment_userid": str(payload["comment_userid"]),
                       "text": str(payload["text"]), "created_at": now_text}
            if payload.get("file"):
                comment["file"] = payload["file"]
            self.comments.append(comment)
            instance.setdefault("operation_records", []).append(
                {"userid": comment["comment_userid"], "date": now_text, "operation_type": "ADD_REMARK",
                 "operation_result": "NONE", "remark": comment["text"]})
        return JSONResponse({"errcode": 0, "errmsg": "ok", "result": True, "success": True,
                             "request_id": self._request_id()})

    # ------------------------------------------------------------------ app
    def _build_app(self) -> FastAPI:
        app = FastAPI(title="DingTalk approval API emulator", docs_url=None, redoc_url=None,
                      openapi_url=None)

        @app.api_route("/gettoken", methods=["GET", "POST"])
        async def gettoken(request: Request) -> Response:
            return await self._run(API_GETTOKEN, request, self._gettoken, needs_token=False)

        @app.post("/topapi/processinstance/listids")
        async def listids(request: Request) -> Response:
            return await self._run(API_LISTIDS, request, self._listids)

        @app.post("/topapi/processinstance/get")
        async def get(request: Request) -> Response:
            return await self._run(API_GET, request, self._get)

        @app.post("/topapi/process/instance/comment/add")
        async def comment_add(request: Request) -> Response:
            return await self._run(API_COMMENT, request, self._comment_add)

        @app.post("/robot/send")
        async def robot_send(request: Request) -> Response:
            return self._robot_send(request.query_params.get("access_token", ""), await request.body())

        self._add_admin_routes(app)
        return app

    def _robot_send(self, token: str, raw: bytes) -> JSONResponse:
        """The group robot's webhook: checks its token and the message shape, keeps the message."""
        if token not in self.robot_tokens:
            # UNVERIFIED: errcode and text the real webhook gives an unknown robot token.
            return JSONResponse({"errcode": 300001, "errmsg": "token is not exist"})
        try:
            message = json.loads(raw or b"null")
        except ValueError:
            return JSONResponse({"errcode": 40035, "errmsg": "缺少参数 json"})
        kind = message.get("msgtype") if isinstance(message, dict) else None
        body = message.get(kind) if kind else None
        if kind not in ROBOT_MESSAGE_TYPES or not isinstance(body, dict):
            return JSONResponse({"errcode": 40035, "errmsg": f"不支持的消息类型 {kind!r} 或缺少消息体"})
        if kind == "markdown" and not (body.get("title") and body.get("text")):
            return JSONResponse({"errcode": 40035, "errmsg": "缺少参数 markdown.title 或 markdown.text"})
        with self._lock:
            self.robot_messages.append(message)
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    def _add_admin_routes(self, app: FastAPI) -> None:
        def bad(message: str) -> JSONResponse:
            return JSONResponse({"ok": False, "error": message}, status_code=400)

        async def read_json(request: Request) -> Any:
            try:
                return await request.json()
            except ValueError:
                return None

        @app.get("/_emulator/health")
        async def health() -> dict:
            return {"ok": True, "emulator": "dingtalk"}

        @app.get("/_emulator/state")
        async def state() -> dict:
            return self.state()

        @app.post("/_emulator/instances")
        async def add_instances(request: Request) -> Response:
            payload = await read_json(request)
            items = payload.get("instances") if isinstance(payload, dict) else payload
            if not isinstance(items, list):
                return bad("expected a JSON list of instances or {\"instances\": [...]}")
            try:
                added = self.add_instances(items)
            except (TypeError, ValueError) as error:
                return bad(str(error))
            return JSONResponse({"ok": True, "added": added, "instances": self.instance_count})

        @app.get("/_emulator/instances/{instance_id}")
        async def get_instance(instance_id: str) -> Response:
            try:
                return JSONResponse(self.get_instance(instance_id))
            except KeyError:
                return JSONResponse({"ok": False, "error": "unknown instance"}, status_code=404)

        @app.post("/_emulator/outcome")
        async def outcome(request: Request) -> Response:
            payload = await read_json(request)
            if not isinstance(payload, dict):
                return bad("expected a JSON object")
            try:
                updated = self.set_outcome(payload["instance_id"], payload["status"],
                                           payload.get("result", ""), payload.get("finish_time"))
            except KeyError as error:
                return bad(f"unknown instance or missing field: {error}")
            except ValueError as error:
                return bad(str(error))
            return JSONResponse({"ok": True, "instance": updated})

        @app.post("/_emulator/faults")
        async def inject(request: Request) -> Response:
            payload = await read_json(request)
            if not isinstance(payload, dict):
                return bad("expected a JSON object")
            try:
                entry = self.inject(payload["fault"], api=payload.get("api"),
                                    times=payload.get("times", 1), rate=payload.get("rate"))
            except KeyError:
                return bad("missing field: fault")
            except ValueError as error:
                return bad(str(error))
            return JSONResponse({"ok": True, "fault": asdict(entry)})

        @app.delete("/_emulator/faults")
        async def clear() -> dict:
            self.clear_faults()
            return {"ok": True}

        @app.get("/_emulator/faults")
        async def list_faults() -> dict:
            return {"faults": [asdict(f) for f in self.faults], "known": known_fault_names()}

        @app.get("/_emulator/comments")
        async def comments() -> dict:
            with self._lock:
                return {"comments": list(self.comments)}

        @app.post("/_emulator/tokens/expire")
        async def expire() -> dict:
            self.expire_tokens()
            return {"ok": True}

        @app.post("/_emulator/config")
        async def config(request: Request) -> Response:
            payload = await read_json(request)
            if not isinstance(payload, dict):
                return bad("expected a JSON object")
            allowed = {"qps", "latency_ms", "token_ttl", "wrap_errors", "qps_penalty_s", "hang_seconds"}
            unknown = set(payload) - allowed
            if unknown:
                return bad(f"unknown settings: {sorted(unknown)}")
            if "wrap_errors" in payload and payload["wrap_errors"] not in WRAP_STYLES:
                return bad(f"wrap_errors must be one of {WRAP_STYLES}")
            for name, value in payload.items():
                setattr(self, name, value)
            return JSONResponse({"ok": True, "config": self.state()["config"]})


# ---------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dk_emulators.dingtalk",
        description="Serve a local emulator of the DingTalk approval API (oapi style).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8801)
    parser.add_argument("--app-key", default="demo-app-key")
    parser.add_argument("--app-secret", default="demo-app-secret")
    parser.add_argument("--qps", type=int, default=20,
                        help="calls per second per app per API (0 = unlimited)")
    parser.add_argument("--latency-ms", type=float, default=0, help="added to every API answer")
    parser.add_argument("--token-ttl", type=float, default=7200, help="access token validity in seconds")
    parser.add_argument("--wrap-errors", choices=WRAP_STYLES, default="alternate")
    parser.add_argument("--process-code", default=DEFAULT_PROCESS_CODE)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--seed-file", help="JSON list of instances to serve")
    source.add_argument("--generate", type=int, metavar="N", help="generate N expense claims")
    parser.add_argument("--start", help="first creation date of generated claims (YYYY-MM-DD, China time); "
                                        "default 30 days ago")
    parser.add_argument("--end", help="end (exclusive) of generated creation dates; default now")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the generator")
    return parser


def main(argv: list[str] | None = None) -> None:
    from dk_emulators import dingtalk_seed

    args = build_parser().parse_args(argv)
    instances: list[dict] = []
    if args.seed_file:
        instances = dingtalk_seed.load_seed_file(args.seed_file)
    elif args.generate:
        now = datetime.now(CHINA_TZ)
        start = (datetime.fromisoformat(args.start).replace(tzinfo=CHINA_TZ) if args.start
                 else now - timedelta(days=30))
        end = datetime.fromisoformat(args.end).replace(tzinfo=CHINA_TZ) if args.end else now
        config = dingtalk_seed.SeedConfig(count=args.generate, start=start, end=end, seed=args.seed,
                                          process_code=args.process_code)
        instances = [claim.instance for claim in dingtalk_seed.generate_claims(config)]
    emulator = DingTalkEmulator(
        app_key=args.app_key, app_secret=args.app_secret, qps=args.qps or None, latency_ms=args.latency_ms,
        token_ttl=args.token_ttl, instances=instances, process_codes=[args.process_code],
        wrap_errors=args.wrap_errors,
    )
    print(f"DingTalk emulator: {emulator.instance_count} instances, process code {args.process_code}, "
          f"http://{args.host}:{args.port}", flush=True)
    serve_forever(emulator.app, args.host, args.port)


if __name__ == "__main__":
    main()
