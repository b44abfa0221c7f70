"""A local emulator of the Kingdee K/3Cloud WebAPI (AP_PAYBILL), faithful to the project's reference.

``POST /k3cloud/{ServiceName}.common.kdsvc`` for AuthService.ValidateUser / LoginByAppSecret and
DynamicFormService.Save / BatchSave / Submit / Audit / UnAudit / Delete / View / ExecuteBillQuery /
BillQuery; session cookies and per-request signatures; bills in SQLite; base data from a JSON file;
fault injection; admin endpoints under ``/_emulator/``. See docs/emulators-kingdee.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import random
import sqlite3
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from dk_emulators import kingdee_filter
from dk_emulators._server import ServerThread, drop_connection, fault_fires, serve_forever

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASEDATA = REPO_ROOT / "include" / "demo" / "kingdee_basedata.json"

AUTH_PREFIX = "Kingdee.BOS.WebApi.ServicesStub.AuthService."
FORM_PREFIX = "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService."
SESSION_LOST = "会话信息已丢失，请重新登录"
PASSPORT_FAILED = "Fail to verify thirty passport"
# The SDK's fixed XOR key (rot13 of the obfuscated constant in k3cloud_webapi_sdk.util.encode_util).
APP_SECRET_XOR_KEY = "0054f397c6234378b09ca7d3e5debce7"
DEMO_APP_ID = "300001_ZGluZ3RhbGsta2luZ2RlZS1kZW1vLWFw"
DEMO_APP_SECRET = "5f0c3a7e9b2d4c6e8a1b3d5f7e9c0a2b"

# MsgCode values (reference: 0 default, 1 session lost, 4 exception, 8 bad parameter, 9 field or
# value does not exist, 10 no data, 11 validation failed, 12 not allowed).
MSG_OK, MSG_SESSION, MSG_EXCEPTION, MSG_PARAM, MSG_NOT_EXIST, MSG_NO_DATA, MSG_INVALID = 0, 1, 4, 8, 9, 10, 11

DROP_SCOPE_KEY = "kingdee_emulator.drop_connection"


# ------------------------------------------------------------------------------------ JSON, bools

def dumps(value: Any) -> str:
    """JSON text where Decimal becomes an exact JSON number (json.dumps would need float)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(str(k), ensure_ascii=False) + ":" + dumps(v)
                              for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, datetime):
        return json.dumps(value.strftime("%Y-%m-%dT%H:%M:%S"))
    return json.dumps(value, ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    """Parse JSON keeping every non-integer number as Decimal."""
    return json.loads(text, parse_float=Decimal)


def parse_bool(value: Any, default: bool) -> bool:
    """Lenient boolean: true/false, "true"/"false" in any case, 1/0, "1"/"0"; else ``default``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"true", "1", "yes"}:
            return True
        if lowered in {"false", "0", "no"}:
            return False
    return default


def json_response(payload: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=dumps(payload), status_code=status_code, media_type="application/json",
                    headers=headers)


# ------------------------------------------------------------------------------------- signature

def hmac_b64(message: str, key: str) -> str:
    """Base64 of the lower-case hex HMAC-SHA256 text (what K/3Cloud calls the signature)."""
    digest_hex = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()
    return base64.b64encode(digest_hex.encode("ascii")).decode("ascii")


def client_secret(app_id: str) -> str:
    """``client_sec`` for an app id ``<clientId>_<32-char part>``: base64(b64decode(part) XOR key)."""
    _, _, part = app_id.partition("_")
    if len(part) != 32:
        return ""  # the SDK signs with an empty key in that case; so must the server
    try:
        raw = base64.b64decode(part, validate=True)
    except (binascii.Error, ValueError):
        return ""
    key = APP_SECRET_XOR_KEY.encode("ascii")
    return base64.b64encode(bytes(b ^ key[i] for i, b in enumerate(raw))).decode("ascii")


def encode_path(path: str) -> str:
    """The signed path: percent-encoded, ``/`` included (``%2Fk3cloud%2F...``)."""
    return quote(path, safe="", encoding="utf-8")


def signature_headers(url_path: str, acct_id: str, user_name: str, app_id: str, app_secret: str,
                      lcid: int | str, org_num: int | str, timestamp: int | str) -> dict[str, str]:
    """The signature headers a client sends for ``url_path`` (path after the host) at ``timestamp``."""
    ts = str(timestamp)
    api_sign = f"POST\n{encode_path(url_path)}\n\nx-api-nonce:{ts}\nx-api-timestamp:{ts}\n"
    app_data = f"{acct_id},{user_name},{lcid},{org_num}"
    return {
        "X-Api-ClientID": app_id.split("_", 1)[0],
        "X-Api-Auth-Version": "2.0",
        "x-api-timestamp": ts,
        "x-api-nonce": ts,
        "x-api-signheaders": "x-api-timestamp,x-api-nonce",
        "X-Api-Signature": hmac_b64(api_sign, client_secret(app_id)),
        "X-Kd-Appkey": app_id,
        "X-Kd-Appdata": base64.b64encode(app_data.encode("utf-8")).decode("ascii"),
        "X-Kd-Signature": hmac_b64(app_id + app_data, app_secret),
    }


# ------------------------------------------------------------------------------------- base data

class BaseData:
    """Base-data records by form id, looked up by number (case-insensitive) or internal id."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.forms: dict[str, list[dict[str, Any]]] = {
            form_id: list(records) for form_id, records in document.get("forms", {}).items()
        }
        self._by_number = {
            form_id: {str(r["number"]).upper(): r for r in records} for form_id, records in self.forms.items()
        }
        self._by_id = {form_id: {int(r["id"]): r for r in records} for form_id, records in self.forms.items()}

    @classmethod
    def load(cls, source: str | Path | dict[str, Any]) -> BaseData:
        if isinstance(source, dict):
            return cls(source)
        return cls(json.loads(Path(source).read_text(encoding="utf-8")))

    def find(self, form_id: str, number: str | None = None, record_id: int | None = None
             ) -> dict[str, Any] | None:
        if number is not None:
            return self._by_number.get(form_id, {}).get(str(number).upper())
        if record_id is not None:
            return self._by_id.get(form_id, {}).get(int(record_id))
        return None


def reference_key(value: Any) -> tuple[str | None, int | None]:
    """(number, id) a base-data field value points at: ``{"FNumber": ..}`` (any case) or ``{"FID": n}``."""
    if not isinstance(value, dict):
        return None, None
    lowered = {str(k).lower(): v for k, v in value.items()}
    number = lowered.get("fnumber")
    if number not in (None, ""):
        return str(number), None
    for key in ("fid", "fmasterid", "id"):
        raw = lowered.get(key)
        if raw not in (None, "", 0, "0"):
            try:
                return None, int(raw)
            except (TypeError, ValueError):
                return None, None
    return None, None


# ------------------------------------------------------------------------------ form definitions

@dataclass(frozen=True)
class FieldSpec:
    key: str
    label: str
    kind: str = "text"  # text | date | decimal | ref | unit_type
    ref_form: str | None = None  # base-data form, or for a dynamic ref the key of its type field
    dynamic: bool = False  # ref_form names the sibling field holding the form id
    required: bool = False


