"""The hooks' shared transport pieces: extras reader, secret masking, error resolution, retry loop."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from dingtalk_kingdee.errors import DingTalkError, KingdeeAuthError, KingdeeError
from dingtalk_kingdee.hooks.dingtalk_answers import Answer, Verdict, resolve_answer
from dingtalk_kingdee.hooks.dingtalk_config import DingTalkConnectionConfig, RetryPolicy
from dingtalk_kingdee.hooks.kingdee import resolve_answer as resolve_kingdee_answer
from dingtalk_kingdee.hooks.kingdee_config import KingdeeConnectionConfig
from dingtalk_kingdee.hooks.transport import (
    SUCCESS,
    ConnectionExtras,
    ErrorResolution,
    ExponentialBackoff,
    ResponseAction,
    RetryBudget,
    call_with_retries,
    redact,
    register_secret,
    resolve_request_exception,
)
from dingtalk_kingdee.hooks.transport.redaction import RedactingFilter, install_log_filter

# ---- extras reader --------------------------------------------------------------------------


def test_plain_key_legacy_key_and_default() -> None:
    extras = ConnectionExtras("dingtalk", {"qps": 40, "extra__dingtalk__agent_id": "123"})
    assert extras.get("qps") == 40
    assert extras.get("agent_id") == "123"
    assert extras.get("max_workers") is None
    assert extras.get("max_workers", 7) == 7


def test_empty_values_count_as_absent() -> None:
    # Old UI forms wrote every untouched field as "" (or None for integer fields).
    extras = ConnectionExtras("kingdee", {"lcid": "", "extra__kingdee__lcid": None,
                                          "org_num": None, "extra__kingdee__org_num": "100"})
    assert extras.integer("lcid", 2052) == 2052
    assert extras.text("org_num", "0") == "100"


def test_plain_key_wins_and_a_conflict_is_warned() -> None:
    extras = ConnectionExtras("dingtalk", {"qps": 40, "extra__dingtalk__qps": 20}, conn_id="c1")
    with pytest.warns(UserWarning, match="extra__dingtalk__qps"):
        assert extras.number("qps", 1) == 40.0


def test_false_and_zero_are_values_not_absence() -> None:
    extras = ConnectionExtras("kingdee", {"verify": False, "retry_backoff": 0})
    assert extras.get("verify") is False
    assert extras.number("retry_backoff", 1.0) == 0.0


def test_both_connection_configs_read_legacy_keys() -> None:
    dingtalk = DingTalkConnectionConfig.from_connection(SimpleNamespace(
        conn_id="d", host="", schema=None, port=None, login="app", password="secret",
        extra_dejson={"extra__dingtalk__qps": "5", "extra__dingtalk__agent_id": "42"}))
    assert (dingtalk.qps, dingtalk.agent_id, dingtalk.base_url) == (5.0, "42", "https://oapi.dingtalk.com")
    assert "secret" not in repr(dingtalk)
    kingdee = KingdeeConnectionConfig.from_connection(SimpleNamespace(
        conn_id="k", host="erp.example.com/k3cloud", login="u", password="pw",
        extra_dejson={"extra__kingdee__acct_id": "6500a1", "extra__kingdee__auth_mode": "signature",
                      "extra__kingdee__app_id": "123_abc", "extra__kingdee__verify": True}))
    assert (kingdee.acct_id, kingdee.auth_mode, kingdee.app_id) == ("6500a1", "signature", "123_abc")
    assert kingdee.server_url == "https://erp.example.com/k3cloud/"


def test_legacy_key_cannot_switch_tls_off() -> None:
    with pytest.raises(ValueError, match="TLS"):
        KingdeeConnectionConfig.from_connection(SimpleNamespace(
            conn_id="k", host="https://erp", login="u", password="pw",
            extra_dejson={"acct_id": "a", "extra__kingdee__verify_ssl": False}))


def test_connection_configs_are_frozen() -> None:
    config = DingTalkConnectionConfig.from_connection(SimpleNamespace(
        conn_id="d", host=None, login="app", password="s", extra_dejson={}))
    with pytest.raises(AttributeError):
        config.qps = 1  # type: ignore[misc]


# ---- masking ------------------------------------------------------------------------------


@pytest.mark.parametrize("parameter", ["access_token", "appsecret", "password", "client_secret"])
def test_secret_query_parameters_are_masked(parameter: str) -> None:
    masked = redact(f"GET http://h/x?a=1&{parameter}=v4lue-xyz&b=2")
    assert "v4lue-xyz" not in masked and f"{parameter}=***" in masked and "a=1" in masked


def test_registered_secrets_are_masked_longest_first() -> None:
    register_secret("transport-secret")
    register_secret("transport-secret-long")
    assert redact("a transport-secret-long b transport-secret c") == "a *** b *** c"
    register_secret("")  # nothing to mask, nothing masked
    assert redact("plain text") == "plain text"


def test_one_filter_per_logger_and_it_masks_request_lines() -> None:
    first = install_log_filter(("test.transport.logger",))
    again = install_log_filter(("test.transport.logger",))
    assert first is again
    assert sum(isinstance(f, RedactingFilter) for f in logging.getLogger("test.transport.logger").filters) == 1
    record = logging.LogRecord("test.transport.logger", logging.DEBUG, __file__, 1, '"%s %s"',
                               ("POST", "/topapi/x?access_token=tok42"), None)
    first.filter(record)
    assert "tok42" not in record.getMessage()


# ---- resolution of transport failures -----------------------------------------------------


def _refused() -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "refused")))


@pytest.mark.parametrize(("exc", "action", "processed"), [
    (_refused(), ResponseAction.RETRY, False),
    (requests.exceptions.ConnectTimeout(), ResponseAction.RETRY, False),
    (requests.exceptions.ReadTimeout(), ResponseAction.RETRY, True),
    (requests.exceptions.ConnectionError(ProtocolError("Connection aborted.")), ResponseAction.RETRY, True),
    (requests.exceptions.ChunkedEncodingError(), ResponseAction.RETRY, True),
    (requests.exceptions.SSLError("certificate verify failed"), ResponseAction.FAIL, False),
    (requests.exceptions.MissingSchema("no scheme"), ResponseAction.FAIL, False),
])
def test_request_exceptions_resolve(exc, action, processed) -> None:
    resolution = resolve_request_exception(exc, "Svc")
    assert (resolution.action, resolution.may_have_been_processed) == (action, processed)


def test_a_bad_url_fails_as_a_configuration_error() -> None:
    resolution = resolve_request_exception(requests.exceptions.InvalidURL("http://?access_token=t0k"), "Svc")
    assert isinstance(resolution.error, ValueError)
    assert "t0k" not in resolution.message


@pytest.mark.parametrize(("verdict", "action", "budget"), [
    (Verdict.TOKEN_INVALID, ResponseAction.REFRESH_AUTH_THEN_RETRY, "transient"),
    (Verdict.THROTTLED, ResponseAction.RATE_LIMITED, "throttled"),
    (Verdict.BANNED, ResponseAction.RATE_LIMITED, "banned"),
    (Verdict.BUSY, ResponseAction.RETRY, "busy"),
    (Verdict.TRANSIENT, ResponseAction.RETRY, "transient"),
    (Verdict.PERMANENT, ResponseAction.FAIL, "transient"),
])
def test_dingtalk_verdicts_resolve(verdict, action, budget) -> None:
    resolution = resolve_answer(Answer(verdict, errcode=90018, errmsg="m", maybe_processed=False), "api/x")
    assert (resolution.action, resolution.budget) == (action, budget)
    assert isinstance(resolution.error, DingTalkError) and resolution.error.api == "api/x"
    assert resolve_answer(Answer(Verdict.OK, body={}), "api/x") is SUCCESS


def test_every_dingtalk_budget_exists() -> None:
    budgets = RetryPolicy().budgets()
    assert {"transient", "banned", "throttled", "busy"} <= set(budgets)
    assert budgets["banned"].name == budgets["transient"].name  # a ban counts as a transient failure


@pytest.mark.parametrize(("status", "text", "action", "error"), [
    (200, '{"Result": {}}', ResponseAction.SUCCESS, None),
    (401, "no", ResponseAction.FAIL, KingdeeAuthError),
    (500, "fail to verify the signature", ResponseAction.FAIL, KingdeeAuthError),
    (404, "not found", ResponseAction.FAIL, KingdeeError),
    (429, "slow down", ResponseAction.RETRY, None),
    (502, "<html>", ResponseAction.RETRY, None),
    (200, "response_error: boom", ResponseAction.RETRY, None),
    (200, "<html>", ResponseAction.RETRY, None),
])
def test_kingdee_answers_resolve(status, text, action, error) -> None:
    _payload, resolution = resolve_kingdee_answer("BatchSave", status, text, "text/plain")
    assert resolution.action is action
    assert resolution.may_have_been_processed  # only the transport knows a request was never sent
    assert (type(resolution.error) if resolution.error else None) is error


# ---- the retry loop ------------------------------------------------------------------------


class Script:
    """Attempts that answer a scripted list of resolutions; records waits and refreshes."""

    def __init__(self, *resolutions: ErrorResolution) -> None:
        self.resolutions = list(resolutions)
        self.calls = 0
        self.waits: list[tuple[float, ResponseAction]] = []
        self.refreshes = 0

    def attempt(self) -> tuple[object, ErrorResolution]:
        self.calls += 1
        return f"payload-{self.calls}", self.resolutions.pop(0)

    def wait(self, seconds: float, resolution: ErrorResolution) -> None:
        self.waits.append((seconds, resolution.action))

    def refresh(self, _resolution: ErrorResolution) -> None:
        self.refreshes += 1


class Errors:
    def failed(self, resolution):
        return resolution.error or RuntimeError(f"failed: {resolution.message}")

    def outcome_unknown(self, resolution):
        return LookupError(f"unknown: {resolution.message}")

    def exhausted(self, resolution, failures):
        return TimeoutError(f"exhausted after {failures}")


BUDGETS = {"transient": RetryBudget("transient", 2, backoff=ExponentialBackoff(1.0, 30.0, jitter=False)),
           "banned": RetryBudget("transient", 2, wait=5.0),
           "throttled": RetryBudget("throttled", 1, wait=0.5)}
RETRY = ErrorResolution(ResponseAction.RETRY, "5xx")
NOT_SENT = ErrorResolution(ResponseAction.RETRY, "refused", may_have_been_processed=False)


def run(script: Script, idempotent: bool = True, refresh: bool = True):
    return call_with_retries(script.attempt, budgets=BUDGETS, idempotent=idempotent, errors=Errors(),
                             wait=script.wait, refresh_auth=script.refresh if refresh else None)


def test_retries_with_backoff_then_succeeds() -> None:
    script = Script(RETRY, RETRY, SUCCESS)
    assert run(script) == "payload-3"
    assert script.waits == [(1.0, ResponseAction.RETRY), (2.0, ResponseAction.RETRY)]


def test_exhausted_budget_names_the_failure_count() -> None:
    with pytest.raises(TimeoutError, match="after 3"):
        run(Script(RETRY, RETRY, RETRY))


def test_budgets_sharing_a_name_share_one_count_and_the_services_wait_wins() -> None:
    banned = ErrorResolution(ResponseAction.RATE_LIMITED, "ban", budget="banned", may_have_been_processed=False)
    told = ErrorResolution(ResponseAction.RATE_LIMITED, "ban", budget="banned", wait=9.0,
                           may_have_been_processed=False)
    script = Script(RETRY, banned, told)
    with pytest.raises(TimeoutError, match="after 3"):
        run(script)
    assert script.waits == [(1.0, ResponseAction.RETRY), (5.0, ResponseAction.RATE_LIMITED)]


def test_a_write_that_may_have_been_processed_is_never_resent() -> None:
    script = Script(RETRY)
    with pytest.raises(LookupError, match="unknown: 5xx"):
        run(script, idempotent=False)
    assert script.calls == 1 and script.waits == []


def test_a_write_that_never_reached_the_service_is_retried() -> None:
    script = Script(NOT_SENT, SUCCESS)
    assert run(script, idempotent=False) == "payload-2"


def test_auth_is_refreshed_once_then_the_call_fails() -> None:
    refused = ErrorResolution(ResponseAction.REFRESH_AUTH_THEN_RETRY, "token", error=PermissionError("token"))
    script = Script(refused, SUCCESS)
    assert run(script) == "payload-2" and script.refreshes == 1
    script = Script(refused, refused)
    with pytest.raises(PermissionError):
        run(script)
    assert script.refreshes == 1
    with pytest.raises(PermissionError):  # a call that cannot refresh (the login itself) fails at once
        run(Script(refused), refresh=False)


def test_fail_is_never_retried() -> None:
    script = Script(ErrorResolution(ResponseAction.FAIL, "bad request"))
    with pytest.raises(RuntimeError, match="bad request"):
        run(script)
    assert script.calls == 1


def test_exponential_backoff() -> None:
    plain = ExponentialBackoff(0.01, 0.05, jitter=False)
    assert [plain.delay(n) for n in (1, 2, 3, 4)] == [0.01, 0.02, 0.04, 0.05]
    jittered = ExponentialBackoff(0.5, 10)
    assert jittered.delay(3, rng=lambda: 0.0) == 1.0 and jittered.delay(3, rng=lambda: 1.0) == 2.0
