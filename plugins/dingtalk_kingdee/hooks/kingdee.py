"""``KingdeeHook``: a client of the Kingdee K/3Cloud WebAPI (BatchSave, Submit, Audit, ExecuteBillQuery).

Transport rules, chosen so that a bill is never written twice by the client itself:

* TLS verification is always on (a private CA goes in the ``ca_bundle`` extra).
* A request that certainly never reached the server (connection refused, connect timeout, name
  resolution) is retried with exponential backoff, whatever the service.
* A read (ExecuteBillQuery, View, the logins) is also retried on read timeouts, dropped
  connections, 5xx answers, HTML pages and ``response_error:`` bodies.
* A write (Save, BatchSave, Submit, Audit, ...) whose outcome is unknown raises
  ``KingdeeOutcomeUnknown`` naming the service, and is never resent.

Authentication: ``auth_mode`` ``session`` logs in lazily (``LoginByAppSecret`` when the connection
has an ``app_id``, the password field then holding the app secret; ``ValidateUser`` otherwise) and
logs in again once when a call answers "session lost" (MsgCode 1). ``auth_mode`` ``signature``
signs every request as the official SDK does (``kingdee_signature``).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import requests
from airflow.providers.http.hooks.http import HttpHook
from urllib3.exceptions import ConnectTimeoutError

from dingtalk_kingdee.errors import KingdeeAuthError, KingdeeError, KingdeeOutcomeUnknown
from dingtalk_kingdee.hooks.kingdee_signature import SignatureIdentity, signature_headers

AUTH_SERVICE = "Kingdee.BOS.WebApi.ServicesStub.AuthService."
FORM_SERVICE = "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService."
SERVICE_NAMESPACES = {
    "ValidateUser": AUTH_SERVICE,
    "LoginByAppSecret": AUTH_SERVICE,
}
# Services without side effects: safe to send again when no answer came.
READ_SERVICES = frozenset({"ExecuteBillQuery", "BillQuery", "View", "ValidateUser", "LoginByAppSecret",
                           "GetDataCenterList"})
SESSION_LOST = 1
# MsgCodes that concern the whole call (permission, exception, bad parameter, call limit, admin login).
WHOLE_CALL_MSG_CODES = frozenset({1, 2, 4, 8, 14, 15})
LOGIN_ACCEPTED = frozenset({1, -5})  # -5: "needs form handling", accepted as success by integrators
SESSION_COOKIE = "kdservice-sessionid"

DEFAULT_LCID = 2052
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 120.0
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_RETRY_BACKOFF = 1.0
MAX_BACKOFF = 30.0

# Field keys accepted in a FilterString: identifiers, optionally dotted (FCONTACTUNIT.FNumber).
FIELD_KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", re.ASCII)


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldError:
    field: str | None
    message: str


@dataclass(frozen=True)
class SaveOutcome:
    """The outcome of one model of a BatchSave, by its position (DIndex) in the batch."""

    index: int
    success: bool
    kingdee_id: int | None
    number: str | None
    errors: list[FieldError] = field(default_factory=list)


@dataclass(frozen=True)
class OperationResult:
    """The outcome of Submit / Audit on a list of bill numbers."""

    success: bool
    numbers_ok: list[str]
    errors: list[FieldError]
    msg_code: int | None


@dataclass(frozen=True)
class ResponseStatus:
    is_success: bool
    msg_code: int | None
    errors: list[dict]
    successes: list[dict]

    def first_message(self) -> str:
        for error in self.errors:
            message = str(error.get("Message") or "").strip()
            if message:
                return message
        return "no message"


# ----------------------------------------------------------------------------------------------
# Pure helpers (request bodies, lenient answer parsing, FilterString building)
# ----------------------------------------------------------------------------------------------

def decimal_text(value: Decimal) -> str:
    """Exact, exponent-free text of a finite Decimal (``Decimal("1E+2")`` → ``"100"``)."""
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite amount")
    return format(value, "f")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return decimal_text(value)
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serialisable")


def to_json(payload: Any) -> str:
    """JSON text of a request body; Decimals become exact decimal strings, never floats."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, default=_json_default)


