"""KingdeeHook against the Kingdee emulator over real HTTP (session and signature modes, faults)."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from dk_emulators.kingdee.basedata import demo_paybill

from dingtalk_kingdee.errors import KingdeeAuthError, KingdeeError, KingdeeOutcomeUnknown
from dingtalk_kingdee.hooks.kingdee import KingdeeHook
from dingtalk_kingdee.hooks.kingdee_signature import SignatureIdentity, signature_headers

UNIVERSE = json.loads((Path(__file__).resolve().parents[2] / "include" / "demo" / "universe.json")
                      .read_text(encoding="utf-8"))
FORM = "AP_PAYBILL"
SAVE_OPTIONS = {"IsVerifyBaseDataField": True, "NeedReturnFields": ["FBillNo"]}


def paybill(bill_no: str, amounts: list[Decimal] | None = None, employee_index: int = 0,
            third_bill_no: str | None = None) -> dict:
    """A valid AP_PAYBILL model from the demo universe's codes."""
    return demo_paybill(UNIVERSE, bill_no, amounts or [Decimal("100.00")], employee_index,
                        third_bill_no=third_bill_no)


@pytest.fixture
def hook(kingdee_conn_id: str) -> KingdeeHook:
    made = KingdeeHook(kingdee_conn_id=kingdee_conn_id)
    yield made
    made.close()


@pytest.fixture
def signature_hook(kingdee_signature_conn_id: str) -> KingdeeHook:
    made = KingdeeHook(kingdee_conn_id=kingdee_signature_conn_id)
    yield made
    made.close()


def _conn_env(monkeypatch: pytest.MonkeyPatch, conn_id: str, hook: KingdeeHook, **changes) -> str:
    """A copy of ``hook``'s connection under ``conn_id`` with ``changes`` (login, password, extra keys)."""
    config = hook.config
    extra = {"acct_id": config.acct_id, "app_id": config.app_id, "lcid": config.lcid,
             "org_num": config.org_num, "auth_mode": config.auth_mode, "retry_backoff": 0.01}
    extra.update(changes.pop("extra", {}))
    connection = {"conn_type": "kingdee", "host": config.server_url, "login": config.user_name,
                  "password": config.secret, "extra": extra}
    connection.update(changes)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return conn_id


@pytest.fixture
def fast_hook(hook: KingdeeHook, monkeypatch: pytest.MonkeyPatch) -> KingdeeHook:
    """The session-mode hook with a 10 ms retry backoff, so fault tests stay quick."""
    made = KingdeeHook(kingdee_conn_id=_conn_env(monkeypatch, "kingdee_fast", hook))
    yield made
    made.close()


def query_bills(hook: KingdeeHook, **filters) -> list[dict]:
    return hook.bill_query(FORM, ["FID", "FBillNo", "FTHIRDBILLNO", "FDOCUMENTSTATUS"], filters)


# -- happy paths -------------------------------------------------------------------------------

def test_session_login_batch_save_and_query(hook: KingdeeHook, kingdee_emulator) -> None:
    outcomes = hook.batch_save(FORM, [paybill("EXP-S1"), paybill("EXP-S2", employee_index=1)], SAVE_OPTIONS)
    assert [(o.index, o.success, o.number) for o in outcomes] == [(0, True, "EXP-S1"), (1, True, "EXP-S2")]
    assert all(isinstance(o.kingdee_id, int) for o in outcomes)
    rows = query_bills(hook, FBillNo=["EXP-S1", "EXP-S2"])
    assert sorted((r["FBillNo"], r["FID"]) for r in rows) == sorted((o.number, o.kingdee_id) for o in outcomes)
    assert {r["FDOCUMENTSTATUS"] for r in rows} == {"A"}
    assert {b["FBillNo"] for b in kingdee_emulator.bills(FORM)} == {"EXP-S1", "EXP-S2"}


def test_signature_mode_batch_save_and_query(signature_hook: KingdeeHook, kingdee_emulator) -> None:
    outcomes = signature_hook.batch_save(FORM, [paybill("EXP-G1")], SAVE_OPTIONS)
    assert outcomes[0].success and outcomes[0].number == "EXP-G1"
    rows = query_bills(signature_hook, FTHIRDBILLNO="T-EXP-G1")
    assert [r["FBillNo"] for r in rows] == ["EXP-G1"]