UNIT_TYPES = ("BD_Supplier", "BD_Customer", "BD_Department", "BD_Empinfo", "FIN_OTHERS", "BD_BANK")


@dataclass(frozen=True)
class FormSpec:
    form_id: str
    name: str
    number_prefix: str
    entry_key: str
    entry_label: str
    header: dict[str, FieldSpec]
    entry: dict[str, FieldSpec]


def _fields(*specs: FieldSpec) -> dict[str, FieldSpec]:
    return {spec.key.upper(): spec for spec in specs}


AP_PAYBILL = FormSpec(
    form_id="AP_PAYBILL", name="付款单", number_prefix="FKD", entry_key="FPAYBILLENTRY",
    entry_label="付款单明细",
    header=_fields(
        FieldSpec("FBillTypeID", "单据类型", "ref", "BOS_BillType", required=True),
        FieldSpec("FDATE", "业务日期", "date", required=True),
        FieldSpec("FCONTACTUNITTYPE", "往来单位类型", "unit_type", required=True),
        FieldSpec("FCONTACTUNIT", "往来单位", "ref", "FCONTACTUNITTYPE", dynamic=True, required=True),
        FieldSpec("FRECTUNITTYPE", "收款单位类型", "unit_type", required=True),
        FieldSpec("FRECTUNIT", "收款单位", "ref", "FRECTUNITTYPE", dynamic=True, required=True),
        FieldSpec("FCURRENCYID", "币别", "ref", "BD_Currency", required=True),
        FieldSpec("FSETTLECUR", "结算币别", "ref", "BD_Currency"),
        FieldSpec("FPAYORGID", "付款组织", "ref", "ORG_Organizations", required=True),
        FieldSpec("FSETTLEORGID", "结算组织", "ref", "ORG_Organizations", required=True),
        FieldSpec("FPURCHASEORGID", "采购组织", "ref", "ORG_Organizations"),
        FieldSpec("FDepartment", "部门", "ref", "BD_Department"),
        FieldSpec("FPURCHASEDEPTID", "采购部门", "ref", "BD_Department"),
        FieldSpec("FREMARK", "备注"),
        FieldSpec("FTHIRDBILLNO", "第三方单据编号"),
        FieldSpec("FEXCHANGERATE", "汇率", "decimal"),
        FieldSpec("FBUSINESSTYPE", "业务类型"),
    ),
    entry=_fields(
        FieldSpec("FSETTLETYPEID", "结算方式", "ref", "BD_SETTLETYPE", required=True),
        FieldSpec("FPURPOSEID", "付款用途", "ref", "CN_RECPAYPURPOSE", required=True),
        FieldSpec("FPAYTOTALAMOUNTFOR", "应付金额", "decimal", required=True),
        FieldSpec("FCOSTID", "费用项目", "ref", "BD_Expense"),
        FieldSpec("FEXPENSEDEPTID_E", "费用承担部门", "ref", "BD_Department"),
        FieldSpec("FMATERIALID", "物料编码", "ref", "BD_MATERIAL"),
        FieldSpec("FCOMMENT", "备注"),
        FieldSpec("FOPPOSITEBANKACCOUNT", "对方银行账号"),
        FieldSpec("FOPPOSITECCOUNTNAME", "对方账户名称"),
        FieldSpec("FOPPOSITEBANKNAME", "对方开户行"),
        FieldSpec("FPRICE", "含税单价", "decimal"),
        FieldSpec("FQTY", "数量", "decimal"),
        FieldSpec("FPOSTDATE", "登账日期", "date"),
    ),
)
FORMS: dict[str, FormSpec] = {AP_PAYBILL.form_id: AP_PAYBILL}

STATUS_NAMES = {"Z": "暂存", "A": "创建", "B": "审核中", "C": "已审核", "D": "重新审核"}


# ---------------------------------------------------------------------------------------- storage

@dataclass
class StoredBill:
    fid: int
    form_id: str
    bill_no: str
    status: str
    created: str
    header: dict[str, Any]
    entries: list[dict[str, Any]]

    def as_dict(self, entry_key: str) -> dict[str, Any]:
        reserved = {"FID", "FBILLNO", "FDOCUMENTSTATUS", "FCREATEDATE", entry_key.upper()}
        result = {k: v for k, v in self.header.items() if k.upper() not in reserved}
        result.update({"FID": self.fid, "FBillNo": self.bill_no, "FDOCUMENTSTATUS": self.status,
                       "FCREATEDATE": self.created, entry_key: [dict(e) for e in self.entries]})
        return result


class DuplicateNumber(Exception):
    pass


