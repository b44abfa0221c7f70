"""The Kingdee K/3Cloud WebAPI emulator over real HTTP: requests, and the official SDK unchanged."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import pytest
import requests
from dk_emulators.kingdee import (
    DEMO_APP_ID,
    DEMO_APP_SECRET,
    KingdeeEmulator,
    client_secret,
    dumps,
    signature_headers,
)
from dk_emulators.kingdee import basedata as kingdee_basedata
from k3cloud_webapi_sdk.main import K3CloudApiSdk

AUTH = "Kingdee.BOS.WebApi.ServicesStub.AuthService."
FORM = "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService."
SESSION_LOST = "会话信息已丢失，请重新登录"


def paybill(employee: str = "EMP1001", amount: Any = "123.45", **header: Any) -> dict[str, Any]:
    model: dict[str, Any] = {
        "FBillNo": "",
        "FBillTypeID": {"FNUMBER": "FKDLX02_SYS"},
        "FDATE": "2024-03-05",
        "FCONTACTUNITTYPE": "BD_Empinfo", "FCONTACTUNIT": {"FNumber": employee},
        "FRECTUNITTYPE": "BD_Empinfo", "FRECTUNIT": {"FNumber": employee},
        "FCURRENCYID": {"FNumber": "PRE001"}, "FSETTLECUR": {"FNumber": "PRE001"},
        "FPAYORGID": {"FNumber": "100"}, "FSETTLEORGID": {"FNumber": "100"},
        "FDepartment": {"FNumber": "BM001"},
        "FREMARK": "差旅费报销",
        "FTHIRDBILLNO": "202403051012000123456",
        "FPAYBILLENTRY": [
            {"FSETTLETYPEID": {"FNumber": "JSFS04_SYS"}, "FPURPOSEID": {"FNumber": "SFKYT10_SYS"},
             "FPAYTOTALAMOUNTFOR": amount, "FCOSTID": {"FNumber": "FYXM01"}, "FCOMMENT": "机票"},
            {"FSETTLETYPEID": {"FNumber": "JSFS04_SYS"}, "FPURPOSEID": {"FNumber": "SFKYT10_SYS"},
             "FPAYTOTALAMOUNTFOR": "10.00", "FCOSTID": {"FNumber": "FYXM02"}, "FCOMMENT": "出租车"},
        ],
    }
    model.update(header)
    return model


class Client:
    """A minimal session-mode client over requests (cookies kept by the requests.Session)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()

    def post(self, service: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.http.post(f"{self.base_url}{service}.common.kdsvc", data=dumps(body).encode(),
                              headers={"Content-Type": "application/json"}, timeout=10, **kwargs)

    def call(self, service: str, body: Any) -> Any:
        response = self.post(service, body)
        assert response.status_code == 200, response.text
        return json.loads(response.text, parse_float=Decimal)

    def login(self, user: str = "demo", password: str = "demo-password", acct: str = "demo-acct") -> Any:
        return self.call(AUTH + "ValidateUser",
                         {"acctID": acct, "username": user, "password": password, "lcid": 2052})

    def save(self, models: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
        return self.call(FORM + "BatchSave", {"formid": "AP_PAYBILL", "data": {**options, "Model": models}})

    def operate(self, operation: str, numbers: list[str]) -> dict[str, Any]:
        return self.call(FORM + operation, {"formid": "AP_PAYBILL",
                                            "data": {"CreateOrgId": 0, "Numbers": numbers, "Ids": ""}})

    def query(self, field_keys: str, filter_string: str = "", **extra: Any) -> Any:
        return self.call(FORM + "ExecuteBillQuery", {"data": {
            "FormId": "AP_PAYBILL", "FieldKeys": field_keys, "FilterString": filter_string,
            "OrderString": "", "TopRowCount": 0, "StartRow": 0, "Limit": 2000, **extra}})


@pytest.fixture
def client(kingdee_emulator: KingdeeEmulator) -> Client:
    c = Client(kingdee_emulator.base_url)
    assert c.login()["LoginResultType"] == 1
    return c


def status(answer: dict[str, Any]) -> dict[str, Any]:
    return answer["Result"]["ResponseStatus"]


# ------------------------------------------------------------------------------------- signature

VECTOR = {"acct": "6500a1b2c3d4e5", "user": "apiuser", "app_id": "123456_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
          "secret": "0123456789abcdef0123456789abcdef",
          "path": "/k3cloud/Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc"}


def test_reference_signature_vector() -> None:
    headers = signature_headers(VECTOR["path"], VECTOR["acct"], VECTOR["user"], VECTOR["app_id"],
                                VECTOR["secret"], 2052, 100, 1700000000)
    assert headers["X-Api-Signature"] == (
        "YzQ1YjFmZTY4MmNmMTU5ZjlkMTY1ZGE5ZmUwZWUwZTQ1ZmM3YjI5M2VkMTgzNWZjYTQzNTgxMTQxYjI0MmE2MQ==")
    assert headers["X-Kd-Appdata"] == "NjUwMGExYjJjM2Q0ZTUsYXBpdXNlciwyMDUyLDEwMA=="
    assert headers["X-Kd-Signature"] == (
        "MjZkYzExYzEwMzAzMzE3MWMzMzQyYjdmNDBjNzdkYTdiYTdlNzc5MGEzNTg4YzIxYWRhMmFkNzg5MDU1OTRlOQ==")
    assert headers["X-Api-ClientID"] == "123456"


def test_client_secret_matches_the_official_sdk() -> None:
    from k3cloud_webapi_sdk.util import encode_util

    part = VECTOR["app_id"].split("_")[1]
    assert client_secret(VECTOR["app_id"]) == encode_util.DecodeAppSecret(part)
    assert client_secret(DEMO_APP_ID) == encode_util.DecodeAppSecret(DEMO_APP_ID.split("_")[1])


def test_reference_vector_verifies_over_http() -> None:
    emulator = KingdeeEmulator(acct_id=VECTOR["acct"], users={VECTOR["user"]: "x"},
                               apps={VECTOR["app_id"]: VECTOR["secret"]})
    base = emulator.start()
    try:
        headers = signature_headers(VECTOR["path"], VECTOR["acct"], VECTOR["user"], VECTOR["app_id"],
                                    VECTOR["secret"], 2052, 100, 1700000000)
        url = base + "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.Save.common.kdsvc"
        answer = requests.post(url, json={"formid": "AP_PAYBILL", "data": {"Model": paybill()}},
                               headers=headers, timeout=10).json()
        assert status(answer)["IsSuccess"] is True
        assert answer["Result"]["Number"] == "FKD00000001"
        tampered = dict(headers, **{"X-Api-Signature": headers["X-Api-Signature"][:-4] + "AAA="})
        answer = requests.post(url, json={"formid": "AP_PAYBILL", "data": {"Model": paybill()}},
                               headers=tampered, timeout=10).json()
        assert status(answer)["MsgCode"] == 1
        assert status(answer)["Errors"][0]["Message"] == SESSION_LOST
    finally:
        emulator.stop()


def test_signature_clock_skew_is_optional() -> None:
    emulator = KingdeeEmulator(acct_id=VECTOR["acct"], users={VECTOR["user"]: "x"},
                               apps={VECTOR["app_id"]: VECTOR["secret"]}, max_clock_skew_s=300)
    base = emulator.start()
    try:
        url = base + "Kingdee.BOS.WebApi.ServicesStub.DynamicFormService.ExecuteBillQuery.common.kdsvc"
        body = {"data": {"FormId": "AP_PAYBILL", "FieldKeys": "FID"}}
        old = signature_headers(url[url.index("/k3cloud/"):], VECTOR["acct"], VECTOR["user"],
                                VECTOR["app_id"], VECTOR["secret"], 2052, 0, 1700000000)
        assert requests.post(url, json=body, headers=old, timeout=10).json()[0][0][
            "Result"]["ResponseStatus"]["MsgCode"] == 1
        fresh = signature_headers(url[url.index("/k3cloud/"):], VECTOR["acct"], VECTOR["user"],
                                  VECTOR["app_id"], VECTOR["secret"], 2052, 0, int(time.time()))
        assert requests.post(url, json=body, headers=fresh, timeout=10).json() == []
    finally:
        emulator.stop()


def sdk_for(emulator: KingdeeEmulator, acct: str = "demo-acct", user: str = "demo",
            app_id: str = DEMO_APP_ID, secret: str = DEMO_APP_SECRET) -> K3CloudApiSdk:
    sdk = K3CloudApiSdk(emulator.base_url)
    sdk.InitConfig(acct, user, app_id, secret, emulator.base_url, 2052, 100)
    return sdk


def test_official_sdk_batch_save_and_query(kingdee_emulator: KingdeeEmulator) -> None:
    sdk = sdk_for(kingdee_emulator)
    models = [paybill(FTHIRDBILLNO=f"TB-{i}") for i in range(3)]
    answer = json.loads(sdk.BatchSave("AP_PAYBILL", {"NeedReturnFields": ["FBillNo"], "Model": models}))
    assert status(answer)["IsSuccess"] is True
    assert [e["DIndex"] for e in status(answer)["SuccessEntitys"]] == [0, 1, 2]
    numbers = [e["Number"] for e in status(answer)["SuccessEntitys"]]
    assert answer["Result"]["NeedReturnData"] == [{"FBillNo": n} for n in numbers]
    rows = json.loads(sdk.ExecuteBillQuery({
        "FormId": "AP_PAYBILL", "FieldKeys": "FBillNo,FTHIRDBILLNO,FDOCUMENTSTATUS,FCONTACTUNIT.FNumber",
        "FilterString": "FTHIRDBILLNO IN ('TB-0','TB-2')", "OrderString": "FBillNo DESC", "TopRowCount": 0,
        "StartRow": 0, "Limit": 2000, "SubSystemId": ""}))
    assert rows == [[numbers[2], "TB-2", "A", "EMP1001"], [numbers[0], "TB-0", "A", "EMP1001"]]
    assert json.loads(sdk.Submit("AP_PAYBILL", {"Numbers": numbers}))["Result"]["ResponseStatus"]["IsSuccess"]
    assert json.loads(sdk.Audit("AP_PAYBILL", {"Numbers": numbers}))["Result"]["ResponseStatus"]["IsSuccess"]
    assert {b["FDOCUMENTSTATUS"] for b in kingdee_emulator.bills()} == {"C"}


def test_official_sdk_with_wrong_credentials(kingdee_emulator: KingdeeEmulator) -> None:
    wrong_secret = sdk_for(kingdee_emulator, secret="not-the-secret")
    answer = json.loads(wrong_secret.BatchSave("AP_PAYBILL", {"Model": [paybill()]}))
    assert status(answer)["MsgCode"] == 1
    unknown_user = sdk_for(kingdee_emulator, user="nobody")
    assert status(json.loads(unknown_user.View("AP_PAYBILL", {"Number": "X"})))["MsgCode"] == 1
    bad_acct = sdk_for(kingdee_emulator, acct="no-such-acct")
    with pytest.raises(RuntimeError, match="Fail to verify thirty passport"):
        bad_acct.BatchSave("AP_PAYBILL", {"Model": [paybill()]})
    assert kingdee_emulator.bills() == []


def test_official_sdk_sees_response_error_as_exception(kingdee_emulator: KingdeeEmulator) -> None:
    kingdee_emulator.inject("response_error", service="BatchSave")
    with pytest.raises(RuntimeError, match="deadlocked"):
        sdk_for(kingdee_emulator).BatchSave("AP_PAYBILL", {"Model": [paybill()]})
    assert kingdee_emulator.bills() == []


# ------------------------------------------------------------------------------------------- auth

def test_session_login_answer_and_cookies(kingdee_emulator: KingdeeEmulator) -> None:
    c = Client(kingdee_emulator.base_url)
    answer = c.login()
    assert answer["LoginResultType"] == 1 and answer["IsSuccessByAPI"] is True
    assert answer["Context"]["UserName"] == "demo"
    assert c.http.cookies.get("kdservice-sessionid") == answer["KDSVCSessionId"]
    assert c.http.cookies.get("ASP.NET_SessionId")
    assert status(c.save([paybill()]))["IsSuccess"] is True


def test_positional_logins_and_header_session(kingdee_emulator: KingdeeEmulator) -> None:
    base = kingdee_emulator.base_url
    answer = requests.post(base + AUTH + "ValidateUser.common.kdsvc",
                           json={"parameters": ["demo-acct", "demo", "demo-password", 2052]}, timeout=10).json()
    assert answer["LoginResultType"] == 1
    by_secret = requests.post(base + AUTH + "LoginByAppSecret.common.kdsvc", timeout=10, json={
        "parameters": ["demo-acct", "demo", DEMO_APP_ID, DEMO_APP_SECRET, 2052]}).json()
    assert by_secret["LoginResultType"] == 1
    # no cookie jar here: the session id travels only in the kdservice-sessionid header
    url = base + FORM + "ExecuteBillQuery.common.kdsvc"
    body = {"data": {"FormId": "AP_PAYBILL", "FieldKeys": "FID"}}
    assert requests.post(url, json=body, timeout=10,
                         headers={"kdservice-sessionid": by_secret["KDSVCSessionId"]}).json() == []
    lost = requests.post(url, json=body, timeout=10).json()
    assert lost[0][0]["Result"]["ResponseStatus"]["MsgCode"] == 1


@pytest.mark.parametrize("user, password, acct, result_type", [
    ("demo", "wrong", "demo-acct", 0),
    ("nobody", "demo-password", "demo-acct", 0),
    ("demo", "demo-password", "other-acct", -1),
])
def test_failed_logins(kingdee_emulator: KingdeeEmulator, user: str, password: str, acct: str,
                       result_type: int) -> None:
    c = Client(kingdee_emulator.base_url)
    answer = c.login(user, password, acct)
    assert answer["LoginResultType"] == result_type
    assert answer["Message"] and answer["KDSVCSessionId"] is None
    assert status(c.save([paybill()]))["Errors"][0]["Message"] == SESSION_LOST


def test_login_by_app_secret_with_a_wrong_secret(kingdee_emulator: KingdeeEmulator) -> None:
    answer = requests.post(kingdee_emulator.base_url + AUTH + "LoginByAppSecret.common.kdsvc", timeout=10,
                           json={"parameters": ["demo-acct", "demo", DEMO_APP_ID, "wrong", 2052]}).json()
    assert answer["LoginResultType"] == 0 and answer["IsSuccessByAPI"] is False


def test_session_expires_after_ttl() -> None:
    emulator = KingdeeEmulator(session_ttl=0.2)
    emulator.start()
    try:
        c = Client(emulator.base_url)
        c.login()
        assert c.query("FID") == []
        time.sleep(0.4)
        assert c.query("FID")[0][0]["Result"]["ResponseStatus"]["Errors"][0]["Message"] == SESSION_LOST
        c.login()
        assert c.query("FID") == []
    finally:
        emulator.stop()


# ----------------------------------------------------------------------------------- body shapes

def test_three_body_shapes(client: Client) -> None:
    dict_shape = client.call(FORM + "Save", {"formid": "AP_PAYBILL", "data": {"Model": paybill()}})
    string_shape = client.call(FORM + "Save", {"formid": "AP_PAYBILL",
                                               "data": json.dumps({"Model": paybill()})})
    positional = client.call(FORM + "Save", {"parameters": ["AP_PAYBILL", json.dumps({"Model": paybill()})]})
    capitalised = client.call(FORM + "Save", {"FormId": "AP_PAYBILL", "Data": {"Model": paybill()}})
    numbers = [a["Result"]["Number"] for a in (dict_shape, string_shape, positional, capitalised)]
    assert numbers == ["FKD00000001", "FKD00000002", "FKD00000003", "FKD00000004"]
    rows = client.call(FORM + "ExecuteBillQuery", {"parameters": [json.dumps(
        {"FormId": "AP_PAYBILL", "FieldKeys": "FBillNo", "FilterString": "FBillNo='FKD00000003'"})]})
    assert rows == [["FKD00000003"]]


def test_unknown_form_is_refused(client: Client) -> None:
    answer = client.call(FORM + "BatchSave", {"formid": "AP_PAYBIL", "data": {"Model": [paybill()]}})
    assert status(answer)["IsSuccess"] is False
    assert "AP_PAYBIL" in status(answer)["Errors"][0]["Message"]
    rows = client.call(FORM + "ExecuteBillQuery", {"data": {"FormId": "NOPE", "FieldKeys": "FID"}})
    assert rows[0][0]["Result"]["ResponseStatus"]["IsSuccess"] is False


# ---------------------------------------------------------------------------------------- saving

def test_stored_bill_keeps_the_model_and_decimal_amounts(client: Client, kingdee_emulator: KingdeeEmulator
                                                         ) -> None:
    answer = client.save([paybill(amount=Decimal("1234.56"))])
    assert status(answer)["SuccessEntitys"] == [{"Id": 100001, "Number": "FKD00000001", "DIndex": 0}]
    [bill] = kingdee_emulator.bills()
    assert bill["FID"] == 100001 and bill["FBillNo"] == "FKD00000001" and bill["FDOCUMENTSTATUS"] == "A"
    assert bill["FCONTACTUNIT"] == {"FNumber": "EMP1001"} and bill["FREMARK"] == "差旅费报销"
    entries = bill["FPAYBILLENTRY"]
    assert [e["FPAYTOTALAMOUNTFOR"] for e in entries] == [Decimal("1234.56"), "10.00"]
    assert len({e["FEntryID"] for e in entries}) == 2
    assert bill["FCREATEDATE"]


def test_partial_batch_keeps_good_models(client: Client, kingdee_emulator: KingdeeEmulator) -> None:
    missing_org = paybill(FTHIRDBILLNO="bad-1")
    del missing_org["FPAYORGID"]
    no_settle = paybill(FTHIRDBILLNO="bad-3")
    del no_settle["FPAYBILLENTRY"][0]["FSETTLETYPEID"]
    answer = client.save([paybill(FTHIRDBILLNO="ok-0"), missing_org, paybill(FTHIRDBILLNO="ok-2"), no_settle])
    st = status(answer)
    assert st["IsSuccess"] is False and st["MsgCode"] == 11
    assert [e["DIndex"] for e in st["SuccessEntitys"]] == [0, 2]
    assert {(e["DIndex"], e["Message"]) for e in st["Errors"]} == {
        (1, "字段“付款组织”是必填项"), (3, "第1行分录，【结算方式】字段必录")}
    assert sorted(b["FTHIRDBILLNO"] for b in kingdee_emulator.bills()) == ["ok-0", "ok-2"]


def test_every_required_field_is_checked(client: Client) -> None:
    model = {"FPAYBILLENTRY": [{"FCOMMENT": "x"}]}
    messages = {e["Message"] for e in status(client.save([model]))["Errors"]}
    for label in ("单据类型", "业务日期", "往来单位类型", "往来单位", "收款单位类型", "收款单位", "币别",
                  "付款组织", "结算组织"):
        assert f"字段“{label}”是必填项" in messages
    for label in ("结算方式", "付款用途", "应付金额"):
        assert f"第1行分录，【{label}】字段必录" in messages


def test_duplicate_bill_number(client: Client, kingdee_emulator: KingdeeEmulator) -> None:
    assert status(client.save([paybill(FBillNo="EXP-1")]))["IsSuccess"] is True
    answer = client.save([paybill(FBillNo="EXP-1"), paybill(FBillNo="EXP-2"), paybill(FBillNo="EXP-2")])
    st = status(answer)
    assert st["MsgCode"] == 11 and st["ErrorCode"] == 500
    assert st["Errors"] == [
        {"FieldName": "FBillNo", "Message": "违反字段唯一性要求：编码唯一。[EXP-1]在当前系统中已经被使用。",
         "DIndex": 0},
        {"FieldName": "FBillNo", "Message": "违反字段唯一性要求：编码唯一。[EXP-2]在当前系统中已经被使用。",
         "DIndex": 2}]
    assert sorted(b["FBillNo"] for b in kingdee_emulator.bills()) == ["EXP-1", "EXP-2"]


@pytest.mark.parametrize("second", ["dupa", "DUPA ", "Dupa  ", "ＤＵＰＡ"])
def test_bill_numbers_are_unique_as_sql_server_compares_them(client: Client, kingdee_emulator: KingdeeEmulator,
                                                              second: str) -> None:
    """Case, width and trailing spaces do not make a second number (Chinese_PRC_CI_AS, an assumption)."""
    assert status(client.save([paybill(FBillNo="DUPA")]))["IsSuccess"] is True
    st = status(client.save([paybill(FBillNo=second)]))
    assert (st["IsSuccess"], st["MsgCode"], st["Errors"][0]["FieldName"]) == (False, 11, "FBillNo")
    assert [b["FBillNo"] for b in kingdee_emulator.bills()] == ["DUPA"]
    assert status(client.operate("Submit", ["dupa"]))["IsSuccess"] is True
    assert client.query("FBillNo", "FBillNo='dupa  '") == [["DUPA"]]


def test_a_different_accent_or_leading_space_is_another_number(client: Client) -> None:
    assert status(client.save([paybill(FBillNo="CAFE")]))["IsSuccess"] is True
    assert status(client.save([paybill(FBillNo="CAFÉ")]))["IsSuccess"] is True


def test_base_data_verification(client: Client, kingdee_emulator: KingdeeEmulator) -> None:
    unknown_cost = paybill()
    unknown_cost["FPAYBILLENTRY"][1]["FCOSTID"] = {"FNumber": "FYXM99"}
    verified = client.save([unknown_cost], IsVerifyBaseDataField="true")
    assert status(verified)["MsgCode"] == 9
    assert status(verified)["Errors"] == [{"FieldName": "FCOSTID", "DIndex": 0,
                                           "Message": "第2行分录，字段“费用项目”的值“FYXM99”在系统中不存在或未审核"}]
    # without verification an unresolved optional reference is dropped, a required one is missing
    assert status(client.save([unknown_cost], IsVerifyBaseDataField=False))["IsSuccess"] is True
    unknown_employee = paybill(employee="EMP9999")
    errors = status(client.save([unknown_employee]))["Errors"]
    assert {e["Message"] for e in errors} == {"字段“往来单位”是必填项", "字段“收款单位”是必填项"}
    rows = client.query("FBillNo,FPAYBILLENTRY_FEntryID,FCOSTID,FCOSTID.FNumber,FCOSTID.FName")
    assert [r[2:] for r in rows] == [[5001, "FYXM01", "差旅费"], [0, None, None]]


def test_unit_type_must_match_the_number(client: Client) -> None:
    supplier_typed = paybill(FCONTACTUNITTYPE="BD_Supplier")  # EMP1001 is an employee, not a supplier
    answer = client.save([supplier_typed], IsVerifyBaseDataField=True)
    assert status(answer)["Errors"] == [{"FieldName": "FCONTACTUNIT", "DIndex": 0,
                                         "Message": "字段“往来单位”的值“EMP1001”在系统中不存在或未审核"}]
    odd_type = paybill(FRECTUNITTYPE="BD_Nonsense")
    messages = {e["Message"] for e in status(client.save([odd_type]))["Errors"]}
    assert "字段“收款单位类型”的值“BD_Nonsense”不是有效的选项" in messages
    supplier = paybill(FCONTACTUNITTYPE="BD_Supplier", FCONTACTUNIT={"FNumber": "VEN00001"},
                       FRECTUNITTYPE="BD_Supplier", FRECTUNIT={"FNUMBER": "VEN00001"})
    assert status(client.save([supplier], IsVerifyBaseDataField=True))["IsSuccess"] is True
    assert client.query("FCONTACTUNIT.FNumber,FRECTUNIT.FName") == [["VEN00001", "上海示例供应商有限公司"]]


@pytest.mark.parametrize("amount, message", [
    ("0", "第1行分录，【应付金额】必须大于0"),
    (Decimal("-5.00"), "第1行分录，【应付金额】必须大于0"),
    ("abc", "第1行分录，字段“应付金额”的值“abc”不是有效的数值"),
])
def test_amounts_must_be_positive_numbers(client: Client, amount: Any, message: str) -> None:
    assert status(client.save([paybill(amount=amount)]))["Errors"][0]["Message"] == message


def test_bill_type_must_exist_and_date_must_parse(client: Client) -> None:
    errors = status(client.save([paybill(FBillTypeID={"FNUMBER": "FKDLX99"}, FDATE="2024-13-45")],
                                IsVerifyBaseDataField="TRUE"))["Errors"]
    assert {e["FieldName"] for e in errors} == {"FBillTypeID", "FDATE"}


def test_auto_submit_audit_and_status_transitions(client: Client, kingdee_emulator: KingdeeEmulator) -> None:
    auto = client.save([paybill(FTHIRDBILLNO="auto")], IsAutoSubmitAndAudit="true")
    assert status(auto)["IsSuccess"]
    number = client.save([paybill(FTHIRDBILLNO="manual")], IsAutoSubmitAndAudit="false",
                         NeedReturnFields=["FBillNo", "FDOCUMENTSTATUS"])["Result"]["NeedReturnData"][0]
    assert number["FDOCUMENTSTATUS"] == "A"
    manual = number["FBillNo"]
    assert status(client.operate("Audit", [manual]))["MsgCode"] == 11  # not submitted yet
    assert status(client.operate("Submit", [manual]))["SuccessEntitys"][0]["Number"] == manual
    assert status(client.operate("Delete", [manual]))["IsSuccess"] is False  # B cannot be deleted
    assert status(client.operate("Audit", [manual]))["IsSuccess"] is True
    again = status(client.operate("Audit", [manual]))
    assert again["IsSuccess"] is False and again["MsgCode"] == 11
    assert status(client.operate("UnAudit", [manual]))["IsSuccess"] is True
    states = {b["FTHIRDBILLNO"]: b["FDOCUMENTSTATUS"] for b in kingdee_emulator.bills()}
    assert states == {"auto": "C", "manual": "A"}
    mixed = status(client.operate("Delete", [manual, "FKD00000001", "NO-SUCH"]))
    assert [e["DIndex"] for e in mixed["SuccessEntitys"]] == [0]
    assert [e["DIndex"] for e in mixed["Errors"]] == [1, 2]
    assert [b["FTHIRDBILLNO"] for b in kingdee_emulator.bills()] == ["auto"]


def test_view_and_update_by_fid(client: Client, kingdee_emulator: KingdeeEmulator) -> None:
    fid = status(client.save([paybill()]))["SuccessEntitys"][0]["Id"]
    view = client.call(FORM + "View", {"formid": "AP_PAYBILL", "data": {"Id": fid}})["Result"]["Result"]
    assert view["BillNo"] == "FKD00000001" and view["FCONTACTUNIT"]["Number"] == "EMP1001"
    update = {"FID": fid, "FREMARK": "改", "FPAYBILLENTRY": [{"FEntryID": view["FPAYBILLENTRY"][0]["FEntryID"],
                                                             "FPAYTOTALAMOUNTFOR": "99.99"}]}
    assert status(client.save([update]))["IsSuccess"] is True
    [bill] = kingdee_emulator.bills()
    assert bill["FREMARK"] == "改" and [e["FPAYTOTALAMOUNTFOR"] for e in bill["FPAYBILLENTRY"]] == ["99.99"]
    missing = client.call(FORM + "View", {"formid": "AP_PAYBILL", "data": {"Number": "NOPE"}})
    assert status(missing)["IsSuccess"] is False


# ---------------------------------------------------------------------------------------- queries

def test_query_entry_rows_dates_and_amounts(client: Client) -> None:
    client.save([paybill(FTHIRDBILLNO="A-1", FDATE="2024-03-05 10:20:30"), paybill(FTHIRDBILLNO="B-2")])
    rows = client.query("FID,FBillNo,FDATE,FPAYBILLENTRY_FEntryID,FPAYTOTALAMOUNTFOR,FCOSTID.FNumber",
                        "FTHIRDBILLNO='A-1'")
    assert rows == [[100001, "FKD00000001", "2024-03-05T10:20:30", 100001, Decimal("123.45"), "FYXM01"],
                    [100001, "FKD00000001", "2024-03-05T10:20:30", 100002, Decimal("10.00"), "FYXM02"]]
    assert client.query("FBillNo", "FPAYTOTALAMOUNTFOR>100") == [["FKD00000001"], ["FKD00000002"]]
    assert client.query("FBillNo", "FDATE>='2024-03-05T10:00:00'") == [["FKD00000001"]]
    assert client.query("FBillNo", "", OrderString="FBillNo DESC", Limit=1) == [["FKD00000002"]]
    assert client.query("FBillNo", "", StartRow=1) == [["FKD00000002"]]
    dict_rows = client.call(FORM + "BillQuery", {"data": {"FormId": "AP_PAYBILL", "FieldKeys": "FBillNo,FID"}})
    assert dict_rows[0] == {"FBillNo": "FKD00000001", "FID": 100001}


def test_filter_injection_attempt_matches_nothing(client: Client) -> None:
    client.save([paybill(FTHIRDBILLNO="T-1"), paybill(FTHIRDBILLNO="x' OR 1=1 --")])
    attack = "x' OR '1'='1"
    escaped = "FTHIRDBILLNO='" + attack.replace("'", "''") + "'"
    assert client.query("FBillNo", escaped) == []
    literal = "FTHIRDBILLNO='" + "x' OR 1=1 --".replace("'", "''") + "'"
    assert client.query("FBillNo", literal) == [["FKD00000002"]]
    # the same value pasted unescaped is real SQL and matches every bill: why clients must escape
    assert client.query("FBillNo", "FTHIRDBILLNO='" + attack + "'") == [["FKD00000001"], ["FKD00000002"]]


@pytest.mark.parametrize("field_keys, filter_string", [
    ("FBillNo", "FBillNo = = 'x'"),
    ("FBillNo", "FBillNo='unterminated"),
    ("FNoSuchField", ""),
    ("FBillNo", "FNoSuchField=1"),
    ("FBillNo.FNumber", ""),
    ("FBillNo", "FID='not a number'"),
])
def test_query_errors_have_the_wrapped_shape(client: Client, field_keys: str, filter_string: str) -> None:
    client.save([paybill()])
    answer = client.query(field_keys, filter_string)
    assert len(answer) == 1 and len(answer[0]) == 1
    rs = answer[0][0]["Result"]["ResponseStatus"]
    assert rs["IsSuccess"] is False and rs["Errors"][0]["Message"]


def test_base_data_forms_are_queryable(client: Client) -> None:
    rows = client.call(FORM + "ExecuteBillQuery", {"data": {
        "FormId": "BD_Empinfo", "FieldKeys": "FNumber,FName", "FilterString": "FNumber='EMP1002'"}})
    assert rows == [["EMP1002", "王芳"]]


def test_base_data_carries_staff_numbers_departments_and_statuses(client: Client) -> None:
    rows = client.call(FORM + "ExecuteBillQuery", {"data": {
        "FormId": "BD_Empinfo",
        "FieldKeys": "FNumber,FName,FStaffNumber,FPostDept.FNumber,FPostDept.FName,FDocumentStatus,FForbidStatus",
        "FilterString": "FName='张伟'", "OrderString": "FNumber"}})
    assert rows == [["EMP1001", "张伟", "1001", "BM001", "行政部", "C", "A"],
                    ["EMP1021", "张伟", "1021", "BM003", "研发中心", "C", "A"]]
    usable = client.call(FORM + "ExecuteBillQuery", {"data": {
        "FormId": "BD_Empinfo", "FieldKeys": "FNumber",
        "FilterString": "FDocumentStatus='C' AND FForbidStatus='A'"}})
    forbidden = client.call(FORM + "ExecuteBillQuery", {"data": {
        "FormId": "BD_Empinfo", "FieldKeys": "FNumber,FName", "FilterString": "FForbidStatus='B'"}})
    assert ["EMP1022"] not in usable and len(usable) == 21
    assert forbidden == [["EMP1022", "陈晨"]]
    items = client.call(FORM + "ExecuteBillQuery", {"data": {
        "FormId": "BD_Expense", "FieldKeys": "FNumber,FName", "FilterString": "FName='差旅费'"}})
    assert items == [["FYXM01", "差旅费"]]


def test_a_bill_cannot_reference_a_forbidden_or_unaudited_record() -> None:
    document = copy.deepcopy(json.loads(kingdee_basedata.DEFAULT_OUT.read_text(encoding="utf-8")))
    employees = document["forms"]["BD_Empinfo"]
    next(r for r in employees if r["number"] == "EMP1002")["document_status"] = "A"
    emulator = KingdeeEmulator(basedata=document)
    client = Client(emulator.start())
    try:
        client.login()
        for number in ("EMP1022", "EMP1002"):
            answer = client.call(FORM + "Save", {"formid": "AP_PAYBILL", "data": {
                "IsVerifyBaseDataField": True, "Model": paybill(number)}})
            messages = [e["Message"] for e in answer["Result"]["ResponseStatus"]["Errors"]]
            assert any(f"“{number}”在系统中不存在或未审核" in m for m in messages), messages
        saved = client.call(FORM + "Save", {"formid": "AP_PAYBILL", "data": {"Model": paybill("EMP1003")}})
        assert saved["Result"]["ResponseStatus"]["IsSuccess"] is True
    finally:
        emulator.stop()


# ----------------------------------------------------------------------------------------- faults

def test_gateway_and_server_faults(client: Client, kingdee_emulator: KingdeeEmulator) -> None:
    kingdee_emulator.inject("http_500", service="BatchSave")
    kingdee_emulator.inject("http_502", service="BatchSave")
    kingdee_emulator.inject("html_error", service="BatchSave")
    first = client.post(FORM + "BatchSave", {"formid": "AP_PAYBILL", "data": {"Model": [paybill()]}})
    assert first.status_code == 500 and first.json()["success"] is False
    kingdee_emulator.clear_faults()
    kingdee_emulator.inject("http_502", service="BatchSave")
    assert client.post(FORM + "BatchSave", {"formid": "AP_PAYBILL", "data": {"Model": [paybill()]}}
                       ).status_code == 502
    kingdee_emulator.inject("html_error", service=FORM + "BatchSave")
    html = client.post(FORM + "BatchSave", {"formid": "AP_PAYBILL", "data": {"Model": [paybill()]}})
    assert html.status_code == 500 and html.text.lstrip().startswith("<!DOCTYPE html")
    kingdee_emulator.inject("response_error")
    error = client.post(FORM + "ExecuteBillQuery", {"data": {"FormId": "AP_PAYBILL", "FieldKeys": "FID"}})
    assert error.status_code == 200 and error.text.startswith("response_error:")
    assert kingdee_emulator.bills() == []
    assert status(client.save([paybill()]))["IsSuccess"] is True  # faults were one-shot
    assert kingdee_emulator.calls["BatchSave"] == 4 and kingdee_emulator.calls["ExecuteBillQuery"] == 1


def test_latency_fault_still_answers(client: Client, kingdee_emulator: KingdeeEmulator) -> None:
    kingdee_emulator.inject({"kind": "latency", "latency_ms": 50}, service="ExecuteBillQuery", times=2)
    assert client.query("FID") == [] and client.query("FID") == []
    assert kingdee_emulator.faults == []


def test_session_lost_fault(client: Client, kingdee_emulator: KingdeeEmulator) -> None:
    kingdee_emulator.inject("session_lost", service="BatchSave")
    answer = client.save([paybill()])
    assert status(answer)["MsgCode"] == 1 and kingdee_emulator.bills() == []
    client.login()
    assert status(client.save([paybill()]))["IsSuccess"] is True


def test_drop_before_processing(client: Client, kingdee_emulator: KingdeeEmulator) -> None:
    kingdee_emulator.inject("drop", service="BatchSave")
    with pytest.raises(requests.ConnectionError):
        client.save([paybill()])
    assert kingdee_emulator.bills() == []


def test_commit_then_drop(client: Client, kingdee_emulator: KingdeeEmulator) -> None:
    kingdee_emulator.inject("commit_then_drop", service="BatchSave")
    with pytest.raises(requests.ConnectionError):
        client.save([paybill(FTHIRDBILLNO="committed")])
    assert [b["FTHIRDBILLNO"] for b in kingdee_emulator.bills()] == ["committed"]
    # the client can find what it could not see: reconcile by the third-party number
    assert client.query("FBillNo", "FTHIRDBILLNO='committed'") == [["FKD00000001"]]


def test_slow_commit_commits_after_the_delay_then_answers(client: Client, kingdee_emulator: KingdeeEmulator
                                                         ) -> None:
    kingdee_emulator.inject({"kind": "slow_commit", "latency_ms": 600}, service="BatchSave")
    with pytest.raises(requests.ReadTimeout):
        client.http.post(f"{client.base_url}{FORM}BatchSave.common.kdsvc", timeout=(5, 0.2),
                         data=dumps({"formid": "AP_PAYBILL", "data": {"Model": [paybill(FTHIRDBILLNO="slow")]}}))
    assert client.query("FID", "FTHIRDBILLNO='slow'") == []  # not committed yet
    deadline = time.monotonic() + 10
    while not kingdee_emulator.bills():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [b["FTHIRDBILLNO"] for b in kingdee_emulator.bills()] == ["slow"]


@pytest.mark.parametrize(("fault", "answer"), [
    ("commit_then_message_ok", {"Result": {"Message": "ok"}}),
    ("commit_then_empty_success", {"Result": {"ResponseStatus": {"IsSuccess": True, "Errors": [],
                                                                 "SuccessEntitys": [], "SuccessMessages": [],
                                                                 "MsgCode": 0}}}),
])
def test_odd_answers_after_a_commit(client: Client, kingdee_emulator: KingdeeEmulator, fault: str,
                                    answer: dict[str, Any]) -> None:
    kingdee_emulator.inject(fault, service="BatchSave")
    assert client.save([paybill(FTHIRDBILLNO="odd")]) == answer
    assert [b["FTHIRDBILLNO"] for b in kingdee_emulator.bills()] == ["odd"]


def test_fault_rates(client: Client, kingdee_emulator: KingdeeEmulator) -> None:
    kingdee_emulator.inject("http_502", service="ExecuteBillQuery", times=None, rate=0.0)
    assert all(client.query("FID") == [] for _ in range(5))
    kingdee_emulator.clear_faults()
    kingdee_emulator.inject("http_502", times=None, rate=1.0)
    body = {"data": {"FormId": "AP_PAYBILL", "FieldKeys": "FID"}}
    assert [client.post(FORM + "ExecuteBillQuery", body).status_code for _ in range(3)] == [502] * 3
    with pytest.raises(ValueError):
        kingdee_emulator.inject("meteor_strike")


# ------------------------------------------------------------------------------------------ admin

def test_admin_endpoints(client: Client, kingdee_emulator: KingdeeEmulator) -> None:
    root = kingdee_emulator.base_url.removesuffix("k3cloud/") + "_emulator/"
    assert requests.get(root + "health", timeout=10).json()["status"] == "ok"
    armed = requests.post(root + "faults", json={"fault": "http_502", "service": "BatchSave"}, timeout=10)
    assert armed.status_code == 200 and kingdee_emulator.faults[0]["kind"] == "http_502"
    assert requests.post(root + "faults", json={"fault": "nope"}, timeout=10).status_code == 400
    assert requests.delete(root + "faults", timeout=10).json() == {"ok": True, "cleared": 1}
    client.save([paybill(amount=Decimal("7.10"))])
    bills = json.loads(requests.get(root + "bills", timeout=10).text, parse_float=Decimal)
    assert bills[0]["FBillNo"] == "FKD00000001"
    assert bills[0]["FPAYBILLENTRY"][0]["FPAYTOTALAMOUNTFOR"] == Decimal("7.10")
    assert requests.get(root + "calls", timeout=10).json()["BatchSave"] == 1
    assert requests.post(root + "reset", timeout=10).json() == {"reset": True}
    assert kingdee_emulator.bills() == []
    assert status(client.save([paybill()]))["MsgCode"] == 1  # reset forgets sessions too


def test_file_database_survives_a_restart(tmp_path) -> None:
    db = str(tmp_path / "kingdee.db")
    first = KingdeeEmulator(db_path=db)
    first.start()
    try:
        c = Client(first.base_url)
        c.login()
        c.save([paybill()])
    finally:
        first.stop()
        first.store.close()
    second = KingdeeEmulator(db_path=db)
    assert [b["FBillNo"] for b in second.bills()] == ["FKD00000001"]
    second.store.close()


def test_fixture_connections(kingdee_conn_id: str, kingdee_signature_conn_id: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    session = json.loads(os.environ["AIRFLOW_CONN_" + kingdee_conn_id.upper()])
    signature = json.loads(os.environ["AIRFLOW_CONN_" + kingdee_signature_conn_id.upper()])
    assert session["host"].endswith("/k3cloud/") and session["extra"]["auth_mode"] == "session"
    assert signature["extra"]["auth_mode"] == "signature" and signature["password"] == DEMO_APP_SECRET
    c = Client(session["host"])
    assert c.login(session["login"], session["password"], session["extra"]["acct_id"])["LoginResultType"] == 1


# ------------------------------------------------------------------------------ base data and CLI

def test_generated_basedata_is_current_and_complete() -> None:
    universe = json.loads(kingdee_basedata.DEFAULT_UNIVERSE.read_text(encoding="utf-8"))
    built = kingdee_basedata.build_basedata(copy.deepcopy(universe))
    on_disk = json.loads(kingdee_basedata.DEFAULT_OUT.read_text(encoding="utf-8"))
    assert built == on_disk
    employees = {r["number"] for r in built["forms"]["BD_Empinfo"]}
    directory_only = universe["directory_only"]["employees"]
    assert employees == {e["kingdee_number"] for e in [*universe["employees"], *directory_only]
                         if e.get("kingdee_number")}
    names = {r["name"] for r in built["forms"]["BD_Empinfo"]}
    assert not names & {e["name"] for e in universe["unmapped_employees"]}
    expense = {r["number"] for r in built["forms"]["BD_Expense"]}
    assert expense == {n for c in universe["categories"].values() for n in c["types"].values()}
    assert {r["number"] for r in built["forms"]["BD_Department"]} == {
        d["kingdee_number"] for d in universe["departments"]}


def test_cli_help() -> None:
    result = subprocess.run([sys.executable, "-m", "dk_emulators.kingdee", "--help"],
                            capture_output=True, text=True, timeout=60, check=True)
    for option in ("--port", "--basedata", "--db", "--acct-id", "--app-id", "--latency-ms", "--session-ttl"):
        assert option in result.stdout