def lenient_bool(value: Any) -> bool:
    """``IsSuccess`` as Kingdee writes it: true/false, "true"/"false", 1/0, missing."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, Decimal)):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return False


def lenient_int(value: Any) -> int | None:
    """``MsgCode`` / ``Id`` / ``DIndex`` as Kingdee writes them: 11, "11", "", null."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)):
        return int(value) if math.isfinite(value) and value == int(value) else None
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            return int(text)
    return None


def _response_status_dict(payload: Any) -> dict | None:
    """The ``ResponseStatus`` object of an answer, wherever the answer shape puts it."""
    if isinstance(payload, list):  # ExecuteBillQuery errors: [[{"Result": {...}}]]
        while isinstance(payload, list) and len(payload) == 1:
            payload = payload[0]
        if not isinstance(payload, dict):
            return None
    if not isinstance(payload, dict):
        return None
    result = payload.get("Result", payload)
    if isinstance(result, dict) and isinstance(result.get("ResponseStatus"), dict):
        return result["ResponseStatus"]
    if isinstance(payload.get("ResponseStatus"), dict):
        return payload["ResponseStatus"]
    return None


def parse_response_status(payload: Any) -> ResponseStatus | None:
    """A lenient reading of ``Result.ResponseStatus``; None when the answer carries none."""
    raw = _response_status_dict(payload)
    if raw is None:
        return None
    errors = [e for e in (raw.get("Errors") or []) if isinstance(e, dict)]
    successes = [s for s in (raw.get("SuccessEntitys") or []) if isinstance(s, dict)]
    return ResponseStatus(
        is_success=lenient_bool(raw.get("IsSuccess")),
        msg_code=lenient_int(raw.get("MsgCode")),
        errors=errors,
        successes=successes,
    )


def is_session_lost(payload: Any) -> bool:
    status = parse_response_status(payload)
    return status is not None and not status.is_success and status.msg_code == SESSION_LOST


def query_error_status(page: Any) -> ResponseStatus | None:
    """The status of an ExecuteBillQuery error answer (``[[{"Result": ...}]]``), None for data rows."""
    if isinstance(page, dict):
        return parse_response_status(page) or ResponseStatus(False, None, [{"Message": str(page)[:200]}], [])
    if (isinstance(page, list) and page and isinstance(page[0], list) and page[0]
            and isinstance(page[0][0], dict)):
        return parse_response_status(page[0][0]) or ResponseStatus(
            False, None, [{"Message": str(page[0][0])[:200]}], [])
    return None


def _field_error(raw: dict) -> FieldError:
    name = raw.get("FieldName")
    return FieldError(field=str(name) if name not in (None, "") else None,
                      message=str(raw.get("Message") or "").strip() or "no message")


def _is_whole_call_failure(status: ResponseStatus) -> bool:
    """A whole-call MsgCode without per-model information (no success, no error past the first model)."""
    if status.is_success or status.msg_code not in WHOLE_CALL_MSG_CODES or status.successes:
        return False
    return not any((lenient_int(e.get("DIndex")) or 0) >= 1 for e in status.errors)


def _answered_status(payload: Any, service: str) -> ResponseStatus:
    """The answer's ResponseStatus; KingdeeError when there is none or the whole call failed."""
    status = parse_response_status(payload)
    if status is None:
        raise KingdeeError(f"answer without ResponseStatus: {str(payload)[:200]}", service=service)
    if _is_whole_call_failure(status):
        raise KingdeeError(status.first_message(), msg_code=status.msg_code,
                           errors=[_field_error(e) for e in status.errors], service=service)
    return status