class BillStore:
    """Bills in SQLite (a file or ``:memory:``); one connection guarded by a lock, so thread-safe."""

    def __init__(self, db_path: str = ":memory:") -> None:
        self.lock = threading.RLock()
        self._conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL" if db_path != ":memory:" else "PRAGMA journal_mode=MEMORY")
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS bills (
                fid INTEGER PRIMARY KEY, form_id TEXT NOT NULL, bill_no TEXT NOT NULL,
                status TEXT NOT NULL, created TEXT NOT NULL, header TEXT NOT NULL, entries TEXT NOT NULL,
                UNIQUE (form_id, bill_no));
            CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            """
        )
        # Parsed bills per form for queries; dropped on every write so it never goes stale.
        self._all_cache: dict[str, list[StoredBill]] = {}

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    def begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        self._conn.execute("ROLLBACK")
        self._all_cache.clear()

    def next_value(self, name: str, start: int) -> int:
        row = self._conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        value = start if row is None else row[0] + 1
        self._conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                           "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))
        return value

    def number_taken(self, form_id: str, bill_no: str, except_fid: int | None = None) -> bool:
        row = self._conn.execute("SELECT fid FROM bills WHERE form_id = ? AND bill_no = ?",
                                 (form_id, bill_no)).fetchone()
        return row is not None and row[0] != except_fid

    def insert(self, bill: StoredBill) -> None:
        self._all_cache.clear()
        try:
            self._conn.execute(
                "INSERT INTO bills (fid, form_id, bill_no, status, created, header, entries) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (bill.fid, bill.form_id, bill.bill_no, bill.status, bill.created, dumps(bill.header),
                 dumps(bill.entries)))
        except sqlite3.IntegrityError as exc:
            raise DuplicateNumber(bill.bill_no) from exc

    def update(self, bill: StoredBill) -> None:
        self._all_cache.clear()
        self._conn.execute(
            "UPDATE bills SET bill_no = ?, status = ?, header = ?, entries = ? WHERE fid = ?",
            (bill.bill_no, bill.status, dumps(bill.header), dumps(bill.entries), bill.fid))

    def delete(self, fid: int) -> None:
        self._all_cache.clear()
        self._conn.execute("DELETE FROM bills WHERE fid = ?", (fid,))

    def _rows(self, where: str, params: tuple[Any, ...]) -> list[StoredBill]:
        with self.lock:
            rows = self._conn.execute(
                "SELECT fid, form_id, bill_no, status, created, header, entries FROM bills "
                f"WHERE {where} ORDER BY fid", params).fetchall()
        return [StoredBill(r[0], r[1], r[2], r[3], r[4], loads(r[5]), loads(r[6])) for r in rows]

    def all(self, form_id: str) -> list[StoredBill]:
        """Every bill of the form, oldest first; callers must not modify the returned objects."""
        with self.lock:
            if form_id not in self._all_cache:
                self._all_cache[form_id] = self._rows("form_id = ?", (form_id,))
            return list(self._all_cache[form_id])

    def by_number(self, form_id: str, bill_no: str) -> StoredBill | None:
        found = self._rows("form_id = ? AND bill_no = ?", (form_id, bill_no))
        return found[0] if found else None

    def by_id(self, form_id: str, fid: int) -> StoredBill | None:
        found = self._rows("form_id = ? AND fid = ?", (form_id, fid))
        return found[0] if found else None

    def count(self) -> int:
        with self.lock:
            return self._conn.execute("SELECT COUNT(*) FROM bills").fetchone()[0]

    def reset(self) -> None:
        with self.lock:
            self._conn.execute("DELETE FROM bills")
            self._conn.execute("DELETE FROM counters")
            self._all_cache.clear()


# ------------------------------------------------------------------------------------------ faults

FAULT_KINDS = {
    "latency": "sleep latency_ms before answering",
    "http_500": "HTTP 500 with a gateway JSON body",
    "http_502": "HTTP 502 with a gateway JSON body",
    "html_error": "HTTP 500 with an IIS-style HTML error page",
    "response_error": "HTTP 200 with a 'response_error:' body (server exception)",
    "session_lost": "forget every session before handling the call",
    "drop": "abort the connection without processing the call",
    "commit_then_drop": "process and commit the call, then abort the connection without answering",
    "refuse_whole_call": "answer IsSuccess false, MsgCode 8, one error at DIndex 0, saving nothing "
                         "(a refusal that names no model, as a server exception inside a batch does)",
}


@dataclass
class Fault:
    kind: str
    service: str | None = None
    times: int | None = 1
    rate: float | None = None
    latency_ms: int = 0
    fired: int = 0

    def matches(self, service: str) -> bool:
        return self.service is None or _short_service(self.service) == service

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "service": self.service, "times": self.times, "rate": self.rate,
                "latency_ms": self.latency_ms, "fired": self.fired}


def _short_service(name: str) -> str:
    return name.rsplit(".", 1)[-1]


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


# ---------------------------------------------------------------------------------------- sessions

@dataclass
class Session:
    user: str
    asp_id: str
    expires_at: float


@dataclass
class CallContext:
    """What a DynamicFormService call sees after authentication."""

    user: str
    mode: str  # session | signature


@dataclass
class ModelError:
    field: str | None
    message: str
    msg_code: int = MSG_INVALID


@dataclass
class SaveOptions:
    verify_base_data: bool = False
    auto_submit_audit: bool = False
    delete_entry: bool = True
    need_return_fields: list[str] = field(default_factory=list)


class KingdeeError(Exception):
    """A whole-call failure answered as a ResponseStatus with ``msg_code``."""

    def __init__(self, message: str, msg_code: int = MSG_EXCEPTION, field_name: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.msg_code = msg_code
        self.field_name = field_name


def response_status(errors: list[dict[str, Any]] | None = None, success: list[dict[str, Any]] | None = None,
                    msg_code: int = MSG_OK) -> dict[str, Any]:
    errors = errors or []
    ok = not errors
    status: dict[str, Any] = {"IsSuccess": ok, "Errors": errors, "SuccessEntitys": success or [],
                              "SuccessMessages": [], "MsgCode": msg_code if not ok else MSG_OK}
    if not ok:
        status = {"ErrorCode": 500, **status}
    return status


def error_result(message: str, msg_code: int, field_name: str | None = None) -> dict[str, Any]:
    return {"Result": {"ResponseStatus": response_status(
        [{"FieldName": field_name, "Message": message, "DIndex": 0}], msg_code=msg_code)}}


QUERY_SERVICES = {"ExecuteBillQuery", "BillQuery"}
_CHINA_TIME_ZONE = {"OffsetTicks": 288000000000, "StandardName": "(UTC+08:00)北京，重庆，香港特别行政区，乌鲁木齐",
                    "Id": 230, "Number": "1078_SYS", "CanBeUsed": True}


class DropGuard:
    """ASGI wrapper that aborts the TCP connection instead of answering when a route asked for it
    (and switches Nagle off on every connection).

    A route sets ``scope[DROP_SCOPE_KEY]``; this wrapper sits outside FastAPI so that it holds
    uvicorn's own ``send`` (FastAPI's middlewares wrap it), which ``drop_connection`` needs.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dropped = False

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal dropped
            if dropped:
                return
            if message["type"] == "http.response.start" and scope.get(DROP_SCOPE_KEY):
                dropped = True
                drop_connection(send)
                return
            await send(message)

        await self.app(scope, receive, guarded_send)


# ---------------------------------------------------------------------------------------- emulator

