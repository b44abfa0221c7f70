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

The hook is a ``BaseHook`` owning one ``requests`` session (its login cookies live as long as the
hook). Request bodies are built in ``kingdee_requests``, answers read in ``kingdee_answers``, the
connection in ``kingdee_config``; retry, back-off and masking come from ``transport``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import requests
from airflow.sdk import BaseHook

from dingtalk_kingdee.errors import KingdeeAuthError, KingdeeError, KingdeeOutcomeUnknown
from dingtalk_kingdee.hooks.kingdee_answers import (
    SESSION_LOST,
    FieldError,
    OperationResult,
    SaveOutcome,
    field_error,
    is_session_lost,
    lenient_int,
    operation_result,
    parse_response_status,
    query_error_status,
    save_outcomes,
)
from dingtalk_kingdee.hooks.kingdee_config import KingdeeConnectionConfig
from dingtalk_kingdee.hooks.kingdee_requests import (
    batch_save_body,
    build_filter_string,
    to_json,
    validate_field_key,
)
from dingtalk_kingdee.hooks.kingdee_signature import SignatureIdentity, signature_headers
from dingtalk_kingdee.hooks.transport import (
    SUCCESS,
    ErrorResolution,
    ExponentialBackoff,
    ResponseAction,
    RetryBudget,
    call_with_retries,
    new_session,
    register_secret,
    resolve_request_exception,
)

# What the pipeline and tests use from here, besides the hook.
__all__ = ["FieldError", "KingdeeConnectionConfig", "KingdeeHook", "OperationResult", "SaveOutcome"]

AUTH_SERVICE = "Kingdee.BOS.WebApi.ServicesStub.AuthService."
FORM_SERVICE = "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService."
SERVICE_NAMESPACES = {
    "ValidateUser": AUTH_SERVICE,
    "LoginByAppSecret": AUTH_SERVICE,
}
# Services without side effects: safe to send again when no answer came.
READ_SERVICES = frozenset({"ExecuteBillQuery", "BillQuery", "View", "ValidateUser", "LoginByAppSecret",
                           "GetDataCenterList"})
LOGIN_SERVICES = frozenset({"ValidateUser", "LoginByAppSecret"})
LOGIN_ACCEPTED = frozenset({1, -5})  # -5: "needs form handling", accepted as success by integrators
SESSION_COOKIE = "kdservice-sessionid"
MAX_BACKOFF = 30.0
# Base data a bill may reference: audited (C) and not forbidden (A).
USABLE_BASE_DATA = {"FDocumentStatus": "C", "FForbidStatus": "A"}


class _GiveUp:
    """The exceptions a Kingdee call raises when the retry loop gives up (``transport.RetryErrors``)."""

    def __init__(self, service: str) -> None:
        self.service = service

    def failed(self, resolution: ErrorResolution) -> Exception:
        if resolution.error is not None:
            return resolution.error
        return KingdeeError(resolution.message, service=self.service)

    def outcome_unknown(self, resolution: ErrorResolution) -> Exception:
        return KingdeeOutcomeUnknown(f"{self.service}: {resolution.message}; the call may have been processed, "
                                     "query Kingdee before sending it again")

    def exhausted(self, resolution: ErrorResolution, failures: int) -> Exception:
        return KingdeeError(f"no usable answer after {failures} attempts (last: {resolution.message})",
                            service=self.service)


def resolve_answer(service: str, status: int, text: str, content_type: str) -> tuple[Any, ErrorResolution]:
    """One HTTP answer of Kingdee → (parsed JSON, resolution). Session loss is the caller's to judge."""
    if status not in (200, 206):
        if "fail to verify" in text.lower() or status in (401, 403):
            return None, ErrorResolution(ResponseAction.FAIL, f"HTTP {status}", error=KingdeeAuthError(
                f"HTTP {status}: {text.strip()[:200]}", service=service))
        if 300 <= status < 500 and status not in (408, 429):
            # The server refused the request before processing it (bad URL, too large, ...).
            return None, ErrorResolution(ResponseAction.FAIL, f"HTTP {status}", error=KingdeeError(
                f"HTTP {status}: {text.strip()[:200]}", service=service))
        return None, ErrorResolution(ResponseAction.RETRY, f"HTTP {status}")
    if text.lstrip().startswith("response_error:"):
        return None, ErrorResolution(ResponseAction.RETRY, "server exception (response_error)")
    try:
        # Amounts come back exact: JSON decimals are read as Decimal, never float.
        return json.loads(text, parse_float=Decimal), SUCCESS
    except ValueError:
        return None, ErrorResolution(ResponseAction.RETRY, f"answer is not JSON ({content_type})")