def save_outcomes(payload: Any, model_count: int, service: str = "BatchSave") -> list[SaveOutcome]:
    """Exactly one SaveOutcome per model, by DIndex, from a BatchSave answer.

    Raises KingdeeError for a whole-call failure, and KingdeeOutcomeUnknown when a saved bill
    cannot be attributed to a model (a resend could then duplicate it).
    """
    status = _answered_status(payload, service)

    saved: dict[int, dict] = {}
    for entity in status.successes:
        index = lenient_int(entity.get("DIndex"))
        if index is None and model_count == 1:
            index = 0
        if index is None or not 0 <= index < model_count:
            raise KingdeeOutcomeUnknown(
                f"{service} reported a saved bill ({entity.get('Number')!r}) without a usable DIndex; "
                "query Kingdee before sending these models again")
        saved[index] = entity

    errors_by_index: dict[int, list[FieldError]] = {}
    unplaced: list[FieldError] = []
    for raw in status.errors:
        index = lenient_int(raw.get("DIndex"))
        if index is None or not 0 <= index < model_count:
            unplaced.append(_field_error(raw))
        else:
            errors_by_index.setdefault(index, []).append(_field_error(raw))

    outcomes = []
    for index in range(model_count):
        if index in saved:
            entity = saved[index]
            number = entity.get("Number")
            outcomes.append(SaveOutcome(index, True, lenient_int(entity.get("Id")),
                                        str(number) if number not in (None, "") else None,
                                        errors_by_index.get(index, [])))
            continue
        errors = errors_by_index.get(index, []) + unplaced
        if not errors:
            errors = [FieldError(None, f"{service} reported model {index} neither as saved nor as "
                                       f"failed (IsSuccess={status.is_success}, MsgCode={status.msg_code})")]
        outcomes.append(SaveOutcome(index, False, None, None, errors))
    return outcomes


def operation_result(payload: Any, service: str) -> OperationResult:
    """Submit / Audit answer → OperationResult; a whole-call failure raises KingdeeError."""
    status = _answered_status(payload, service)
    numbers = [str(s["Number"]) for s in status.successes if s.get("Number") not in (None, "")]
    return OperationResult(success=status.is_success, numbers_ok=numbers,
                           errors=[_field_error(e) for e in status.errors], msg_code=status.msg_code)


def validate_field_key(key: str) -> str:
    if not isinstance(key, str) or not FIELD_KEY_PATTERN.fullmatch(key):
        raise ValueError(f"not a field key: {key!r}")
    return key


def filter_literal(value: Any) -> str:
    """One FilterString literal: strings single-quoted with quotes doubled, numbers as numbers."""
    if isinstance(value, bool):
        raise TypeError("a boolean has no FilterString form; compare with 0/1 or '0'/'1' explicitly")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("a NUL character cannot be put in a FilterString")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError("Kingdee dates carry no offset: pass a naive datetime in server time")
        return "'" + value.strftime("%Y-%m-%d %H:%M:%S") + "'"
    if isinstance(value, date):
        return "'" + value.isoformat() + "'"
    raise TypeError(f"{type(value).__name__} value cannot be put in a FilterString")


def build_filter_string(filters: Mapping[str, Any] | None) -> str | None:
    """``{field: value}`` → FilterString joined by AND, built only from escaped literals.

    A list/tuple/set value becomes ``IN (...)``, None becomes ``IS NULL``. Returns None when a
    condition can match nothing (an empty list), so the caller need not ask Kingdee.
    """
    clauses = []
    for key, value in (filters or {}).items():
        validate_field_key(key)
        if value is None:
            clauses.append(f"{key} IS NULL")
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)
            if not items:
                return None
            if any(item is None or isinstance(item, (list, tuple, set, frozenset, dict)) for item in items):
                raise TypeError(f"IN list of {key} may hold only scalar values")
            clauses.append(f"{key} IN ({','.join(filter_literal(item) for item in items)})")
        else:
            clauses.append(f"{key}={filter_literal(value)}")
    return " AND ".join(clauses)


