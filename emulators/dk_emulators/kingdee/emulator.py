"""``KingdeeEmulator``: the K/3Cloud WebAPI over real HTTP, assembled from its parts.

``POST /k3cloud/{ServiceName}.common.kdsvc`` for AuthService.ValidateUser / LoginByAppSecret
(``auth``) and DynamicFormService.Save / BatchSave / Submit / Audit / UnAudit / Delete / View /
ExecuteBillQuery / BillQuery (``services``, ``query``); bills in SQLite (``store``); forms and base
data (``forms``); injected faults (``dk_emulators.faults``); admin endpoints under ``/_emulator/``
(``admin``). See docs/emulators-kingdee.md.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from dk_emulators._server import ServerThread
from dk_emulators.demo_data import BASEDATA_FILE, demo_file
from dk_emulators.faults import DropGuard, Fault, FaultBoard, request_drop
from dk_emulators.kingdee.admin import add_admin_routes
from dk_emulators.kingdee.auth import DEMO_APP_ID, DEMO_APP_SECRET, Authenticator
from dk_emulators.kingdee.forms import FORMS, BaseData
from dk_emulators.kingdee.services import FormServices
from dk_emulators.kingdee.store import BillStore
from dk_emulators.kingdee.wire import (
    AUTH_PREFIX,
    FORM_PREFIX,
    MSG_PARAM,
    QUERY_SERVICES,
    KingdeeError,
    error_result,
    json_response,
    loads,
    parse_call,
    short_service,
)

FAULT_KINDS = {
    "latency": "sleep latency_ms before answering",
    "http_500": "HTTP 500 with a gateway JSON body",
    "http_502": "HTTP 502 with a gateway JSON body",
    "html_error": "HTTP 500 with an IIS-style HTML error page",
    "response_error": "HTTP 200 with a 'response_error:' body (server exception)",
    "session_lost": "forget every session before handling the call",
    "drop": "abort the connection without processing the call",
    "commit_then_drop": "process and commit the call, then abort the connection without answering",
    "slow_commit": "wait latency_ms, then process and commit the call and answer (a client whose read "
                   "timeout is shorter has given up before the commit)",
    "commit_then_message_ok": 'process and commit the call, then answer {"Result": {"Message": "ok"}} '
                              "(no ResponseStatus)",
    "commit_then_empty_success": "process and commit the call, then answer IsSuccess true with empty "
                                 "SuccessEntitys and Errors",
    "refuse_whole_call": "answer IsSuccess false, MsgCode 8, one error at DIndex 0, saving nothing "
                         "(a refusal that names no model, as a server exception inside a batch does)",
}

_GATEWAY_BODY = {"code": "502", "message": "Bad Gateway: upstream K/3Cloud application server did not respond",
                 "success": False}
_IIS_PAGE = """<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head>
<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"/>
<title>500 - Internal server error.</title></head>
<body><div id="header"><h1>Server Error</h1></div><div id="content"><div class="content-container"><fieldset>
<h2>500 - Internal server error.</h2>
<h3>There is a problem with the resource you are looking for, and it cannot be displayed.</h3>
</fieldset></div></div></body></html>
"""


def default_basedata() -> Path:
    """The demo base data: ``kingdee_basedata.json`` of the demo folder (``DK_DEMO_DIR``)."""
    return demo_file(BASEDATA_FILE)


class KingdeeEmulator:
    """The K/3Cloud WebAPI over real HTTP; see the module docstring and docs/emulators-kingdee.md.

    ``basedata``: a base-data JSON file or document; None = the demo base data (``default_basedata``).
    """

    def __init__(self, basedata: str | Path | dict[str, Any] | None = None, db_path: str = ":memory:",
                 acct_id: str = "demo-acct", users: dict[str, str] | None = None,
                 apps: dict[str, str] | None = None, latency_ms: int = 0, session_ttl: float = 1800,
                 max_clock_skew_s: float | None = None, seed: int | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.basedata = BaseData.load(default_basedata() if basedata is None else basedata)
        self.store = BillStore(db_path)
        self.acct_id = acct_id
        self.users = dict(users if users is not None else {"demo": "demo-password"})
        self.apps = dict(apps if apps is not None else {DEMO_APP_ID: DEMO_APP_SECRET})
        self.latency_ms = latency_ms
        organization = (self.basedata.forms.get("ORG_Organizations") or [{"id": 1, "name": "", "number": "100"}])[0]
        self.auth = Authenticator(acct_id, self.users, self.apps, session_ttl, max_clock_skew_s, organization)
        self.services = FormServices(self.store, self.basedata)
        self.calls: Counter[str] = Counter()
        self.fault_board = FaultBoard(FAULT_KINDS, normalize=short_service, params={"latency_ms": 0}, seed=seed)
        self._lock = threading.RLock()
        self.app = self._build_app()
        self.asgi = DropGuard(self.app)
        self._server = ServerThread(self.asgi, host=host, port=port)

    # ------------------------------------------------------------------ lifecycle and Python API
    def start(self) -> str:
        root = self._server.start()
        return f"{root}/k3cloud/"

    def stop(self) -> None:
        self._server.stop()

    @property
    def base_url(self) -> str:
        return f"{self._server.root_url}/k3cloud/"

    def connection(self, auth_mode: str = "session") -> dict[str, Any]:
        """An Airflow ``kingdee`` connection to this emulator (its first user; in signature mode its
        first app), as the connection form stores it: JSON for ``AIRFLOW_CONN_<ID>``."""
        user, password = next(iter(self.users.items()))
        extra: dict[str, Any] = {"acct_id": self.acct_id, "lcid": 2052, "org_num": "0", "auth_mode": auth_mode}
        if auth_mode == "signature":
            app_id, password = next(iter(self.apps.items()))
            extra["app_id"] = app_id
        return {"conn_type": "kingdee", "host": self.base_url, "login": user, "password": password, "extra": extra}

    def bills(self, form_id: str = "AP_PAYBILL") -> list[dict[str, Any]]:
        spec = FORMS.get(form_id)
        entry_key = spec.entry_key if spec else "Entries"
        return [bill.as_dict(entry_key) for bill in self.store.all(form_id)]

    def inject(self, fault: str | dict[str, Any], service: str | None = None, times: int | None = 1,
               rate: float | None = None) -> Fault:
        """Arm a fault for the next ``times`` matching calls (None = unlimited), each with probability
        ``rate`` (None = always). ``fault`` is a kind name or ``{"kind": ..., "latency_ms": ...}``;
        ``service`` a short or full service name (None = every call)."""
        params = {"kind": fault} if isinstance(fault, str) else dict(fault)
        kind = params.pop("kind", None)
        if "latency_ms" in params:
            params["latency_ms"] = int(params["latency_ms"])
        return self.fault_board.arm(kind, service, times, rate, **params)

    def clear_faults(self) -> None:
        self.fault_board.disarm()

    @property
    def faults(self) -> list[dict[str, Any]]:
        """The armed faults, as dicts."""
        return [f.as_dict() for f in self.fault_board.armed]

    def drop_sessions(self) -> None:
        self.auth.drop_sessions()

    def reset(self) -> None:
        """Forget bills, sessions, faults and call counts."""
        self.store.reset()
        self.drop_sessions()
        self.clear_faults()
        with self._lock:
            self.calls.clear()

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Kingdee K/3Cloud WebAPI emulator", docs_url=None, redoc_url=None,
                      openapi_url=None)

        @app.post("/k3cloud/{service}.common.kdsvc")
        async def kdsvc(service: str, request: Request) -> Response:
            return await self._handle(service, request)

        add_admin_routes(app, self)
        return app

    # ---------------------------------------------------------------------------- dispatch
    async def _handle(self, service_name: str, request: Request) -> Response:
        service = short_service(service_name)
        with self._lock:
            self.calls[service] += 1
        faults = self.fault_board.take(service)
        # Read before any delay: a client that gave up meanwhile must not stop the call being processed.
        body = await request.body()
        delay_ms = self.latency_ms + sum(f.params["latency_ms"] for f in faults
                                         if f.kind in ("latency", "slow_commit"))
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        kinds = {f.kind for f in faults}
        if "drop" in kinds:
            request_drop(request)
            return Response(status_code=204)
        if "http_500" in kinds:
            return json_response({**_GATEWAY_BODY, "code": "500",
                                  "message": "Internal Server Error from gateway"}, status_code=500)
        if "http_502" in kinds:
            return json_response(_GATEWAY_BODY, status_code=502)
        if "html_error" in kinds:
            return HTMLResponse(_IIS_PAGE, status_code=500)
        if "response_error" in kinds:
            return PlainTextResponse("response_error:System.Data.SqlClient.SqlException (0x80131904): "
                                     "Transaction (Process ID 87) was deadlocked on lock resources.")
        if "session_lost" in kinds:
            self.drop_sessions()
        if "refuse_whole_call" in kinds and self.auth.authenticate(request) is None:
            return json_response(error_result("第1条数据的格式不正确，请检查后重试", MSG_PARAM, "Model"))
        response = self._dispatch(service_name, service, body, request)
        if "commit_then_drop" in kinds:
            request_drop(request)
        if "commit_then_message_ok" in kinds:
            return json_response({"Result": {"Message": "ok"}})
        if "commit_then_empty_success" in kinds:
            return json_response({"Result": {"ResponseStatus": {"IsSuccess": True, "Errors": [],
                                                                "SuccessEntitys": [], "SuccessMessages": [],
                                                                "MsgCode": 0}}})
        return response

    def _dispatch(self, service_name: str, service: str, body: bytes, request: Request) -> Response:
        if service_name.startswith(AUTH_PREFIX):
            try:
                payload = loads(body) if body.strip() else {}
            except ValueError:
                payload = {}
            if service == "ValidateUser":
                return self.auth.validate_user(payload)
            if service == "LoginByAppSecret":
                return self.auth.login_by_app_secret(payload)
        if not service_name.startswith(FORM_PREFIX) or service not in self.services.handlers:
            return PlainTextResponse(
                f"response_error:服务“{service_name}”不存在或未注册 (service not found)", status_code=200)
        is_query = service in QUERY_SERVICES
        auth_failure = self.auth.authenticate(request)
        if auth_failure is not None:
            status_code, payload = auth_failure
            if status_code != 200:
                return PlainTextResponse(payload, status_code=status_code)
            return json_response([[payload]] if is_query else payload)
        try:
            form_id, data = parse_call(body, service)
            result = self.services.handlers[service](form_id, data)
        except KingdeeError as exc:
            result = error_result(exc.message, exc.msg_code, exc.field_name)
            if is_query:
                result = [[result]]
        return json_response(result)