def test_hook_signature_headers_equal_the_sdk(signature_hook: KingdeeHook) -> None:
    from k3cloud_webapi_sdk.main import K3CloudApiSdk

    config = signature_hook.config
    url = config.server_url + "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.BatchSave.common.kdsvc"
    signature_hook.clock = lambda: 1700000000.0
    ours = signature_hook._request_headers(url)

    sdk = K3CloudApiSdk(config.server_url)
    sdk.InitConfig(config.acct_id, config.user_name, config.app_id, config.secret, config.server_url,
                   lcid=config.lcid, org_num=int(config.org_num))
    from unittest import mock
    with mock.patch("k3cloud_webapi_sdk.core.webapi_client.time.time", return_value=1700000000.0):
        theirs = sdk.BuildHeader(url)
    for name in ("X-Api-ClientID", "X-Api-Auth-Version", "x-api-timestamp", "x-api-nonce",
                 "x-api-signheaders", "X-Api-Signature", "X-Kd-Appkey", "X-Kd-Appdata", "X-Kd-Signature"):
        assert ours[name] == theirs[name], name
    identity = SignatureIdentity(config.acct_id, config.user_name, config.app_id, config.secret, config.lcid,
                                 config.org_num)
    assert ours.items() >= signature_headers(identity, url, 1700000000).items()


