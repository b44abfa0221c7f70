"""Pure logic of KingdeeHook: request bodies, lenient answer parsing, FilterString escaping, config."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from dingtalk_kingdee.errors import KingdeeError, KingdeeOutcomeUnknown
from dingtalk_kingdee.hooks.kingdee import KingdeeHook
from dingtalk_kingdee.hooks.kingdee_answers import (
    FieldError,
    is_session_lost,
    lenient_bool,
    lenient_int,
    operation_result,
    query_error_status,
    save_outcomes,
)
from dingtalk_kingdee.hooks.kingdee_config import KingdeeConnectionConfig
from dingtalk_kingdee.hooks.kingdee_requests import (
    batch_save_body,
    build_filter_string,
    filter_literal,
    to_json,
    validate_field_key,
)
from dingtalk_kingdee.hooks.transport import never_sent


def answer(is_success=True, msg_code=0, errors=(), successes=()) -> dict:
    return {"Result": {"ResponseStatus": {"IsSuccess": is_success, "MsgCode": msg_code,
                                          "Errors": list(errors), "SuccessEntitys": list(successes),
                                          "SuccessMessages": []}}}


# -- bodies ------------------------------------------------------------------------------------

def test_decimals_become_exact_strings_anywhere() -> None:
    model = {"FPAYBILLENTRY": [{"FPAYTOTALAMOUNTFOR": Decimal("1234567890.10")},
                               {"FPAYTOTALAMOUNTFOR": Decimal("0.1") + Decimal("0.2")}],
             "FEXCHANGERATE": Decimal("1E+0"), "nested": {"x": [Decimal("1E+2")]}}
    decoded = json.loads(to_json(model))
    assert decoded["FPAYBILLENTRY"][0]["FPAYTOTALAMOUNTFOR"] == "1234567890.10"
    assert decoded["FPAYBILLENTRY"][1]["FPAYTOTALAMOUNTFOR"] == "0.3"
    assert decoded["FEXCHANGERATE"] == "1"
    assert decoded["nested"]["x"] == ["100"]


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), float("nan"), object(), {1, 2}])
def test_unserialisable_values_are_refused(bad) -> None:
    with pytest.raises((TypeError, ValueError)):
        to_json({"v": bad})


def test_batch_save_body_shape_and_boolean_options() -> None:
    models = [{"FBillNo": "A"}, {"FBillNo": "B"}]
    body = batch_save_body("AP_PAYBILL", models, {"IsVerifyBaseDataField": True, "IsDeleteEntry": False,
                                                  "NeedReturnFields": ["FBillNo"], "BatchCount": 2})
    assert body == {"formid": "AP_PAYBILL", "data": {
        "IsVerifyBaseDataField": "true", "IsDeleteEntry": "false", "NeedReturnFields": ["FBillNo"],
        "BatchCount": 2, "Model": models}}


def test_batch_save_body_refuses_non_dict_models_and_model_option() -> None:
    with pytest.raises(TypeError):
        batch_save_body("AP_PAYBILL", [["not", "a", "dict"]])
    with pytest.raises(ValueError):
        batch_save_body("AP_PAYBILL", [{}], {"Model": []})


# -- lenient parsing ---------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    (True, True), (False, False), ("true", True), ("false", False), ("False", False), ("TRUE", True),
    (1, True), (0, False), (None, False), ("", False)])
def test_lenient_bool(raw, expected) -> None:
    assert lenient_bool(raw) is expected


@pytest.mark.parametrize(("raw", "expected"), [
    (11, 11), ("11", 11), ("", None), (None, None), (" 1 ", 1), ("-5", -5), (True, None), ("x", None),
    (3.0, 3)])
def test_lenient_int(raw, expected) -> None:
    assert lenient_int(raw) == expected


def test_all_success() -> None:
    outcomes = save_outcomes(answer(successes=[{"Id": 7, "Number": "FKD1", "DIndex": 1},
                                               {"Id": "6", "Number": "FKD0", "DIndex": 0}]), 2)
    assert [(o.index, o.success, o.kingdee_id, o.number) for o in outcomes] == [
        (0, True, 6, "FKD0"), (1, True, 7, "FKD1")]


def test_partial_batch_with_string_is_success_and_empty_msg_code() -> None:
    payload = answer(is_success="false", msg_code="", successes=[{"Id": 9, "Number": "FKD9", "DIndex": 0}],
                     errors=[{"FieldName": "FBillNo", "Message": "违反字段唯一性要求", "DIndex": 2},
                             {"FieldName": None, "Message": "第1行分录，【结算方式】字段必录", "DIndex": 2}])
    outcomes = save_outcomes(payload, 3)
    assert outcomes[0].success and outcomes[0].number == "FKD9"
    assert not outcomes[1].success
    assert outcomes[1].unknown and "neither as saved nor as refused" in outcomes[1].errors[0].message
    assert outcomes[2].errors == [FieldError("FBillNo", "违反字段唯一性要求"),
                                   FieldError(None, "第1行分录，【结算方式】字段必录")]
    assert not outcomes[2].success and outcomes[2].kingdee_id is None


def test_errors_without_dindex_apply_to_every_unsaved_model() -> None:
    payload = answer(is_success=False, msg_code=11, successes=[{"Id": 1, "Number": "N", "DIndex": 1}],
                     errors=[{"FieldName": "FDATE", "Message": "bad date"}])
    outcomes = save_outcomes(payload, 2)
    assert outcomes[0].errors == [FieldError("FDATE", "bad date")]
    assert outcomes[1].success and outcomes[1].errors == []


@pytest.mark.parametrize("code", [1, 2, 4, 8, 14, 15, "8"])
def test_whole_call_failure_raises(code) -> None:
    payload = answer(is_success=False, msg_code=code, errors=[{"FieldName": None, "Message": "无权限",
                                                               "DIndex": 0}])
    with pytest.raises(KingdeeError) as caught:
        save_outcomes(payload, 3)
    assert caught.value.msg_code == int(code)
    assert "无权限" in str(caught.value)


def test_whole_call_code_with_per_model_errors_gives_outcomes() -> None:
    payload = answer(is_success=False, msg_code=2, errors=[{"Message": "x", "DIndex": 0},
                                                           {"Message": "y", "DIndex": 1}])
    outcomes = save_outcomes(payload, 2)
    assert [o.errors[0].message for o in outcomes] == ["x", "y"]


def test_unattributable_success_is_outcome_unknown() -> None:
    with pytest.raises(KingdeeOutcomeUnknown):
        save_outcomes(answer(successes=[{"Id": 1, "Number": "N"}]), 2)
    # A single model needs no DIndex to be attributed.
    assert save_outcomes(answer(successes=[{"Id": 1, "Number": "N"}]), 1)[0].success


def test_a_save_answered_without_status_has_an_unknown_outcome() -> None:
    """{"Result": {"Message": "ok"}} after a committed save: the bills may be in Kingdee."""
    with pytest.raises(KingdeeOutcomeUnknown):
        save_outcomes({"unexpected": True}, 1)
    with pytest.raises(KingdeeOutcomeUnknown):
        save_outcomes({"Result": {"Message": "ok"}}, 3)


def test_a_success_without_entities_leaves_every_model_unknown() -> None:
    outcomes = save_outcomes(answer(is_success=True, successes=[], errors=[]), 3)
    assert [(o.success, o.unknown) for o in outcomes] == [(False, True)] * 3


def test_errors_without_dindex_in_a_batch_with_several_unsaved_models_refuse_none() -> None:
    outcomes = save_outcomes(answer(is_success=False, msg_code=11, errors=[{"FieldName": "FDATE", "Message": "x"}]), 2)
    assert [o.unknown for o in outcomes] == [True, True]


def test_operation_result() -> None:
    ok = operation_result(answer(successes=[{"Id": 1, "Number": "FKD1", "DIndex": 0}]), "Audit")
    assert ok.success and ok.numbers_ok == ["FKD1"] and ok.errors == [] and ok.msg_code == 0
    failed = operation_result(answer(is_success="false", msg_code=11,
                                     errors=[{"FieldName": None, "Message": "已审核", "DIndex": 0}]), "Audit")
    assert not failed.success and failed.msg_code == 11 and failed.errors[0].message == "已审核"
    with pytest.raises(KingdeeError):
        operation_result(answer(is_success=False, msg_code=4, errors=[{"Message": "boom"}]), "Submit")


def test_session_lost_detection_in_every_shape() -> None:
    lost = answer(is_success=False, msg_code=1,
                  errors=[{"Message": "会话信息已丢失，请重新登录", "DIndex": 0}])
    assert is_session_lost(lost)
    assert is_session_lost([[lost]])
    assert not is_session_lost(answer(is_success=False, msg_code=11))
    assert not is_session_lost([[1, "FKD1"]])
    assert not is_session_lost([])


def test_query_error_rows() -> None:
    status = query_error_status([[{"Result": {"ResponseStatus": {"IsSuccess": False, "MsgCode": 8,
                                                                 "Errors": [{"Message": "bad key"}]}}}]])
    assert status is not None and status.msg_code == 8 and status.first_message() == "bad key"
    assert query_error_status([[1, "a"], [2, "b"]]) is None
    assert query_error_status([]) is None


# -- FilterString ------------------------------------------------------------------------------

def test_filter_string_escapes_quotes_and_keeps_numbers() -> None:
    assert build_filter_string({"FTHIRDBILLNO": "x' OR '1'='1", "FID": 12, "FAMOUNT": Decimal("1.50")}) == (
        "FTHIRDBILLNO='x'' OR ''1''=''1' AND FID=12 AND FAMOUNT=1.50")
    assert build_filter_string({"FBillNo": "' OR 1=1 --"}) == "FBillNo=''' OR 1=1 --'"


def test_filter_string_in_null_dotted_and_dates() -> None:
    assert build_filter_string({"FCONTACTUNIT.FNumber": ["EMP1001", "O'Neil"], "FREMARK": None}) == (
        "FCONTACTUNIT.FNumber IN ('EMP1001','O''Neil') AND FREMARK IS NULL")
    assert build_filter_string({"FDATE": date(2024, 3, 5)}) == "FDATE='2024-03-05'"
    assert build_filter_string({"FDATE": datetime(2024, 3, 5, 8, 1, 2)}) == "FDATE='2024-03-05 08:01:02'"
    assert build_filter_string({}) == ""
    assert build_filter_string(None) == ""


def test_empty_in_list_matches_nothing() -> None:
    assert build_filter_string({"FBillNo": []}) is None


@pytest.mark.parametrize("key", ["FID; DROP TABLE T", "F ID", "FID--", "1FID", "F.ID.", "FID)", "", "FÏD",
                                 "FID='1' OR 1=1"])
def test_bad_field_keys_are_refused(key) -> None:
    with pytest.raises(ValueError):
        validate_field_key(key)
    with pytest.raises(ValueError):
        build_filter_string({key: 1})


@pytest.mark.parametrize("value", [True, object(), float("inf"), Decimal("NaN"), "a\x00b",
                                   datetime(2024, 1, 1, tzinfo=UTC)])
def test_unrenderable_values_are_refused(value) -> None:
    with pytest.raises((TypeError, ValueError)):
        filter_literal(value)


def test_in_list_refuses_none_and_nesting() -> None:
    with pytest.raises(TypeError):
        build_filter_string({"FID": [1, None]})
    with pytest.raises(TypeError):
        build_filter_string({"FID": [[1]]})


# -- connection config -------------------------------------------------------------------------

def _conn(**overrides) -> SimpleNamespace:
    values = {"host": "https://erp.example.com/k3cloud", "login": "apiuser", "password": "pw",
              "extra_dejson": {"acct_id": "6500a1", "lcid": 2052, "org_num": "100"}}
    values.update(overrides)
    return SimpleNamespace(**values)


def test_config_defaults_and_normalised_url() -> None:
    config = KingdeeConnectionConfig.from_connection(_conn())
    assert config.server_url == "https://erp.example.com/k3cloud/"
    assert config.auth_mode == "session" and config.lcid == 2052 and config.org_num == "100"
    assert config.ca_bundle is None
    assert "pw" not in repr(config)


@pytest.mark.parametrize("extra", [
    {"acct_id": "a", "verify": False}, {"acct_id": "a", "verify_ssl": False},
    {"acct_id": "a", "auth_mode": "signature"}, {"acct_id": "a", "auth_mode": "basic"}, {}])
def test_config_refusals(extra) -> None:
    with pytest.raises(ValueError):
        KingdeeConnectionConfig.from_connection(_conn(extra_dejson=extra))


def test_never_sent_classification() -> None:
    refused = requests.exceptions.ConnectionError(
        MaxRetryError(None, "/", NewConnectionError(None, "Connection refused")))
    dropped = requests.exceptions.ConnectionError(ProtocolError("Connection aborted."))
    assert never_sent(refused)
    assert never_sent(requests.exceptions.ConnectTimeout())
    assert not never_sent(dropped)
    assert not never_sent(requests.exceptions.ReadTimeout())


def test_hook_metadata() -> None:
    assert KingdeeHook.conn_name_attr == "kingdee_conn_id"
    assert KingdeeHook.default_conn_name == "kingdee_default"
    assert KingdeeHook.conn_type == "kingdee"