class KingdeeEmulator:
    """The K/3Cloud WebAPI over real HTTP; see the module docstring and docs/emulators-kingdee.md."""

    def __init__(self, basedata: str | Path | dict[str, Any] = DEFAULT_BASEDATA, db_path: str = ":memory:",
                 acct_id: str = "demo-acct", users: dict[str, str] | None = None,
                 apps: dict[str, str] | None = None, latency_ms: int = 0, session_ttl: float = 1800,
                 max_clock_skew_s: float | None = None, seed: int | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.basedata = BaseData.load(basedata)
        self.store = BillStore(db_path)
        self.acct_id = acct_id
        self.users = dict(users if users is not None else {"demo": "demo-password"})
        self.apps = dict(apps if apps is not None else {DEMO_APP_ID: DEMO_APP_SECRET})
        self.latency_ms = latency_ms
        self.session_ttl = session_ttl
        self.max_clock_skew_s = max_clock_skew_s
        self.calls: Counter[str] = Counter()
        self._faults: list[Fault] = []
        self._sessions: dict[str, Session] = {}
        self._asp_sessions: dict[str, str] = {}
        self._lock = threading.RLock()
        self._random = random.Random(seed)
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
        ``rate`` (None = always). ``fault`` is a kind name or ``{"kind": ..., "latency_ms": ...}``."""
        spec = {"kind": fault} if isinstance(fault, str) else dict(fault)
        kind = spec.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
        if rate is not None and not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        armed = Fault(kind=kind, service=service, times=times, rate=rate,
                      latency_ms=int(spec.get("latency_ms", 0)))
        with self._lock:
            self._faults.append(armed)
        return armed

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.as_dict() for f in self._faults]

    def drop_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._asp_sessions.clear()

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

        @app.get("/_emulator/health")
        async def health() -> Response:
            with self._lock:
                sessions = len(self._sessions)
            return json_response({"status": "ok", "bills": self.store.count(), "sessions": sessions,
                                  "acct_id": self.acct_id})

        @app.get("/_emulator/bills")
        async def list_bills(form_id: str = "AP_PAYBILL") -> Response:
            return json_response(self.bills(form_id))

        @app.get("/_emulator/calls")
        async def list_calls() -> Response:
            with self._lock:
                return json_response(dict(self.calls))

        @app.get("/_emulator/faults")
        async def list_faults() -> Response:
            return json_response(self.faults)

        @app.post("/_emulator/faults")
        async def add_fault(request: Request) -> Response:
            try:
                body = loads(await request.body())
                rate = body.get("rate")
                armed = self.inject({"kind": body.get("fault") or body.get("kind"),
                                     "latency_ms": body.get("latency_ms", 0)},
                                    service=body.get("service"), times=body.get("times", 1),
                                    rate=None if rate is None else float(rate))
            except (ValueError, AttributeError, TypeError) as exc:
                return json_response({"error": str(exc)}, status_code=400)
            return json_response(armed.as_dict())

        @app.delete("/_emulator/faults")
        async def delete_faults() -> Response:
            self.clear_faults()
            return json_response({"cleared": True})

        @app.post("/_emulator/sessions/drop")
        async def drop_all_sessions() -> Response:
            self.drop_sessions()
            return json_response({"dropped": True})

        @app.post("/_emulator/reset")
        async def reset() -> Response:
            self.reset()
            return json_response({"reset": True})

        return app

    # ---------------------------------------------------------------------------- dispatch
    def _take_faults(self, service: str) -> list[Fault]:
        taken: list[Fault] = []
        with self._lock:
            for fault in list(self._faults):
                if fault.matches(service) and fault_fires(fault, self._faults, self._random):
                    taken.append(fault)
        return taken

    async def _handle(self, service_name: str, request: Request) -> Response:
        service = _short_service(service_name)
        with self._lock:
            self.calls[service] += 1
        faults = self._take_faults(service)
        delay_ms = self.latency_ms + sum(f.latency_ms for f in faults if f.kind == "latency")
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        kinds = {f.kind for f in faults}
        if "drop" in kinds:
            request.scope[DROP_SCOPE_KEY] = True
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
        body = await request.body()
        if "refuse_whole_call" in kinds and self._authenticate(request) is None:
            return json_response(error_result("第1条数据的格式不正确，请检查后重试", MSG_PARAM, "Model"))
        response = self._dispatch(service_name, service, body, request)
        if "commit_then_drop" in kinds:
            request.scope[DROP_SCOPE_KEY] = True
        return response

    def _dispatch(self, service_name: str, service: str, body: bytes, request: Request) -> Response:
        if service_name.startswith(AUTH_PREFIX):
            try:
                payload = loads(body) if body.strip() else {}
            except ValueError:
                payload = {}
            if service == "ValidateUser":
                return self._validate_user(payload)
            if service == "LoginByAppSecret":
                return self._login_by_app_secret(payload)
        if not service_name.startswith(FORM_PREFIX) or service not in SERVICE_HANDLERS:
            return PlainTextResponse(
                f"response_error:服务“{service_name}”不存在或未注册 (service not found)", status_code=200)
        is_query = service in QUERY_SERVICES
        auth_failure = self._authenticate(request)
        if auth_failure is not None:
            status_code, payload = auth_failure
            if status_code != 200:
                return PlainTextResponse(payload, status_code=status_code)
            return json_response([[payload]] if is_query else payload)
        try:
            form_id, data = parse_call(body, service)
            result = SERVICE_HANDLERS[service](self, form_id, data)
        except KingdeeError as exc:
            result = error_result(exc.message, exc.msg_code, exc.field_name)
            if is_query:
                result = [[result]]
        return json_response(result)

    # -------------------------------------------------------------------------- authentication
    def _new_session(self, user: str) -> tuple[str, str]:
        kd_id, asp_id = str(uuid.uuid4()), uuid.uuid4().hex[:24]
        with self._lock:
            self._sessions[kd_id] = Session(user, asp_id, time.monotonic() + self.session_ttl)
            self._asp_sessions[asp_id] = kd_id
        return kd_id, asp_id

    def _login_answer(self, user: str) -> Response:
        kd_id, asp_id = self._new_session(user)
        org = (self.basedata.forms.get("ORG_Organizations") or [{"id": 1, "name": "", "number": "100"}])[0]
        user_id = 100000 + sorted(self.users).index(user) if user in self.users else 100000
        answer = {
            "Message": None, "MessageCode": "CheckPasswordPolicy", "LoginResultType": 1,
            "Context": {
                "UserLocale": "zh-CN", "LogLocale": "zh-CN", "DBid": self.acct_id, "DatabaseType": 3,
                "SessionId": asp_id, "UseLanguages": [{"LocaleId": 2052, "LocaleName": "中文(简体)",
                                                       "Alias": "CN"}],
                "UserId": user_id, "UserName": user, "CustomName": "K/3Cloud emulator",
                "DisplayVersion": "8.2.0.emulator", "DataCenterName": self.acct_id,
                "UserToken": str(uuid.uuid4()),
                "CurrentOrganizationInfo": {"ID": org["id"], "AcctOrgType": "1", "Name": org["name"],
                                            "FunctionIds": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 101]},
                "IsCH_ZH_AutoTrans": False, "ClientType": 32, "WeiboAuthInfo": None,
                "UTimeZone": dict(_CHINA_TIME_ZONE), "STimeZone": dict(_CHINA_TIME_ZONE),
                "GDCID": "", "Gsid": None, "TRLevel": 0, "ProductEdition": 0, "DataCenterNumber": None,
                "ContextResultType": 0,
            },
            "KDSVCSessionId": kd_id, "FormId": None, "RedirectFormParam": None, "FormInputObject": None,
            "ErrorStackTrace": None, "Lcid": 0, "AccessToken": None, "CustomParam": {},
            "KdAccessResult": None, "IsSuccessByAPI": True,
        }
        response = json_response(answer)
        response.set_cookie("kdservice-sessionid", kd_id, path="/")
        response.set_cookie("ASP.NET_SessionId", asp_id, path="/", httponly=True)
        return response

    @staticmethod
    def _login_failure(result_type: int, message: str) -> Response:
        return json_response({"Message": message, "MessageCode": None, "LoginResultType": result_type,
                              "Context": None, "KDSVCSessionId": None, "FormId": None,
                              "RedirectFormParam": None, "FormInputObject": None, "ErrorStackTrace": None,
                              "Lcid": 0, "AccessToken": None, "CustomParam": {}, "KdAccessResult": None,
                              "IsSuccessByAPI": False})

    def _validate_user(self, payload: Any) -> Response:
        if isinstance(payload, dict) and isinstance(payload.get("parameters"), list):
            params = [*payload["parameters"], None, None, None, None][:4]
            acct, user, password = params[0], params[1], params[2]
        elif isinstance(payload, dict):
            lowered = {str(k).lower(): v for k, v in payload.items()}
            acct, user, password = lowered.get("acctid"), lowered.get("username"), lowered.get("password")
        else:
            acct = user = password = None
        if str(acct) != self.acct_id:
            return self._login_failure(-1, f"数据中心“{acct}”不存在或已停用")
        if user is None or self.users.get(str(user)) != password:
            return self._login_failure(0, "用户名或密码错误！")
        return self._login_answer(str(user))

    def _login_by_app_secret(self, payload: Any) -> Response:
        params = payload.get("parameters") if isinstance(payload, dict) else None
        if not isinstance(params, list) or len(params) < 4:
            lowered = {str(k).lower(): v for k, v in payload.items()} if isinstance(payload, dict) else {}
            params = [lowered.get("acctid"), lowered.get("username"), lowered.get("appid"),
                      lowered.get("appsecret"), lowered.get("lcid")]
        acct, user, app_id, app_secret = params[0], params[1], params[2], params[3]
        if str(acct) != self.acct_id:
            return self._login_failure(-1, f"数据中心“{acct}”不存在或已停用")
        if app_id not in self.apps or not hmac.compare_digest(str(self.apps[app_id]), str(app_secret)):
            return self._login_failure(0, "第三方系统登录授权验证失败：应用ID或应用密钥错误")
        if str(user) not in self.users:
            return self._login_failure(0, f"用户“{user}”不存在")
        return self._login_answer(str(user))

    def _authenticate(self, request: Request) -> tuple[int, Any] | None:
        """None when the call may proceed; else (HTTP status, body) of the refusal."""
        headers = request.headers
        if headers.get("x-kd-appkey"):
            return self._verify_signature(request)
        session_id = (headers.get("kdservice-sessionid") or request.cookies.get("kdservice-sessionid"))
        with self._lock:
            if not session_id or session_id not in self._sessions:
                asp = request.cookies.get("ASP.NET_SessionId")
                session_id = self._asp_sessions.get(asp or "")
            session = self._sessions.get(session_id or "")
            now = time.monotonic()
            if session is None:
                return 200, error_result(SESSION_LOST, MSG_SESSION)
            if session.expires_at <= now:
                self._sessions.pop(session_id, None)
                self._asp_sessions.pop(session.asp_id, None)
                return 200, error_result(SESSION_LOST, MSG_SESSION)
            session.expires_at = now + self.session_ttl  # sliding, like an ASP.NET session
        return None

    def _verify_signature(self, request: Request) -> tuple[int, Any] | None:
        headers = request.headers
        lost = (200, error_result(SESSION_LOST, MSG_SESSION))
        app_id = headers.get("x-kd-appkey", "")
        secret = self.apps.get(app_id)
        if secret is None or headers.get("x-api-clientid") != app_id.split("_", 1)[0]:
            return lost
        try:
            app_data = base64.b64decode(headers.get("x-kd-appdata", ""), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return lost
        if not hmac.compare_digest(headers.get("x-kd-signature", ""), hmac_b64(app_id + app_data, secret)):
            return lost
        signed = {h.strip().lower() for h in headers.get("x-api-signheaders", "").split(",")}
        if signed != {"x-api-timestamp", "x-api-nonce"}:
            return lost
        timestamp, nonce = headers.get("x-api-timestamp", ""), headers.get("x-api-nonce", "")
        path = unquote(request.scope.get("raw_path", b"").decode("latin-1") or request.url.path)
        query = request.scope.get("query_string", b"").decode("latin-1")
        if query:
            path = f"{path}?{query}"
        api_sign = f"POST\n{encode_path(path)}\n\nx-api-nonce:{nonce}\nx-api-timestamp:{timestamp}\n"
        if not hmac.compare_digest(headers.get("x-api-signature", ""), hmac_b64(api_sign, client_secret(app_id))):
            return lost
        if self.max_clock_skew_s is not None:
            try:
                skew = abs(time.time() - int(timestamp))
            except ValueError:
                return lost
            if skew > self.max_clock_skew_s:
                return lost
        parts = app_data.split(",")
        if len(parts) < 2 or parts[0] != self.acct_id:
            return 500, PASSPORT_FAILED
        if parts[1] not in self.users:
            return lost
        return None

    # ------------------------------------------------------------------------------ services
    def _form(self, form_id: str | None) -> FormSpec:
        if not form_id:
            raise KingdeeError("参数FormId不能为空", MSG_PARAM)
        spec = FORMS.get(str(form_id)) or next(
            (f for f in FORMS.values() if f.form_id.upper() == str(form_id).upper()), None)
        if spec is None:
            raise KingdeeError(f"业务对象“{form_id}”不存在或未发布", MSG_NOT_EXIST)
        return spec

    def _save(self, form_id: str | None, data: dict[str, Any], batch: bool = True) -> dict[str, Any]:
        spec = self._form(form_id)
        models = _get(data, "Model")
        if isinstance(models, dict):
            models = [models]
        if not isinstance(models, list) or not models:
            raise KingdeeError("参数Model不能为空", MSG_PARAM, "Model")
        options = SaveOptions(
            verify_base_data=parse_bool(_get(data, "IsVerifyBaseDataField"), False),
            auto_submit_audit=parse_bool(_get(data, "IsAutoSubmitAndAudit"), False),
            delete_entry=parse_bool(_get(data, "IsDeleteEntry"), True),
            need_return_fields=_field_list(_get(data, "NeedReturnFields")),
        )
        errors: list[dict[str, Any]] = []
        successes: list[dict[str, Any]] = []
        returned: list[dict[str, Any]] = []
        first_code = MSG_OK
        with self.store.lock:
            self.store.begin()
            try:
                for index, model in enumerate(models):
                    outcome = self._save_model(spec, model, options)
                    if isinstance(outcome, StoredBill):
                        successes.append({"Id": outcome.fid, "Number": outcome.bill_no, "DIndex": index})
                        returned.append(_need_return(outcome, spec, options.need_return_fields))
                    else:
                        first_code = first_code or outcome[0].msg_code
                        errors.extend({"FieldName": e.field, "Message": e.message, "DIndex": index}
                                      for e in outcome)
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise
        result: dict[str, Any] = {"ResponseStatus": response_status(errors, successes, first_code)}
        if not batch and successes:
            result["Id"], result["Number"] = successes[0]["Id"], successes[0]["Number"]
        result["NeedReturnData"] = returned
        return {"Result": result}

    def _save_model(self, spec: FormSpec, model: Any, options: SaveOptions) -> StoredBill | list[ModelError]:
        if not isinstance(model, dict):
            return [ModelError(None, "Model的格式不正确，应为JSON对象", MSG_PARAM)]
        header = {k: v for k, v in model.items() if k.upper() != spec.entry_key.upper()}
        entries_raw = _get(model, spec.entry_key)
        entries_given = entries_raw is not None
        entries = [dict(e) if isinstance(e, dict) else e for e in (entries_raw or [])]
        fid = _int_or_none(_get(header, "FID"))
        existing: StoredBill | None = None
        if fid:
            existing = self.store.by_id(spec.form_id, fid)
            if existing is None:
                return [ModelError("FID", f"单据内码“{fid}”对应的{spec.name}不存在或已被删除", MSG_NOT_EXIST)]
            if existing.status not in {"Z", "A", "D"}:
                return [ModelError(None, f"单据编号为“{existing.bill_no}”的{spec.name}当前状态为"
                                         f"“{STATUS_NAMES[existing.status]}”，不允许修改", MSG_INVALID)]
            merged = {k: v for k, v in existing.header.items()}
            upper_sent = {k.upper() for k in header}
            merged = {k: v for k, v in merged.items() if k.upper() not in upper_sent}
            merged.update(header)
            header = merged
            entries = self._merge_entries(existing.entries, entries, entries_given, options.delete_entry)
        errors = self._validate(spec, header, entries, options)
        if errors:
            return errors
        bill_no = str(_get(header, "FBillNo") or "").strip()
        if existing is not None and not bill_no:
            bill_no = existing.bill_no
        if bill_no and self.store.number_taken(spec.form_id, bill_no, existing.fid if existing else None):
            return [ModelError("FBillNo", f"违反字段唯一性要求：编码唯一。[{bill_no}]在当前系统中已经被使用。",
                               MSG_INVALID)]
        if not bill_no:
            while True:
                bill_no = f"{spec.number_prefix}{self.store.next_value('number:' + spec.form_id, 1):08d}"
                if not self.store.number_taken(spec.form_id, bill_no):
                    break
        for entry in entries:
            if not _int_or_none(_get(entry, "FEntryID")):
                _set(entry, "FEntryID", self.store.next_value("entry:" + spec.form_id, 100001))
        status = "C" if options.auto_submit_audit else (existing.status if existing else "A")
        header = {k: v for k, v in header.items() if k.upper() not in {"FID", "FBILLNO"}}
        if existing is not None:
            bill = StoredBill(existing.fid, spec.form_id, bill_no, status, existing.created, header, entries)
            self.store.update(bill)
        else:
            bill = StoredBill(self.store.next_value("fid", 100001), spec.form_id, bill_no, status,
                              datetime.now().strftime("%Y-%m-%dT%H:%M:%S"), header, entries)
            try:
                self.store.insert(bill)
            except DuplicateNumber:
                return [ModelError("FBillNo", f"违反字段唯一性要求：编码唯一。[{bill_no}]在当前系统中已经被使用。")]
        return bill

    @staticmethod
    def _merge_entries(old: list[dict[str, Any]], sent: list[Any], sent_given: bool,
                       delete_entry: bool) -> list[Any]:
        if not sent_given:
            return [dict(e) for e in old]
        by_id = {int(e["FEntryID"]): e for e in old if _int_or_none(e.get("FEntryID"))}
        merged: list[Any] = []
        for row in sent:
            entry_id = _int_or_none(_get(row, "FEntryID")) if isinstance(row, dict) else None
            if entry_id and entry_id in by_id:
                base = dict(by_id.pop(entry_id))
                base.update(row)
                merged.append(base)
            else:
                merged.append(row)
        if not delete_entry:
            merged = [*by_id.values(), *merged]
        return merged

    def _validate(self, spec: FormSpec, header: dict[str, Any], entries: list[Any],
                  options: SaveOptions) -> list[ModelError]:
        errors: list[ModelError] = []
        for field_spec in spec.header.values():
            errors.extend(self._check_field(spec.form_id, field_spec, header, None, options))
        if not entries:
            errors.append(ModelError(spec.entry_key, f"单据体“{spec.entry_label}”至少需要录入一行数据"))
        for row_number, entry in enumerate(entries, start=1):
            if not isinstance(entry, dict):
                errors.append(ModelError(spec.entry_key, f"第{row_number}行分录的格式不正确", MSG_PARAM))
                continue
            for field_spec in spec.entry.values():
                errors.extend(self._check_field(spec.form_id, field_spec, entry, row_number, options, header))
        return errors

    def _check_field(self, form_id: str, spec: FieldSpec, values: dict[str, Any], row: int | None,
                     options: SaveOptions, header: dict[str, Any] | None = None) -> list[ModelError]:
        raw = _get(values, spec.key)
        where = f"第{row}行分录，" if row is not None else ""

        def missing() -> list[ModelError]:
            if not spec.required:
                return []
            if row is None:
                return [ModelError(spec.key, f"字段“{spec.label}”是必填项")]
            return [ModelError(spec.key, f"第{row}行分录，【{spec.label}】字段必录")]

        if raw is None or raw == "" or raw == {}:
            return missing()
        if spec.kind == "unit_type":
            if str(raw) not in UNIT_TYPES:
                return [ModelError(spec.key, f"{where}字段“{spec.label}”的值“{raw}”不是有效的选项")]
            return []
        if spec.kind == "date":
            try:
                kingdee_filter.parse_datetime(str(raw))
            except ValueError:
                return [ModelError(spec.key, f"{where}字段“{spec.label}”的值“{raw}”不是有效的日期格式")]
            return []
        if spec.kind == "decimal":
            amount = _decimal_or_none(raw)
            if amount is None:
                return [ModelError(spec.key, f"{where}字段“{spec.label}”的值“{raw}”不是有效的数值")]
            if spec.key == "FPAYTOTALAMOUNTFOR" and amount <= 0:
                return [ModelError(spec.key, f"{where}【{spec.label}】必须大于0")]
            return []
        if spec.kind == "ref":
            ref_form = self._ref_form(spec, values, header)
            number, record_id = reference_key(raw)
            record = None
            if ref_form is not None:
                record = self.basedata.find(ref_form, number=number, record_id=record_id)
                # a bill type belongs to one business form
                if record is not None and record.get("bill_form") not in (None, form_id):
                    record = None
            if record is not None and record.get("enabled", True):
                return []
            if options.verify_base_data:
                shown = number if number is not None else (record_id if record_id is not None else dumps(raw))
                return [ModelError(spec.key, f"{where}字段“{spec.label}”的值“{shown}”在系统中不存在或未审核",
                                   MSG_NOT_EXIST)]
            # Without verification the server silently drops an unresolved reference.
            return missing()
        return []

    @staticmethod
    def _ref_form(spec: FieldSpec, values: dict[str, Any], header: dict[str, Any] | None) -> str | None:
        if not spec.dynamic:
            return spec.ref_form
        holder = header if header is not None else values
        unit_type = _get(holder, spec.ref_form or "")
        return str(unit_type) if unit_type in UNIT_TYPES else None

    def _bills_by_request(self, spec: FormSpec, data: dict[str, Any]) -> list[tuple[str, StoredBill | None]]:
        numbers = _get(data, "Numbers")
        ids = _get(data, "Ids")
        wanted: list[tuple[str, StoredBill | None]] = []
        if isinstance(numbers, str):
            numbers = [n for n in numbers.split(",") if n.strip()]
        for number in numbers or []:
            wanted.append((str(number), self.store.by_number(spec.form_id, str(number))))
        if isinstance(ids, str):
            ids = [i for i in ids.split(",") if i.strip()]
        for raw_id in ids or []:
            fid = _int_or_none(raw_id)
            wanted.append((str(raw_id), self.store.by_id(spec.form_id, fid) if fid else None))
        if not wanted:
            raise KingdeeError("参数Numbers和Ids不能同时为空", MSG_PARAM)
        return wanted

    def _operation(self, form_id: str | None, data: dict[str, Any], operation: str) -> dict[str, Any]:
        spec = self._form(form_id)
        rules = {  # operation → (allowed from, to, verb)
            "Submit": ({"A", "D", "Z"}, "B", "提交"),
            "Audit": ({"B"}, "C", "审核"),
            "UnAudit": ({"C"}, "A", "反审核"),
            "Delete": ({"A", "Z", "D"}, None, "删除"),
        }
        allowed, target, verb = rules[operation]
        errors: list[dict[str, Any]] = []
        successes: list[dict[str, Any]] = []
        first_code = MSG_OK
        with self.store.lock:
            self.store.begin()
            try:
                for index, (key, bill) in enumerate(self._bills_by_request(spec, data)):
                    if bill is None:
                        first_code = first_code or MSG_NO_DATA
                        errors.append({"FieldName": None, "DIndex": index,
                                       "Message": f"单据“{key}”不存在或已被删除，不能{verb}"})
                        continue
                    if bill.status not in allowed:
                        first_code = first_code or MSG_INVALID
                        if operation == "Audit" and bill.status == "C":
                            message = f"单据编号为“{bill.bill_no}”的{spec.name}已经审核，不能重复审核"
                        else:
                            message = (f"单据编号为“{bill.bill_no}”的{spec.name}，单据状态为"
                                       f"“{STATUS_NAMES[bill.status]}”，不能{verb}")
                        errors.append({"FieldName": None, "DIndex": index, "Message": message})
                        continue
                    if target is None:
                        self.store.delete(bill.fid)
                    else:
                        bill.status = target
                        self.store.update(bill)
                    successes.append({"Id": bill.fid, "Number": bill.bill_no, "DIndex": index})
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise
        return {"Result": {"ResponseStatus": response_status(errors, successes, first_code)}}

    def _view(self, form_id: str | None, data: dict[str, Any]) -> dict[str, Any]:
        spec = self._form(form_id)
        number = _get(data, "Number")
        fid = _int_or_none(_get(data, "Id"))
        bill = None
        if number:
            bill = self.store.by_number(spec.form_id, str(number))
        elif fid:
            bill = self.store.by_id(spec.form_id, fid)
        if bill is None:
            raise KingdeeError("单据不存在或已被删除", MSG_NO_DATA)
        view: dict[str, Any] = {"Id": bill.fid, "BillNo": bill.bill_no, "DocumentStatus": bill.status,
                                "CreateDate": bill.created}
        for key, value in bill.header.items():
            field_spec = spec.header.get(key.upper())
            view[key] = self._view_value(field_spec, value, bill.header)
        view[spec.entry_key] = [
            {k: self._view_value(spec.entry.get(k.upper()), v, bill.header) for k, v in e.items()}
            for e in bill.entries]
        return {"Result": {"ResponseStatus": None, "Result": view}}

    def _view_value(self, spec: FieldSpec | None, value: Any, header: dict[str, Any]) -> Any:
        if spec is None or spec.kind != "ref":
            return value
        record = self._resolve(spec, value, header)
        if record is None:
            return None
        return {"Id": record["id"], "Number": record["number"],
                "Name": [{"Key": 2052, "Value": record.get("name")}]}

    def _resolve(self, spec: FieldSpec, value: Any, header: dict[str, Any]) -> dict[str, Any] | None:
        form_id = self._ref_form(spec, header, header)
        if form_id is None:
            return None
        number, record_id = reference_key(value)
        return self.basedata.find(form_id, number=number, record_id=record_id)

    # -------------------------------------------------------------------------------- queries
    def _query(self, form_id: str | None, data: dict[str, Any], as_dicts: bool = False) -> Any:
        form_id = form_id or _get(data, "FormId")
        keys = _field_list(_get(data, "FieldKeys"))
        if not keys:
            raise KingdeeError("参数FieldKeys不能为空", MSG_PARAM, "FieldKeys")
        try:
            condition = kingdee_filter.parse_filter(_get(data, "FilterString"))
        except kingdee_filter.FilterError as exc:
            raise KingdeeError(f"过滤条件FilterString语法错误：{exc}", MSG_EXCEPTION, "FilterString") from exc
        order = _parse_order(_get(data, "OrderString"))
        if form_id and str(form_id) in self.basedata.forms:
            rows_source = self._basedata_rows(str(form_id))
        else:
            spec = self._form(form_id)
            mentioned = set(keys) | kingdee_filter.referenced_fields(condition) | {k for k, _ in order}
            for key in mentioned:
                self._bill_field(spec, None, None, key, check_only=True)
            per_entry = any(self._is_entry_key(spec, k) for k in mentioned)
            rows_source = []
            for bill in self.store.all(spec.form_id):
                for entry in (bill.entries or [None]) if per_entry else [None]:
                    rows_source.append(lambda key, b=bill, e=entry, s=spec: self._bill_field(s, b, e, key))
        try:
            rows = [r for r in rows_source if kingdee_filter.evaluate(condition, r)]
            for key, descending in reversed(order):
                rows.sort(key=lambda r, k=key: _sort_key(r(k)), reverse=descending)
        except kingdee_filter.FilterError as exc:
            raise KingdeeError(f"执行查询出错：{exc}", MSG_EXCEPTION, "FilterString") from exc
        start = _int_or_none(_get(data, "StartRow")) or 0
        limit = _int_or_none(_get(data, "Limit")) or 0
        top = _int_or_none(_get(data, "TopRowCount")) or 0
        rows = rows[start:]
        for cap in (limit, top):
            if cap > 0:
                rows = rows[:cap]
        out_rows = [[_output(row(key)) for key in keys] for row in rows]
        if as_dicts:
            return [dict(zip(keys, values, strict=True)) for values in out_rows]
        return out_rows

    def _bill_query(self, form_id: str | None, data: dict[str, Any]) -> Any:
        return self._query(form_id, data, as_dicts=True)

    def _basedata_rows(self, form_id: str) -> list[Any]:
        def resolver(record: dict[str, Any]) -> Any:
            def resolve(key: str) -> Any:
                upper = key.upper()
                if upper in {"FID", "FMASTERID", f"F{form_id.split('_')[-1].upper()}ID"}:
                    return record["id"]
                if upper == "FNUMBER":
                    return record["number"]
                if upper == "FNAME":
                    return record.get("name")
                if upper == "FDOCUMENTSTATUS":
                    return "C"
                if upper == "FFORBIDSTATUS":
                    return "A" if record.get("enabled", True) else "B"
                attribute = key[1:].lower() if key[:1].upper() == "F" else key.lower()
                if attribute in record:
                    return record[attribute]
                raise KingdeeError(f"元数据中标识为{key}的字段不存在", MSG_NOT_EXIST, key)
            return resolve
        return [resolver(record) for record in self.basedata.forms[form_id]]

    @staticmethod
    def _is_entry_key(spec: FormSpec, key: str) -> bool:
        upper = key.upper().split(".", 1)[0]
        prefix = spec.entry_key.upper() + "_"
        return upper.startswith(prefix) or upper == "FENTRYID" or upper in spec.entry

    def _bill_field(self, spec: FormSpec, bill: StoredBill | None, entry: dict[str, Any] | None, key: str,
                    check_only: bool = False) -> Any:
        """The typed value of ``key`` for one (bill, entry) row; raises for unknown fields."""
        upper = key.upper()
        base, _, prop = upper.partition(".")
        prefix = spec.entry_key.upper() + "_"
        entry_prefixed = base.startswith(prefix)
        if entry_prefixed:
            base = base[len(prefix):]
        header_specials = {"FID", "FBILLNO", "FDOCUMENTSTATUS", "FCREATEDATE"}
        known_entry = base in spec.entry or base in {"FENTRYID", "FSEQ"}
        known_header = not entry_prefixed and (base in spec.header or base in header_specials)
        if not (known_entry or known_header) or (prop and prop not in {"FNUMBER", "FNAME", "FID"}):
            raise KingdeeError(f"元数据中标识为{key}的字段不存在", MSG_NOT_EXIST, key)
        if prop and (spec.entry.get(base) or spec.header.get(base) or FieldSpec("", "")).kind != "ref":
            raise KingdeeError(f"元数据中标识为{key}的字段不存在", MSG_NOT_EXIST, key)
        if check_only or bill is None:
            return None
        if known_header and base in header_specials:
            if base == "FID":
                return bill.fid
            if base == "FBILLNO":
                return bill.bill_no
            if base == "FDOCUMENTSTATUS":
                return bill.status
            return kingdee_filter.parse_datetime(bill.created)
        if known_header:
            field_spec, values = spec.header[base], bill.header
        else:
            if entry is None:
                return None
            if base == "FENTRYID":
                return _int_or_none(_get(entry, "FEntryID"))
            if base == "FSEQ":
                return bill.entries.index(entry) + 1
            field_spec, values = spec.entry[base], entry
        raw = _get(values, field_spec.key)
        if field_spec.kind == "ref":
            record = self._resolve(field_spec, raw, bill.header)
            if prop == "FNUMBER":
                return record["number"] if record else None
            if prop == "FNAME":
                return record.get("name") if record else None
            return record["id"] if record else 0
        if raw is None or raw == "":
            return None
        if field_spec.kind == "date":
            try:
                return kingdee_filter.parse_datetime(str(raw))
            except ValueError:
                return None
        if field_spec.kind == "decimal":
            return _decimal_or_none(raw)
        return raw if isinstance(raw, str | int | Decimal) else dumps(raw)


SERVICE_HANDLERS: dict[str, Any] = {
    "Save": lambda emu, form_id, data: emu._save(form_id, data, batch=False),
    "BatchSave": lambda emu, form_id, data: emu._save(form_id, data, batch=True),
    "Submit": lambda emu, form_id, data: emu._operation(form_id, data, "Submit"),
    "Audit": lambda emu, form_id, data: emu._operation(form_id, data, "Audit"),
    "UnAudit": lambda emu, form_id, data: emu._operation(form_id, data, "UnAudit"),
    "Delete": lambda emu, form_id, data: emu._operation(form_id, data, "Delete"),
    "View": lambda emu, form_id, data: emu._view(form_id, data),
    "ExecuteBillQuery": lambda emu, form_id, data: emu._query(form_id, data),
    "BillQuery": lambda emu, form_id, data: emu._bill_query(form_id, data),
}


# --------------------------------------------------------------------------------------- helpers

def _get(mapping: Any, key: str) -> Any:
    """Case-insensitive key lookup (K/3Cloud keys are case-insensitive)."""
    if not isinstance(mapping, dict):
        return None
    if key in mapping:
        return mapping[key]
    upper = key.upper()
    for k, v in mapping.items():
        if str(k).upper() == upper:
            return v
    return None


def _set(mapping: dict[str, Any], key: str, value: Any) -> None:
    for k in list(mapping):
        if k.upper() == key.upper():
            del mapping[k]
    mapping[key] = value


def _int_or_none(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _decimal_or_none(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def _field_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [str(part).strip() for part in value if str(part).strip()]
    return []


def _parse_order(value: Any) -> list[tuple[str, bool]]:
    order: list[tuple[str, bool]] = []
    for part in _field_list(value):
        words = part.split()
        if len(words) > 2 or (len(words) == 2 and words[1].upper() not in {"ASC", "DESC"}):
            raise KingdeeError(f"排序条件OrderString语法错误：{part}", MSG_EXCEPTION, "OrderString")
        order.append((words[0], len(words) == 2 and words[1].upper() == "DESC"))
    return order


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, str):
        return (1, value.casefold())
    return (1, value)


def _output(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    return value


def _need_return(bill: StoredBill, spec: FormSpec, fields: list[str]) -> dict[str, Any]:
    returned: dict[str, Any] = {}
    for name in fields:
        upper = name.upper()
        if upper == "FBILLNO":
            returned[name] = bill.bill_no
        elif upper == "FID":
            returned[name] = bill.fid
        elif upper == "FDOCUMENTSTATUS":
            returned[name] = bill.status
        elif upper in {spec.entry_key.upper(), f"{spec.entry_key.upper()}.FENTRYID"}:
            returned[spec.entry_key] = [{"FEntryID": _get(e, "FEntryID")} for e in bill.entries]
        else:
            value = _get(bill.header, name)
            if value is not None:
                returned[name] = value
    return returned


def parse_call(body: bytes, service: str) -> tuple[str | None, dict[str, Any]]:
    """(form id, data) from any of the three body shapes; data given as a JSON string is decoded."""
    try:
        payload = loads(body) if body.strip() else {}
    except ValueError as exc:
        raise KingdeeError(f"请求报文不是有效的JSON：{exc}", MSG_PARAM) from exc
    if not isinstance(payload, dict):
        raise KingdeeError("请求报文格式不正确", MSG_PARAM)
    form_id: Any
    params = _get(payload, "parameters")
    if isinstance(params, list):
        if service in QUERY_SERVICES:
            form_id, data = None, params[0] if params else None
        else:
            form_id = params[0] if params else None
            data = params[1] if len(params) > 1 else None
    else:
        form_id, data = _get(payload, "formid"), _get(payload, "data")
    if isinstance(data, str):
        try:
            data = loads(data) if data.strip() else {}
        except ValueError as exc:
            raise KingdeeError(f"参数data不是有效的JSON：{exc}", MSG_PARAM) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KingdeeError("参数data格式不正确", MSG_PARAM)
    if form_id in (None, ""):
        form_id = _get(data, "FormId")
    return (str(form_id) if form_id not in (None, "") else None), data


# ------------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dk_emulators.kingdee",
                                     description="Serve the Kingdee K/3Cloud WebAPI emulator over HTTP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8802)
    parser.add_argument("--basedata", default=str(DEFAULT_BASEDATA), help="base-data JSON file")
    parser.add_argument("--db", default=":memory:", help="SQLite file for bills (default: in memory)")
    parser.add_argument("--acct-id", default="demo-acct")
    parser.add_argument("--user", default="demo")
    parser.add_argument("--password", default="demo-password")
    parser.add_argument("--app-id", default=DEMO_APP_ID, help="signature-mode app id <clientId>_<32 chars>")
    parser.add_argument("--app-secret", default=DEMO_APP_SECRET)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--session-ttl", type=float, default=1800, help="seconds")
    parser.add_argument("--max-clock-skew", type=float, default=None,
                        help="refuse signatures whose timestamp is further than this from now (seconds)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    emulator = KingdeeEmulator(basedata=args.basedata, db_path=args.db, acct_id=args.acct_id,
                               users={args.user: args.password}, apps={args.app_id: args.app_secret},
                               latency_ms=args.latency_ms, session_ttl=args.session_ttl,
                               max_clock_skew_s=args.max_clock_skew)
    print(f"Kingdee emulator: http://{args.host}:{args.port}/k3cloud/ (acct {args.acct_id}, "
          f"user {args.user}, app {args.app_id})", flush=True)
    serve_forever(emulator.asgi, args.host, args.port)


if __name__ == "__main__":
    main()