class KingdeeHook(BaseHook):
    """Kingdee K/3Cloud WebAPI client (session login or per-request signature)."""

    conn_name_attr = "kingdee_conn_id"
    default_conn_name = "kingdee_default"
    conn_type = "kingdee"
    hook_name = "Kingdee K/3Cloud WebAPI"

    def __init__(self, kingdee_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
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
            register_secret(self._config.secret)
        return self._config

    def get_conn(self) -> requests.Session:
        """One requests session per hook, so the login cookies live as long as the hook.

        Per-request headers (signature, session id) travel with each request, not in the session.
        """
        if self._session is None:
            self._session = new_session({"Content-Type": "application/json", "Accept-Charset": "utf-8",
                                         "User-Agent": "dingtalk-kingdee KingdeeHook"}, self.config.ca_bundle)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = None
        self._session_id = ""
        self._logged_in = False

    def _service_url(self, service: str) -> str:
        return self.config.server_url + SERVICE_NAMESPACES.get(service, FORM_SERVICE) + service + ".common.kdsvc"

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

    def _session_lost(self, service: str, payload: Any) -> ErrorResolution:
        status = parse_response_status(payload)
        message = status.first_message() if status else "session lost"
        # A real server answers MsgCode 1 to a wrong user, app id or app secret in signature mode.
        error_type = KingdeeAuthError if self.config.auth_mode == "signature" else KingdeeError
        return ErrorResolution(ResponseAction.REFRESH_AUTH_THEN_RETRY, f"session lost: {message}",
                               may_have_been_processed=False,
                               error=error_type(message, msg_code=SESSION_LOST, service=service))

    def _renew_session(self, service: str) -> None:
        """After "session lost": log in again (session mode) or drop the server session (signature)."""
        config = self.config
        self.log.info("Kingdee %s: session lost, %s once and calling again", service,
                      "logging in" if config.auth_mode == "session" else "dropping the server session")
        if config.auth_mode == "session":
            self._logged_in = False
            self.login()
        else:
            self.get_conn().cookies.clear()
            self._session_id = ""

    def _post(self, service: str, body: Mapping[str, Any]) -> Any:
        """POST one service call; retries only what is safe to send again. Returns the parsed JSON.

        A business call that answers "session lost" renews the session once and is sent again (the
        server refused it unprocessed, so this holds for writes too).
        """
        config = self.config
        payload = to_json(body).encode("utf-8")
        url = self._service_url(service)
        session = self.get_conn()
        renewable = service not in LOGIN_SERVICES

        def attempt() -> tuple[Any, ErrorResolution]:
            try:
                response = session.post(url, data=payload, headers=self._request_headers(url),
                                        timeout=(config.connect_timeout, config.read_timeout),
                                        allow_redirects=False)
            except requests.exceptions.RequestException as exc:
                return None, resolve_request_exception(exc, "Kingdee")
            answer, resolution = resolve_answer(service, response.status_code, response.text,
                                                response.headers.get("Content-Type", "no type"))
            if renewable and resolution.action is ResponseAction.SUCCESS and is_session_lost(answer):
                return answer, self._session_lost(service, answer)
            return answer, resolution

        backoff = ExponentialBackoff(config.retry_backoff, MAX_BACKOFF, jitter=False)
        return call_with_retries(
            attempt, budgets={"transient": RetryBudget("transient", config.max_attempts - 1, backoff=backoff)},
            idempotent=service in READ_SERVICES, errors=_GiveUp(service),
            wait=lambda seconds, _resolution: self.sleep(seconds),
            refresh_auth=(lambda _resolution: self._renew_session(service)) if renewable else None,
            log=self.log, label=f"Kingdee {service}")

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
        register_secret(session_id)
        context = answer.get("Context") if isinstance(answer.get("Context"), dict) else {}
        register_secret(str(context.get("SessionId") or ""))
        self._logged_in = True
        self.log.info("Kingdee %s: logged in as %s to account set %s in %.2fs", service,
                      config.user_name, config.acct_id, time.monotonic() - started)

    def _call(self, service: str, body: Mapping[str, Any]) -> Any:
        """A business call: lazy login first (session mode)."""
        if self.config.auth_mode == "session" and not self._logged_in:
            self.login()
        return self._post(service, body)

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
                                   errors=[field_error(e) for e in error.errors], service="ExecuteBillQuery")
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

    def query_base_data(self, form_id: str, field_keys: Sequence[str], *,
                        usable_only: bool = True) -> list[dict]:
        """Rows of a base-data form (BD_Empinfo, BD_Department, BD_Expense, ...) through
        ExecuteBillQuery, ordered by number; ``usable_only``: only enabled, audited records
        (``FDocumentStatus='C' AND FForbidStatus='A'``), the ones a bill may reference."""
        return self.bill_query(form_id, list(field_keys), dict(USABLE_BASE_DATA) if usable_only else None,
                               order_by="FNumber")

    def test_connection(self) -> tuple[bool, str]:
        try:
            if self.config.auth_mode == "session":
                self.login()
            else:
                self.bill_query("AP_PAYBILL", ["FID"], {"FID": 0}, limit=1)
        except Exception as exc:
            return False, str(exc)
        return True, "Connection successfully tested"
