"""``DingTalkEmulator``: the DingTalk approval API (old ``oapi.dingtalk.com`` style) over real HTTP.

Reproduces what a client meets on the real service: tokens that expire, errors that come back
plain or wrapped under errcode 88 with a string ``sub_code``, the listing rules (page size,
120-day window, 365-day look-back, 10,000-id cap, start-time selection, cursor paging), the
per-app per-API QPS limit with its penalty window, and injectable faults (throttling, busy,
gateway errors, the per-IP ban page, malformed bodies, hangs, dropped connections).

The parts: ``wire`` (names, codes, answers), ``store`` (instances, comments), ``auth`` (tokens,
QPS), ``api`` (the four calls), ``robot`` (the group robot webhook), ``admin`` (``/_emulator/``),
faults from ``dk_emulators.faults``. See docs/emulators-dingtalk.md.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from dk_emulators._server import ServerThread
from dk_emulators.dingtalk import api, contacts
from dk_emulators.dingtalk.admin import add_admin_routes
from dk_emulators.dingtalk.auth import QpsLimiter, TokenIssuer
from dk_emulators.dingtalk.meter import MonthlyQuota, SimulatedClock
from dk_emulators.dingtalk.robot import RobotWebhook
from dk_emulators.dingtalk.seed import load_universe
from dk_emulators.dingtalk.store import InstanceStore
from dk_emulators.dingtalk.stream import (
    DEFAULT_PING_SECONDS,
    DEFAULT_REDELIVERY_SECONDS,
    DEFAULT_RETENTION_SECONDS,
    StreamHub,
)
from dk_emulators.dingtalk.stream_frames import event_type_for
from dk_emulators.dingtalk.stream_routes import add_stream_routes
from dk_emulators.dingtalk.wire import (
    API_COMMENT,
    API_DEPARTMENTS,
    API_GET,
    API_GETTOKEN,
    API_LISTIDS,
    API_PATHS,
    API_USERS,
    BAD_GATEWAY_HTML,
    CHINA_TZ,
    DEFAULT_PROCESS_CODE,
    ERR_APP_QPS,
    ERROR_MESSAGES,
    FAULT_KINDS,
    INTERNAL_ERROR_HTML,
    IP_BAN_HTML,
    TRANSPORT_FAULTS,
    WRAP_STYLES,
    WRAPPABLE_CODES,
    ApiError,
    error_answer,
    parse_errcode_fault,
    request_id,
)
from dk_emulators.faults import DropGuard, Fault, FaultBoard, request_drop

Handler = Callable[["DingTalkEmulator", str, dict, Request], Response]


class DingTalkEmulator:
    """The DingTalk approval API over real HTTP, with knobs for the behaviours clients must survive.

    ``wrap_errors``: "plain", "wrapped" or "alternate" (every other wrappable error is wrapped,
    deterministically, starting with plain). ``qps``: calls per second per app key per API
    (``None``/0 = unlimited). ``qps_penalty_s``: how long an app stays throttled on that API.
    ``clock``: returns the current aware datetime (the 365-day rule and default end_time use it);
    ``set_clock`` / ``advance_clock`` (or ``/_emulator/clock``) pin and move it. ``monthly_quota``:
    metered calls allowed per calendar month (China time) before 90020; None = no quota.
    ``qps``, ``latency_ms``, ``token_ttl``, ``wrap_errors``, ``qps_penalty_s`` and ``hang_seconds``
    may be changed on a running emulator. ``organisation``: the universe document whose contacts
    (departments, users) the contacts calls serve; None = the demo universe, read on first use.
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
        organisation: Mapping[str, Any] | None = None,
        monthly_quota: int | None = None,
        stream_ping_seconds: float = DEFAULT_PING_SECONDS,
        stream_redelivery_seconds: float = DEFAULT_REDELIVERY_SECONDS,
        stream_retention_seconds: float = DEFAULT_RETENTION_SECONDS,
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
        self.sim_clock = SimulatedClock(clock or (lambda: datetime.now(UTC)))
        self.clock: Callable[[], datetime] = self.sim_clock.now
        self.quota = MonthlyQuota(monthly_quota)
        self.store = InstanceStore(process_codes)
        self.tokens = TokenIssuer()
        self.qps_limiter = QpsLimiter()
        self.robot = RobotWebhook()
        self.fault_board = FaultBoard(FAULT_KINDS, targets=tuple(API_PATHS), seed=fault_seed)
        self.calls: Counter[str] = Counter()
        self.in_flight = 0  # API calls being answered right now
        self.peak_in_flight = 0  # most API calls answered at the same time (shows latency overlaps)
        self.base_url: str | None = None

        self._lock = threading.RLock()
        self._wrap_counter = 0
        self._stopping = threading.Event()
        self._host = host
        self._port = port
        self._server: ServerThread | None = None

        self._organisation = organisation
        self._directory: contacts.Directory | None = None
        self.store.add(instances)  # the history the emulator starts with: no events
        self.stream = StreamHub(self.apps, self.clock, ping_seconds=stream_ping_seconds,
                                redelivery_seconds=stream_redelivery_seconds,
                                retention_seconds=stream_retention_seconds)
        self.fastapi = self._build_app()
        self.app = DropGuard(self.fastapi)

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
        self.stream.drop_all()  # clients see their sockets close, not a server that went silent
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
        ``process_code``, or SeedClaims). An existing id is replaced. Returns how many were stored.

        Stream mode: a new instance is announced with a ``start`` event, and one that is already
        over with its ``finish`` / ``terminate`` event too; a replaced one whose state changed to
        an end with that end's event."""
        items = [getattr(item, "instance", item) for item in instances]
        before = {}
        for item in items:
            instance_id = item.get("process_instance_id") if isinstance(item, dict) else None
            if instance_id:
                before[instance_id] = self.store.status_of(instance_id)
        added = self.store.add(items)
        for instance_id, old_status in before.items():
            instance = self.store.get(instance_id)
            if old_status is None:
                self.stream.instance_changed(instance, "start")
            ended = event_type_for(instance.get("status", ""))
            if ended and instance.get("status") != old_status:
                self.stream.instance_changed(instance, ended)
        return added


    def get_instance(self, instance_id: str) -> dict:
        """A copy of the stored instance (with process_instance_id and process_code)."""
        return self.store.get(instance_id)

    @property
    def instance_count(self) -> int:
        return len(self.store)

    @property
    def process_codes(self) -> set[str]:
        return self.store.process_codes

    @property
    def comments(self) -> list[dict]:
        """Comments added through comment_add, oldest first."""
        return self.store.comments

    @property
    def robot_tokens(self) -> set[str]:
        return self.robot.tokens

    @property
    def robot_messages(self) -> list[dict]:
        """Messages the group robot webhook accepted, oldest first."""
        return self.robot.messages

    def set_outcome(self, instance_id: str, status: str, result: str = "",
                    finish_time: datetime | str | None = None) -> dict:
        """Move an instance to a new state (late approval, refusal, termination, cancellation).

        Open tasks are closed and an operation record is appended the way the real service shows
        them. ``finish_time``: aware datetime, China-time string, or None (= now). Returns the
        updated instance. Stream mode: an end (finish, terminate) is announced as an event; every
        outcome change goes through here (the admin outcome call, late approvals), so this is the
        one place events of outcomes are born.
        """
        updated = self.store.set_outcome(instance_id, status, result, finish_time, self.clock)
        ended = event_type_for(updated["status"])
        if ended:
            self.stream.instance_changed(updated, ended)
        return updated

    def delete_instance(self, instance_id: str) -> dict:
        """Delete an instance: listing and detail no longer know it; Stream mode announces a
        ``delete`` event. Returns the deleted instance; KeyError when unknown."""
        deleted = self.store.delete(instance_id)
        self.stream.instance_changed(deleted, "delete")
        return deleted

    @property
    def directory(self) -> contacts.Directory:
        """The contacts served by department/listsub and user/list: built from ``organisation`` (a
        universe document) or, when none was given, from the demo universe on first use."""
        with self._lock:
            if self._directory is None:
                if self._organisation is None:
                    self._organisation = load_universe()
                self._directory = contacts.Directory.from_universe(self._organisation)
            return self._directory

    # ------------------------------------------------------------------ faults and tokens
    def inject(self, fault: str, api: str | None = None, times: int | None = 1,
               rate: float | None = None, **params: Any) -> Fault:
        """Make upcoming calls fail.

        ``api``: one of gettoken / listids / get / comment_add / department_listsub / user_list, or
        None for all.
        Without ``rate`` the fault fires on the next ``times`` matching calls (``times=None``:
        every call until ``clear_faults``). With ``rate`` each matching call fails with that
        probability (seeded, so a run is reproducible) until ``clear_faults``; ``times`` is ignored.
        """
        return self.fault_board.arm(fault, api, None if rate is not None else times, rate, **params)

    def clear_faults(self) -> None:
        self.fault_board.disarm()

    @property
    def faults(self) -> list[dict[str, Any]]:
        """The armed faults, as dicts."""
        return [f.as_dict() for f in self.fault_board.armed]

    def expire_tokens(self) -> None:
        """Make every issued token expired now (calls with it get 42001)."""
        self.tokens.expire_all()

    def revoke_tokens(self) -> None:
        """Invalidate every issued token as a secret reset would (calls with it get 40001)."""
        self.tokens.revoke_all()

    # ------------------------------------------------------------------ clock and quota
    def set_clock(self, moment: datetime) -> datetime:
        """Pin the emulator's clock to ``moment`` (aware); it then moves only when told."""
        return self.sim_clock.set(moment)

    def advance_clock(self, seconds: float) -> datetime:
        """Move the emulator's clock forward (pinning it at real time first if it was free)."""
        return self.sim_clock.advance(seconds)

    @property
    def monthly_quota(self) -> int | None:
        return self.quota.limit

    @monthly_quota.setter
    def monthly_quota(self, value: int | None) -> None:
        self.quota.limit = value

    def usage(self) -> dict:
        """Metered calls of the clock's month (per API, refused ones apart) and of every month seen."""
        return self.quota.usage(self.clock())

    def state(self) -> dict:
        """What the admin ``state`` endpoint shows."""
        with self._lock:
            return {
                "instances": len(self.store),
                "statuses": dict(self.store.statuses()),
                "process_codes": sorted(self.store.process_codes),
                "comments": len(self.comments),
                "robot_messages": len(self.robot_messages),
                "calls": dict(self.calls),
                "throttled": dict(self.qps_limiter.throttled),
                "faults": self.faults,
                "tokens_issued": len(self.tokens),
                "peak_in_flight": self.peak_in_flight,
                "clock": {"now": self.clock().isoformat(), "simulated": self.sim_clock.simulated},
                "usage": self.usage(),
                "config": {
                    "app_keys": sorted(self.apps), "qps": self.qps, "latency_ms": self.latency_ms,
                    "token_ttl": self.token_ttl, "wrap_errors": self.wrap_errors,
                    "qps_penalty_s": self.qps_penalty_s, "hang_seconds": self.hang_seconds,
                    "monthly_quota": self.monthly_quota, **self.stream.config(),
                },
            }

    # ------------------------------------------------------------------ the common path of a call
    def check_qps(self, app_key: str, api: str) -> None:
        """Raise the 90018 error when ``app_key`` is over its QPS on ``api`` (or still penalised)."""
        remaining = self.qps_limiter.admit(app_key, api, self.qps, self.qps_penalty_s)
        if remaining is not None:
            raise self._qps_error(app_key, api, remaining)

    def _qps_error(self, app_key: str, api: str, remaining_s: float) -> ApiError:
        until = (self.clock() + timedelta(seconds=remaining_s)).astimezone(CHINA_TZ)
        message = (f"当前应用[{app_key}]调用该接口[{API_PATHS[api]}]超出了该接口承受的最大qps[{self.qps}]，"
                   f"请降低调用频率，限制将在 {until.strftime('%Y-%m-%d %H:%M:%S')} 结束.")
        return ApiError(ERR_APP_QPS, message)

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
        name = fault.kind
        if name == "http_500":
            return HTMLResponse(INTERNAL_ERROR_HTML, status_code=500)
        if name == "http_502":
            return HTMLResponse(BAD_GATEWAY_HTML, status_code=502)
        if name == "ip_ban_html":
            return HTMLResponse(IP_BAN_HTML.format(request_id=request_id()), status_code=200)
        if name == "ip_ban_json":
            return JSONResponse({"status": 1111, "wait": 5, "source": "x5", "punish": "deny",
                                 "uuid": str(uuid.uuid4())})
        if name == "malformed_json":
            return Response('{"errcode":0,"errmsg":"ok","result":{"list":["', media_type="application/json")
        if name == "hang":
            await self._sleep(self.hang_seconds)
            return None
        if name == "drop":
            request_drop(request)
            return Response(status_code=500)
        raise AssertionError(name)

    async def _run(self, api_name: str, request: Request, handler: Handler, needs_token: bool = True) -> Response:
        """The common path of every API call: count, fault, token, QPS, latency, then the handler."""
        with self._lock:
            self.calls[api_name] += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._answer(api_name, request, handler, needs_token)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _answer(self, api_name: str, request: Request, handler: Handler, needs_token: bool) -> Response:
        fault = self.fault_board.take_first(api_name)
        try:
            if fault is not None and fault.kind in TRANSPORT_FAULTS:
                answer = await self._transport_fault(fault, request)
                if answer is not None:
                    return answer
            elif fault is not None:
                code, forced = parse_errcode_fault(fault.kind)
                message = ERROR_MESSAGES.get(code)
                if message is None:  # 90018 carries the app, the API and the end of the penalty
                    message = self._qps_error(self.app_key, api_name, self.qps_penalty_s).message
                raise ApiError(code, message, wrap=forced)
            if needs_token:
                app_key = self.tokens.app_for(request.query_params.get("access_token"))
                self.check_qps(app_key, api_name)
                self.quota.admit(api_name, self.clock())
            body = await api.read_body(request) if request.method == "POST" else {}
            if self.latency_ms:
                await asyncio.sleep(self.latency_ms / 1000)
            return handler(self, api_name, body, request)
        except ApiError as error:
            if self.latency_ms:
                await asyncio.sleep(self.latency_ms / 1000)
            return error_answer(error, self._should_wrap(error.code, error.wrap))

    # ------------------------------------------------------------------ app
    def _build_app(self) -> FastAPI:
        app = FastAPI(title="DingTalk approval API emulator", docs_url=None, redoc_url=None,
                      openapi_url=None)

        @app.api_route("/gettoken", methods=["GET", "POST"])
        async def gettoken(request: Request) -> Response:
            return await self._run(API_GETTOKEN, request, api.gettoken, needs_token=False)

        @app.post("/topapi/processinstance/listids")
        async def listids(request: Request) -> Response:
            return await self._run(API_LISTIDS, request, api.listids)

        @app.post("/topapi/processinstance/get")
        async def get(request: Request) -> Response:
            return await self._run(API_GET, request, api.get)

        @app.post("/topapi/process/instance/comment/add")
        async def comment_add(request: Request) -> Response:
            return await self._run(API_COMMENT, request, api.comment_add)

        @app.post("/topapi/v2/department/listsub")
        async def department_listsub(request: Request) -> Response:
            return await self._run(API_DEPARTMENTS, request, contacts.department_listsub)

        @app.post("/topapi/v2/user/list")
        async def user_list(request: Request) -> Response:
            return await self._run(API_USERS, request, contacts.user_list)

        @app.post("/robot/send")
        async def robot_send(request: Request) -> Response:
            return self.robot.send(request.query_params.get("access_token", ""), await request.body())

        add_admin_routes(app, self)
        add_stream_routes(app, self)
        return app