def test_signature_with_wrong_secret_is_auth_error(signature_hook: KingdeeHook,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    bad = KingdeeHook(kingdee_conn_id=_conn_env(monkeypatch, "kingdee_badsig", signature_hook,
                                                password="0" * 32))
    with pytest.raises(KingdeeAuthError):
        bad.batch_save(FORM, [paybill("EXP-BADSIG")])


# -- per-model outcomes ------------------------------------------------------------------------

def test_partial_batch_gives_one_outcome_per_model(hook: KingdeeHook, kingdee_emulator) -> None:
    bad_employee = paybill("EXP-P2")
    bad_employee["FCONTACTUNIT"] = {"FNumber": "EMP-NOT-THERE"}
    no_amount = paybill("EXP-P3")
    del no_amount["FPAYBILLENTRY"][0]["FPAYTOTALAMOUNTFOR"]
    outcomes = hook.batch_save(FORM, [paybill("EXP-P1"), bad_employee, no_amount, paybill("EXP-P4")],
                               SAVE_OPTIONS)
    assert [o.index for o in outcomes] == [0, 1, 2, 3]
    assert [o.success for o in outcomes] == [True, False, False, True]
    assert outcomes[1].errors and outcomes[2].errors
    stored = {b["FBillNo"] for b in kingdee_emulator.bills(FORM)}
    # Whatever the server keeps of a partly failing batch, the outcomes say exactly that.
    assert stored == {o.number for o in outcomes if o.success}


def test_duplicate_bill_number_fails_that_model(hook: KingdeeHook) -> None:
    assert hook.batch_save(FORM, [paybill("EXP-D1")])[0].success
    outcomes = hook.batch_save(FORM, [paybill("EXP-D2"), paybill("EXP-D1", third_bill_no="T-OTHER")])
    assert outcomes[0].success
    assert not outcomes[1].success
    assert any(e.field == "FBillNo" for e in outcomes[1].errors)
    assert len(query_bills(hook, FBillNo="EXP-D1")) == 1


def test_missing_base_data_refused_with_verification(hook: KingdeeHook) -> None:
    model = paybill("EXP-M1")
    model["FPAYBILLENTRY"][0]["FCOSTID"] = {"FNumber": "FYXM99-MISSING"}
    outcome = hook.batch_save(FORM, [model], {"IsVerifyBaseDataField": True})[0]
    assert not outcome.success
    assert outcome.errors and all(e.message for e in outcome.errors)
    assert query_bills(hook, FBillNo="EXP-M1") == []


def test_decimal_amounts_round_trip_exactly(hook: KingdeeHook, kingdee_emulator) -> None:
    amounts = [Decimal("1234567.89"), Decimal("0.10"), Decimal("0.20")]
    assert hook.batch_save(FORM, [paybill("EXP-DEC", amounts)])[0].success
    rows = hook.bill_query(FORM, ["FBillNo", "FPAYBILLENTRY_FPAYTOTALAMOUNTFOR"], {"FBillNo": "EXP-DEC"})
    got = sorted(Decimal(str(r["FPAYBILLENTRY_FPAYTOTALAMOUNTFOR"])) for r in rows)
    assert got == sorted(amounts)
    assert sum(got) == Decimal("1234568.19")
    assert all(not isinstance(r["FPAYBILLENTRY_FPAYTOTALAMOUNTFOR"], float) for r in rows)


# -- submit / audit ----------------------------------------------------------------------------

def test_submit_then_audit_then_audit_again(hook: KingdeeHook) -> None:
    hook.batch_save(FORM, [paybill("EXP-A1"), paybill("EXP-A2")])
    submitted = hook.submit(FORM, ["EXP-A1", "EXP-A2"])
    assert submitted.success and sorted(submitted.numbers_ok) == ["EXP-A1", "EXP-A2"]
    assert {r["FDOCUMENTSTATUS"] for r in query_bills(hook, FBillNo=["EXP-A1", "EXP-A2"])} == {"B"}
    audited = hook.audit(FORM, ["EXP-A1"])
    assert audited.success and audited.numbers_ok == ["EXP-A1"]
    statuses = {r["FBillNo"]: r["FDOCUMENTSTATUS"] for r in query_bills(hook, FBillNo=["EXP-A1", "EXP-A2"])}
    assert statuses == {"EXP-A1": "C", "EXP-A2": "B"}
    again = hook.audit(FORM, ["EXP-A1"])
    assert not again.success
    assert again.errors and again.numbers_ok == []


# -- queries -----------------------------------------------------------------------------------

@pytest.mark.parametrize("attack", ["x' OR '1'='1", "' OR 1=1 --", "T-EXP-Q1' OR FBillNo<>'"])
def test_filter_injection_returns_nothing_and_changes_nothing(hook: KingdeeHook, kingdee_emulator,
                                                              attack: str) -> None:
    hook.batch_save(FORM, [paybill("EXP-Q1"), paybill("EXP-Q2")])
    before = kingdee_emulator.bills(FORM)
    assert query_bills(hook, FTHIRDBILLNO=attack) == []
    assert query_bills(hook, FBillNo=[attack, "nothing"]) == []
    assert kingdee_emulator.bills(FORM) == before


def test_query_pages_until_a_short_page(hook: KingdeeHook) -> None:
    hook.batch_save(FORM, [paybill(f"EXP-PG{i}") for i in range(7)])
    rows = hook.bill_query(FORM, ["FBillNo"], {"FBillNo": [f"EXP-PG{i}" for i in range(7)]}, limit=3)
    assert sorted(r["FBillNo"] for r in rows) == [f"EXP-PG{i}" for i in range(7)]


def test_bad_field_key_is_a_kingdee_error(hook: KingdeeHook) -> None:
    with pytest.raises(KingdeeError):
        hook.bill_query(FORM, ["FNOSUCHFIELD"], {"FBillNo": "x"})


# -- authentication ----------------------------------------------------------------------------

def test_session_lost_mid_run_logs_in_once_more(fast_hook: KingdeeHook, kingdee_emulator) -> None:
    assert fast_hook.batch_save(FORM, [paybill("EXP-L1")])[0].success
    assert kingdee_emulator.calls["ValidateUser"] == 1
    kingdee_emulator.inject("session_lost")
    outcome = fast_hook.batch_save(FORM, [paybill("EXP-L2")])[0]
    assert outcome.success
    assert kingdee_emulator.calls["ValidateUser"] == 2
    assert kingdee_emulator.calls["BatchSave"] == 3  # refused once for the lost session, then saved
    assert len(query_bills(fast_hook, FBillNo="EXP-L2")) == 1


def test_session_lost_twice_in_a_row_is_an_error(fast_hook: KingdeeHook, kingdee_emulator) -> None:
    fast_hook.login()
    kingdee_emulator.inject("session_lost", service="BatchSave", times=2)
    with pytest.raises(KingdeeError) as caught:
        fast_hook.batch_save(FORM, [paybill("EXP-L3")])
    assert caught.value.msg_code == 1
    assert kingdee_emulator.calls["ValidateUser"] == 2  # one re-login only


def test_bad_password_is_auth_error(hook: KingdeeHook, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = KingdeeHook(kingdee_conn_id=_conn_env(monkeypatch, "kingdee_badpw", hook, password="wrong"))
    with pytest.raises(KingdeeAuthError):
        bad.batch_save(FORM, [paybill("EXP-BADPW")])
    with pytest.raises(KingdeeAuthError):
        bad.login()


def test_bad_account_set_is_auth_error(hook: KingdeeHook, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = KingdeeHook(kingdee_conn_id=_conn_env(monkeypatch, "kingdee_badacct", hook,
                                                extra={"acct_id": "no-such-acct"}))
    with pytest.raises(KingdeeAuthError):
        bad.login()


# -- faults: reads are retried, writes are never resent ----------------------------------------

READ_FAULTS = ["http_500", "http_502", "html_error", "response_error", "drop"]


@pytest.mark.parametrize("fault", READ_FAULTS)
def test_read_fault_is_retried(fast_hook: KingdeeHook, kingdee_emulator, fault: str) -> None:
    fast_hook.batch_save(FORM, [paybill("EXP-R1")])
    kingdee_emulator.inject(fault, service="ExecuteBillQuery", times=2)
    calls_before = kingdee_emulator.calls["ExecuteBillQuery"]
    assert [r["FBillNo"] for r in query_bills(fast_hook, FBillNo="EXP-R1")] == ["EXP-R1"]
    assert kingdee_emulator.calls["ExecuteBillQuery"] - calls_before == 3


@pytest.mark.parametrize("fault", [*READ_FAULTS, "commit_then_drop"])
def test_write_fault_is_outcome_unknown_and_not_resent(fast_hook: KingdeeHook, kingdee_emulator,
                                                       fault: str) -> None:
    fast_hook.login()
    kingdee_emulator.inject(fault, service="BatchSave", times=1)
    with pytest.raises(KingdeeOutcomeUnknown) as caught:
        fast_hook.batch_save(FORM, [paybill("EXP-W1")])
    assert "BatchSave" in str(caught.value)
    assert kingdee_emulator.calls["BatchSave"] == 1  # sent once, never resent
    if fault == "commit_then_drop":
        # The server committed before dropping the connection: reconciliation finds the bill.
        assert [r["FBillNo"] for r in query_bills(fast_hook, FTHIRDBILLNO="T-EXP-W1")] == ["EXP-W1"]


def test_submit_fault_is_outcome_unknown(fast_hook: KingdeeHook, kingdee_emulator) -> None:
    fast_hook.batch_save(FORM, [paybill("EXP-U1")])
    kingdee_emulator.inject("commit_then_drop", service="Submit", times=1)
    with pytest.raises(KingdeeOutcomeUnknown, match="Submit"):
        fast_hook.submit(FORM, ["EXP-U1"])
    assert [r["FDOCUMENTSTATUS"] for r in query_bills(fast_hook, FBillNo="EXP-U1")] == ["B"]


def test_read_timeout_on_write_is_outcome_unknown(hook: KingdeeHook, kingdee_emulator,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    slow = KingdeeHook(kingdee_conn_id=_conn_env(monkeypatch, "kingdee_slow", hook,
                                                 extra={"read_timeout": 0.3}))
    slow.login()
    kingdee_emulator.inject({"kind": "latency", "latency_ms": 1500}, service="BatchSave", times=1)
    with pytest.raises(KingdeeOutcomeUnknown):
        slow.batch_save(FORM, [paybill("EXP-T1")])


def test_connection_refused_is_retried_then_reported(hook: KingdeeHook,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = KingdeeHook(kingdee_conn_id=_conn_env(monkeypatch, "kingdee_dead", hook,
                                                 host=f"http://127.0.0.1:{port}/k3cloud/",
                                                 extra={"max_attempts": 3}))
    sleeps: list[float] = []
    dead.sleep = sleeps.append
    with pytest.raises(KingdeeError, match="3 attempts") as caught:
        dead.batch_save(FORM, [paybill("EXP-X1")])
    assert not isinstance(caught.value, KingdeeOutcomeUnknown)
    assert sleeps == [0.01, 0.02]


def test_tls_verification_cannot_be_disabled(hook: KingdeeHook, monkeypatch: pytest.MonkeyPatch) -> None:
    insecure = KingdeeHook(kingdee_conn_id=_conn_env(monkeypatch, "kingdee_insecure", hook,
                                                     extra={"verify": False}))
    with pytest.raises(ValueError, match="TLS"):
        insecure.login()
    assert hook.get_conn().verify is True
    assert isinstance(hook.get_conn(), requests.Session)


# -- logs --------------------------------------------------------------------------------------

def test_logs_hold_no_secret(hook: KingdeeHook, signature_hook: KingdeeHook, kingdee_emulator,
                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        hook.batch_save(FORM, [paybill("EXP-LOG1")])
        kingdee_emulator.inject("session_lost")
        hook.bill_query(FORM, ["FBillNo"], {"FBillNo": "EXP-LOG1"})
        signature_hook.batch_save(FORM, [paybill("EXP-LOG2")])
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    secrets = [hook.config.secret, signature_hook.config.secret, hook._session_id]
    assert all(secrets)
    for secret in secrets:
        assert secret not in text
    assert "BatchSave" in text and "ExecuteBillQuery" in text