def options_payload(options: Mapping[str, Any] | None) -> dict:
    """BatchSave options with booleans written as the official examples write them ("true")."""
    payload = {}
    for key, value in (options or {}).items():
        if key == "Model":
            raise ValueError("options may not carry Model")
        payload[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return payload


def batch_save_body(form_id: str, models: list[dict], options: Mapping[str, Any] | None = None) -> dict:
    for position, model in enumerate(models):
        if not isinstance(model, dict):
            raise TypeError(f"model {position} is a {type(model).__name__}, not a dict")
    return {"formid": form_id, "data": {**options_payload(options), "Model": models}}


def _require_text(value: Any, what: str) -> str:
    text = str(value or "").strip()
    if not text:
        raise ValueError(f"the Kingdee connection needs {what}")
    return text


@dataclass(frozen=True)
class KingdeeConnectionConfig:
    """Everything the hook reads from its Airflow connection."""

    server_url: str
    user_name: str
    secret: str
    acct_id: str
    app_id: str
    lcid: int
    org_num: str
    auth_mode: str
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    retry_backoff: float
    ca_bundle: str | None

    def __repr__(self) -> str:  # the password / app secret must never reach a log line
        return (f"KingdeeConnectionConfig(server_url={self.server_url!r}, user_name={self.user_name!r}, "
                f"acct_id={self.acct_id!r}, app_id={self.app_id!r}, auth_mode={self.auth_mode!r})")

    @classmethod
    def from_connection(cls, conn: Any) -> KingdeeConnectionConfig:
        extra = conn.extra_dejson or {}
        host = _require_text(conn.host, "a host (the server URL ending in /k3cloud/)")
        if "://" not in host:
            host = "https://" + host
        if not host.endswith("/"):
            host += "/"
        auth_mode = str(extra.get("auth_mode") or "session").strip().lower()
        if auth_mode not in ("session", "signature"):
            raise ValueError(f"auth_mode must be session or signature, not {auth_mode!r}")
        app_id = str(extra.get("app_id") or "").strip()
        if auth_mode == "signature" and not app_id:
            raise ValueError("auth_mode signature needs app_id in the connection extra")
        for insecure in ("verify", "verify_ssl"):
            if insecure in extra and not extra[insecure]:
                raise ValueError("TLS verification cannot be switched off; set ca_bundle to a private CA")
        return cls(
            server_url=host,
            user_name=_require_text(conn.login, "a login (the Kingdee user name)"),
            secret=_require_text(conn.password, "a password (password or app secret)"),
            acct_id=_require_text(extra.get("acct_id"), "acct_id in its extra"),
            app_id=app_id,
            lcid=int(extra.get("lcid") or DEFAULT_LCID),
            org_num=str(extra.get("org_num") if extra.get("org_num") not in (None, "") else "0"),
            auth_mode=auth_mode,
            connect_timeout=float(extra.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT),
            read_timeout=float(extra.get("read_timeout") or DEFAULT_READ_TIMEOUT),
            max_attempts=max(1, int(extra.get("max_attempts") or DEFAULT_MAX_ATTEMPTS)),
            retry_backoff=max(0.0, float(extra.get("retry_backoff", DEFAULT_RETRY_BACKOFF))),
            ca_bundle=str(extra["ca_bundle"]) if extra.get("ca_bundle") else None,
        )


def never_sent(exc: BaseException) -> bool:
    """Whether a requests error happened before the request could reach the server."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])
        # urllib3: NewConnectionError and NameResolutionError subclass ConnectTimeoutError.
        return isinstance(reason, ConnectTimeoutError)
    return False


class _Ambiguous(Exception):
    """An attempt ended without a usable answer; the request may have been processed."""


def _mask(secret: str) -> None:
    """Register a secret with Airflow's log masker (a no-op where no masker runs)."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDKs
        return
    if secret:
        mask_secret(secret)


# ----------------------------------------------------------------------------------------------
# The hook
# ----------------------------------------------------------------------------------------------

class KingdeeHook(HttpHook):
    """Kingdee K/3Cloud WebAPI client (session login or per-request signature)."""

    conn_name_attr = "kingdee_conn_id"
    default_conn_name = "kingdee_default"
    conn_type = "kingdee"
    hook_name = "Kingdee K/3Cloud WebAPI"

    def __init__(self, kingdee_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(method="POST", http_conn_id=kingdee_conn_id, **kwargs)
        self.kingdee_conn_id = kingdee_conn_id
        self._config: KingdeeConnectionConfig | None = None
        self._session: requests.Session | None = None
        self._session_id: str = ""
        self._logged_in = False
        self.clock = time.time  # the signature clock; replaceable for tests
        self.sleep = time.sleep

    # -- configuration and transport -----------------------------------------------------------

    @property
    def config(self) -> KingdeeConnectionConfig:
        if self._config is None:
            self._config = KingdeeConnectionConfig.from_connection(self.get_connection(self.kingdee_conn_id))
            _mask(self._config.secret)
        return self._config

    def get_conn(self, headers: dict[Any, Any] | None = None,
                 extra_options: dict[str, Any] | None = None) -> requests.Session:
        """One requests session per hook, so the login cookies live as long as the hook.

        Per-request headers (signature, session id) travel with each request, not in the session.
        """
        config = self.config
        if self._session is None:
            session = requests.Session()
            session.verify = config.ca_bundle or True
            session.headers.update({"Content-Type": "application/json", "Accept-Charset": "utf-8",
                                    "User-Agent": "dingtalk-kingdee KingdeeHook"})
            self.base_url = config.server_url
            self._base_url_initialized = True
            self._session = self._configure_session_from_mount_adapters(session)
        self.merged_extra = {"timeout": (config.connect_timeout, config.read_timeout),
                             "check_response": False, "allow_redirects": False}
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = None
        self._session_id = ""
        self._logged_in = False

    def _service_path(self, service: str) -> str:
        return SERVICE_NAMESPACES.get(service, FORM_SERVICE) + service + ".common.kdsvc"

    def _request_headers(self, url: str) -> dict[str, str]:
        config = self.config
        headers: dict[str, str] = {}
        if config.auth_mode == "signature":
            identity = SignatureIdentity(config.acct_id, config.user_name, config.app_id, config.secret,
                                         config.lcid, config.org_num)
            headers.update(signature_headers(identity, url, int(self.clock())))
        cookie_id = self._session.cookies.get(SESSION_COOKIE) if self._session is not None else None
        session_id = self._session_id or cookie_id
        if session_id:
            # The official SDK sends the session id as a header as well as in the cookie.
            headers[SESSION_COOKIE] = session_id
        return headers

    def _post(self, service: str, body: Mapping[str, Any]) -> Any:
        """POST one service call; retries only what is safe to send again. Returns the parsed JSON."""
        config = self.config
        is_read = service in READ_SERVICES
        payload = to_json(body).encode("utf-8")
        endpoint = self._service_path(service)
        url = config.server_url + endpoint
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                return self._attempt(service, endpoint, url, payload)
            except requests.exceptions.SSLError as exc:
                raise KingdeeError(f"TLS failure talking to {urlsplit(url).netloc}: {exc}",
                                   service=service) from exc
            except requests.exceptions.RequestException as exc:
                if not (never_sent(exc) or is_read):
                    raise KingdeeOutcomeUnknown(
                        f"{service}: no answer ({type(exc).__name__}); the call may have been processed, "
                        "query Kingdee before sending it again") from exc
                reason = f"{type(exc).__name__}"
                failure: Exception = exc
            except _Ambiguous as exc:
                if not is_read:
                    raise KingdeeOutcomeUnknown(
                        f"{service}: {exc}; the call may have been processed, "
                        "query Kingdee before sending it again") from exc
                reason = str(exc)
                failure = exc
            elapsed = time.monotonic() - started
            if attempt >= config.max_attempts:
                raise KingdeeError(f"no usable answer after {attempt} attempts (last: {reason})",
                                   service=service) from failure
            delay = min(MAX_BACKOFF, config.retry_backoff * (2 ** (attempt - 1)))
            self.log.warning("Kingdee %s attempt %d failed after %.2fs (%s); retrying in %.2fs",
                             service, attempt, elapsed, reason, delay)
            self.sleep(delay)

    def _attempt(self, service: str, endpoint: str, url: str, payload: bytes) -> Any:
        response = self.run(endpoint=endpoint, data=payload, headers=self._request_headers(url))
        text = response.text
        status = response.status_code
        if status not in (200, 206):
            if "fail to verify" in text.lower() or status in (401, 403):
                raise KingdeeAuthError(f"HTTP {status}: {text.strip()[:200]}", service=service)
            if 300 <= status < 500 and status not in (408, 429):
                # The server refused the request before processing it (bad URL, too large, ...).
                raise KingdeeError(f"HTTP {status}: {text.strip()[:200]}", service=service)
            raise _Ambiguous(f"HTTP {status}")
        if text.lstrip().startswith("response_error:"):
            raise _Ambiguous("server exception (response_error)")
        try:
            # Amounts come back exact: JSON decimals are read as Decimal, never float.
            return json.loads(text, parse_float=Decimal)
        except ValueError:
            content_type = response.headers.get("Content-Type", "no type")
            raise _Ambiguous(f"answer is not JSON ({content_type})") from None

    # -- authentication ------------------------------------------------------------------------

    def login(self) -> None:
        """Open a session (session mode). Raises KingdeeAuthError on refused credentials."""
        config = self.config
        if config.auth_mode != "session":
            return
        self.get_conn()
        self._session.cookies.clear()
        self._session_id = ""
        started = time.monotonic()
        if config.app_id:
            service = "LoginByAppSecret"
            body: dict[str, Any] = {"parameters": [config.acct_id, config.user_name, config.app_id,
                                                   config.secret, config.lcid]}
        else:
            service = "ValidateUser"
            body = {"acctID": config.acct_id, "username": config.user_name, "password": config.secret,
                    "lcid": config.lcid}
        answer = self._post(service, body)
        result_type = lenient_int(answer.get("LoginResultType")) if isinstance(answer, dict) else None
        if result_type not in LOGIN_ACCEPTED:
            message = (answer.get("Message") if isinstance(answer, dict) else None) or "login refused"
            raise KingdeeAuthError(f"{message} (LoginResultType {result_type})", service=service)
        session_id = self._session.cookies.get(SESSION_COOKIE) or str(answer.get("KDSVCSessionId") or "")
        self._session_id = session_id
        _mask(session_id)
        context = answer.get("Context") if isinstance(answer.get("Context"), dict) else {}
        _mask(str(context.get("SessionId") or ""))
        self._logged_in = True
        self.log.info("Kingdee %s: logged in as %s to account set %s in %.2fs", service,
                      config.user_name, config.acct_id, time.monotonic() - started)

    def _call(self, service: str, body: Mapping[str, Any]) -> Any:
        """A business call: lazy login, then one re-login (or fresh signature session) on MsgCode 1."""
        config = self.config
        if config.auth_mode == "session" and not self._logged_in:
            self.login()
        answer = self._post(service, body)
        if not is_session_lost(answer):
            return answer
        self.log.info("Kingdee %s: session lost, %s once and calling again", service,
                      "logging in" if config.auth_mode == "session" else "dropping the server session")
        if config.auth_mode == "session":
            self._logged_in = False
            self.login()
        else:
            self.get_conn().cookies.clear()
            self._session_id = ""
        answer = self._post(service, body)
        if is_session_lost(answer):
            status = parse_response_status(answer)
            message = status.first_message() if status else "session lost"
            if config.auth_mode == "signature":
                # A real server answers MsgCode 1 to a wrong user, app id or app secret.
                raise KingdeeAuthError(message, msg_code=SESSION_LOST, service=service)
            raise KingdeeError(message, msg_code=SESSION_LOST, service=service)
        return answer

    # -- business calls ------------------------------------------------------------------------

    def batch_save(self, form_id: str, models: list[dict],
                   options: dict | None = None) -> list[SaveOutcome]:
        """BatchSave ``models``; one SaveOutcome per model, in model order."""
        if not models:
            return []
        body = batch_save_body(form_id, list(models), options)
        to_json(body)  # refuse unserialisable models before anything is sent
        started = time.monotonic()
        answer = self._call("BatchSave", body)
        outcomes = save_outcomes(answer, len(models))
        saved = sum(1 for outcome in outcomes if outcome.success)
        self.log.info("Kingdee BatchSave %s: %d models, %d saved, %d failed in %.2fs", form_id,
                      len(models), saved, len(models) - saved, time.monotonic() - started)
        return outcomes

    def _operation(self, service: str, form_id: str, numbers: Iterable[str]) -> OperationResult:
        numbers = [str(number) for number in numbers]
        if not numbers:
            return OperationResult(success=True, numbers_ok=[], errors=[], msg_code=None)
        started = time.monotonic()
        body = {"formid": form_id, "data": {"CreateOrgId": 0, "Numbers": numbers, "Ids": "",
                                            "NetworkCtrl": ""}}
        result = operation_result(self._call(service, body), service)
        self.log.info("Kingdee %s %s: %d numbers, %d done, %d errors in %.2fs", service, form_id,
                      len(numbers), len(result.numbers_ok), len(result.errors), time.monotonic() - started)
        return result

    def submit(self, form_id: str, numbers: list[str]) -> OperationResult:
        return self._operation("Submit", form_id, numbers)

    def audit(self, form_id: str, numbers: list[str]) -> OperationResult:
        return self._operation("Audit", form_id, numbers)

    def bill_query(self, form_id: str, field_keys: list[str], filters: dict[str, object] | None = None,
                   limit: int = 2000, *, order_by: str = "") -> list[dict]:
        """ExecuteBillQuery, all pages of ``limit`` rows, as ``{field_key: value}`` dicts."""
        if not field_keys:
            raise ValueError("bill_query needs at least one field key")
        keys = [validate_field_key(key) for key in field_keys]
        if limit < 1:
            raise ValueError("limit must be at least 1")
        order_keys = [part.strip() for part in order_by.split(",") if part.strip()]
        for part in order_keys:
            name, _, direction = part.partition(" ")
            validate_field_key(name)
            if direction.strip().upper() not in ("", "ASC", "DESC"):
                raise ValueError(f"not an order direction: {direction!r}")
        filter_string = build_filter_string(filters)
        if filter_string is None:
            return []
        started = time.monotonic()
        rows: list[dict] = []
        start_row = 0
        pages = 0
        while True:
            data = {"FormId": form_id, "FieldKeys": ",".join(keys), "FilterString": filter_string,
                    "OrderString": ",".join(order_keys), "TopRowCount": 0, "StartRow": start_row,
                    "Limit": limit, "SubSystemId": ""}
            page = self._call("ExecuteBillQuery", {"data": data})
            pages += 1
            error = query_error_status(page)
            if error is not None:
                raise KingdeeError(error.first_message(), msg_code=error.msg_code,
                                   errors=[_field_error(e) for e in error.errors], service="ExecuteBillQuery")
            if not isinstance(page, list):
                raise KingdeeError(f"unexpected answer: {str(page)[:200]}", service="ExecuteBillQuery")
            for row in page:
                if not isinstance(row, list) or len(row) != len(keys):
                    raise KingdeeError(f"row does not match the {len(keys)} field keys: {str(row)[:200]}",
                                       service="ExecuteBillQuery")
                rows.append(dict(zip(keys, row, strict=True)))
            if len(page) < limit:
                break
            start_row += len(page)
        self.log.info("Kingdee ExecuteBillQuery %s: %d rows in %d pages in %.2fs", form_id, len(rows), pages,
                      time.monotonic() - started)
        return rows

    def test_connection(self) -> tuple[bool, str]:
        try:
            if self.config.auth_mode == "session":
                self.login()
            else:
                self.bill_query("AP_PAYBILL", ["FID"], {"FID": 0}, limit=1)
        except Exception as exc:
            return False, str(exc)
        return True, "Connection successfully tested"
