"""The DingTalk emulator over real HTTP, spoken to with plain ``requests`` (not the hook)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests
from dk_emulators.dingtalk import (
    CHINA_TZ,
    ERR_APP_QPS,
    ERR_BAD_APP_CREDENTIALS,
    ERR_BUSY,
    ERR_GLOBAL_QPS,
    ERR_INVALID_PARAM,
    ERR_INVALID_TOKEN,
    ERR_MISSING_PARAM,
    ERR_SECRET_OR_TOKEN,
    ERR_TOKEN_EXPIRED,
    ERR_WRAPPED,
    DingTalkEmulator,
)
from dk_emulators.dingtalk.seed import SeedConfig, generate_claims
from websockets.sync.client import connect

PROCESS_CODE = "PROC-EXPENSE-DEMO"
LISTIDS = "/topapi/processinstance/listids"
GET = "/topapi/processinstance/get"
COMMENT = "/topapi/process/instance/comment/add"


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def china(moment: datetime) -> str:
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


def instance(instance_id: str, created: datetime, userid: str = "manager4500", **fields: object) -> dict:
    """A minimal stored instance started at ``created``."""
    return {"process_instance_id": instance_id, "process_code": PROCESS_CODE, "create_time": china(created),
            "originator_userid": userid, "status": "RUNNING", "result": "", "business_id": instance_id,
            "form_component_values": [], "operation_records": [],
            "tasks": [{"userid": "manager4503", "task_status": "RUNNING", "task_result": "NONE"}], **fields}


def error_code(body: dict) -> int:
    """The effective error code, plain or wrapped under 88 (sub_code is a string there)."""
    if body["errcode"] == ERR_WRAPPED:
        assert isinstance(body["sub_code"], str)
        return int(body["sub_code"])
    return body["errcode"]


class Client:
    """Just enough of a DingTalk client to drive the emulator in tests."""

    def __init__(self, emulator: DingTalkEmulator, app_key: str | None = None, app_secret: str | None = None):
        self.base_url = emulator.base_url
        self.app_key = app_key or emulator.app_key
        self.app_secret = app_secret or emulator.app_secret
        self.session = requests.Session()
        self._token: str | None = None

    def gettoken(self) -> dict:
        return self.session.get(f"{self.base_url}/gettoken",
                                params={"appkey": self.app_key, "appsecret": self.app_secret}, timeout=10).json()

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.gettoken()["access_token"]
        return self._token

    def post(self, path: str, body: dict, token: str | None = None, timeout: float = 10) -> requests.Response:
        return self.session.post(f"{self.base_url}{path}", params={"access_token": token or self.token},
                                 json=body, timeout=timeout)

    def call(self, path: str, body: dict, token: str | None = None) -> dict:
        answer = self.post(path, body, token)
        assert answer.status_code == 200
        return answer.json()

    def listids(self, start: datetime, end: datetime | None = None, size: int = 20, cursor: int = 0,
                **extra: object) -> dict:
        body = {"process_code": PROCESS_CODE, "start_time": ms(start), "size": size, "cursor": cursor, **extra}
        if end is not None:
            body["end_time"] = ms(end)
        return self.call(LISTIDS, body)

    def all_ids(self, start: datetime, end: datetime, size: int = 20) -> tuple[list[str], int]:
        ids, cursor, pages = [], 0, 0
        while True:
            answer = self.listids(start, end, size=size, cursor=cursor)
            assert answer["errcode"] == 0, answer
            pages += 1
            ids.extend(answer["result"]["list"])
            if "next_cursor" not in answer["result"]:
                return ids, pages
            cursor = answer["result"]["next_cursor"]


@pytest.fixture
def client(dingtalk_emulator: DingTalkEmulator) -> Client:
    return Client(dingtalk_emulator)


def started_emulator(request: pytest.FixtureRequest, **options: object) -> DingTalkEmulator:
    emulator = DingTalkEmulator(**options)
    emulator.start()
    request.addfinalizer(emulator.stop)
    return emulator


# ---------------------------------------------------------------------- gettoken
def test_gettoken_returns_the_same_token_while_valid(dingtalk_emulator, client):
    first, second = client.gettoken(), client.gettoken()
    assert first["errcode"] == 0 and first["errmsg"] == "ok" and first["request_id"]
    assert first["access_token"] == second["access_token"]
    assert 0 < first["expires_in"] <= 7200
    assert dingtalk_emulator.calls["gettoken"] == 2


def test_gettoken_refuses_bad_credentials(client):
    client.app_secret = "wrong"
    answer = client.gettoken()
    assert answer["errcode"] == ERR_BAD_APP_CREDENTIALS and "access_token" not in answer
    assert answer["errmsg"] == "不合法的appKey或appSecret"


def test_gettoken_refuses_keys_in_the_body(dingtalk_emulator):
    answer = requests.post(f"{dingtalk_emulator.base_url}/gettoken",
                           json={"appkey": "demo-app-key", "appsecret": "demo-app-secret"}, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["errcode"] == ERR_MISSING_PARAM


def test_token_expires_and_a_new_one_is_issued(request):
    emulator = started_emulator(request, token_ttl=0.3, wrap_errors="plain")
    client = Client(emulator)
    old = client.token
    now = datetime.now(UTC)
    assert client.listids(now - timedelta(days=1), now)["errcode"] == 0
    time.sleep(0.4)
    expired = client.call(LISTIDS, {"process_code": PROCESS_CODE, "start_time": ms(now - timedelta(days=1))})
    assert expired["errcode"] == ERR_TOKEN_EXPIRED
    fresh = client.gettoken()["access_token"]
    assert fresh != old
    assert client.call(LISTIDS, {"process_code": PROCESS_CODE, "start_time": ms(now - timedelta(days=1))},
                       token=fresh)["errcode"] == 0


def test_token_errors_alternate_plain_and_wrapped(client):
    answers = [client.call(GET, {"process_instance_id": "x"}, token="not-a-token") for _ in range(4)]
    assert [a["errcode"] for a in answers] == [ERR_INVALID_TOKEN, ERR_WRAPPED, ERR_INVALID_TOKEN, ERR_WRAPPED]
    wrapped = answers[1]
    assert wrapped["sub_code"] == "40014" and wrapped["sub_msg"] == "不合法的access_token"
    assert "subcode=40014" in wrapped["errmsg"]
    assert all(a["request_id"] for a in answers)


def test_missing_and_revoked_tokens(request):
    emulator = started_emulator(request, wrap_errors="wrapped")
    client = Client(emulator)
    missing = client.session.post(f"{emulator.base_url}{GET}", json={"process_instance_id": "x"}).json()
    assert missing["errcode"] == ERR_WRAPPED and missing["sub_code"] == str(ERR_INVALID_TOKEN)
    token = client.token
    emulator.revoke_tokens()
    assert error_code(client.call(GET, {"process_instance_id": "x"}, token=token)) == ERR_SECRET_OR_TOKEN
    assert client.gettoken()["access_token"] != token


# ---------------------------------------------------------------------- listids
def test_listids_selects_by_start_time_in_a_half_open_window(dingtalk_emulator, client):
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    start = end - timedelta(days=2)
    dingtalk_emulator.add_instances([
        instance("before", start - timedelta(seconds=1), finish_time=china(start + timedelta(hours=5))),
        instance("at-start", start),
        instance("inside", start + timedelta(days=1)),
        instance("last-second", end - timedelta(seconds=1)),
        instance("at-end", end),
        instance("other-process", start + timedelta(hours=1), process_code="PROC-OTHER"),
    ])
    answer = client.listids(start, end)
    assert answer["errcode"] == 0
    assert answer["result"]["list"] == ["at-start", "inside", "last-second"]
    assert "next_cursor" not in answer["result"]


def test_listids_pages_with_next_cursor_until_the_last_page(dingtalk_emulator, client):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    dingtalk_emulator.add_instances(instance(f"i{n:03d}", start + timedelta(minutes=n)) for n in range(45))
    first = client.listids(start, start + timedelta(days=1))["result"]
    assert len(first["list"]) == 20 and first["next_cursor"] == 20
    ids, pages = client.all_ids(start, start + timedelta(days=1))
    assert pages == 3
    assert ids == [f"i{n:03d}" for n in range(45)]
    small = client.listids(start, start + timedelta(days=1), size=10, cursor=40)["result"]
    assert small["list"] == [f"i{n:03d}" for n in range(40, 45)] and "next_cursor" not in small


def test_listids_filters_by_originator(dingtalk_emulator, client):
    start = datetime.now(UTC) - timedelta(days=1)
    dingtalk_emulator.add_instances([instance("a", start, userid="u1"), instance("b", start, userid="u2"),
                                     instance("c", start, userid="u3")])
    answer = client.listids(start - timedelta(seconds=1), userid_list="u1,u3")
    assert sorted(answer["result"]["list"]) == ["a", "c"]


def test_listids_end_time_defaults_to_now(dingtalk_emulator, client):
    now = datetime.now(UTC)
    dingtalk_emulator.add_instances([instance("recent", now - timedelta(minutes=5)),
                                     instance("future", now + timedelta(days=1))])
    assert client.listids(now - timedelta(days=1))["result"]["list"] == ["recent"]


def test_listids_page_size_over_20_is_refused(client):
    start = datetime.now(UTC) - timedelta(days=1)
    refused = client.listids(start, size=21)
    assert refused["errcode"] == ERR_INVALID_PARAM and "size" in refused["errmsg"]
    assert client.listids(start, size=20)["errcode"] == 0


def test_listids_window_over_120_days_is_refused(client):
    end = datetime.now(UTC) - timedelta(days=1)
    refused = client.listids(end - timedelta(days=120, seconds=1), end)
    assert refused["errcode"] == ERR_INVALID_PARAM and "120" in refused["errmsg"]
    assert client.listids(end - timedelta(days=120), end)["errcode"] == 0


def test_listids_start_older_than_365_days_is_refused(client):
    now = datetime.now(UTC)
    refused = client.listids(now - timedelta(days=366), now - timedelta(days=300))
    assert refused["errcode"] == ERR_INVALID_PARAM and "365" in refused["errmsg"]
    assert client.listids(now - timedelta(days=364), now - timedelta(days=300))["errcode"] == 0


def test_listids_requires_a_known_process_code_and_a_start_time(client):
    start = ms(datetime.now(UTC) - timedelta(days=1))
    assert client.call(LISTIDS, {"start_time": start})["errcode"] == ERR_MISSING_PARAM
    assert client.call(LISTIDS, {"process_code": PROCESS_CODE})["errcode"] == ERR_MISSING_PARAM
    unknown = client.call(LISTIDS, {"process_code": "PROC-NOPE", "start_time": start})
    assert unknown["errcode"] == ERR_INVALID_PARAM and "PROC-NOPE" in unknown["errmsg"]
    backwards = client.call(LISTIDS, {"process_code": PROCESS_CODE, "start_time": start, "end_time": start - 1})
    assert backwards["errcode"] == ERR_INVALID_PARAM


def test_listids_stops_after_10000_ids(request):
    emulator = started_emulator(request, qps=None)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    emulator.add_instances(instance(f"id{n:05d}", start + timedelta(seconds=n)) for n in range(10_050))
    client = Client(emulator)
    ids, pages = client.all_ids(start, start + timedelta(days=1))
    assert len(ids) == 10_000 and len(set(ids)) == 10_000 and pages == 500
    assert ids[-1] == "id09999"
    beyond = client.listids(start, start + timedelta(days=1), cursor=10_000)["result"]
    assert beyond["list"] == [] and "next_cursor" not in beyond
    # A narrower slice reaches the instances the capped query could not.
    tail = client.listids(start + timedelta(seconds=10_000), start + timedelta(days=1))["result"]["list"]
    assert tail[0] == "id10000" and len(tail) == 20


# ---------------------------------------------------------------------- get and comments
def test_get_returns_the_stored_instance_exactly(dingtalk_emulator, client):
    now = datetime.now(UTC)
    claims = generate_claims(SeedConfig(count=15, start=now - timedelta(days=20), end=now, seed=11,
                                        nested_rate=0.7))
    dingtalk_emulator.add_instances(claims)
    for claim in claims:
        answer = client.call(GET, {"process_instance_id": claim.instance_id})
        assert answer["errcode"] == 0
        expected = {k: v for k, v in claim.instance.items() if k not in ("process_instance_id", "process_code")}
        assert answer["process_instance"] == expected
        # Same bytes of the string-in-string encodings, not just an equal structure.
        values = {c["name"]: c for c in answer["process_instance"]["form_component_values"]}
        assert all(isinstance(c["value"], str) for c in values.values())
        table = values["报销明细"]["value"]
        assert isinstance(table, str)
        assert table == next(c["value"] for c in claim.instance["form_component_values"] if c["name"] == "报销明细")


def test_get_unknown_instance_is_an_error(client):
    answer = client.call(GET, {"process_instance_id": "no-such-instance"})
    assert answer["errcode"] == ERR_INVALID_PARAM and answer["request_id"]
    assert client.call(GET, {})["errcode"] == ERR_MISSING_PARAM


def test_comment_add_records_the_comment(dingtalk_emulator, client):
    dingtalk_emulator.add_instances([instance("c1", datetime.now(UTC) - timedelta(hours=2))])
    answer = client.call(COMMENT, {"request": {"process_instance_id": "c1", "comment_userid": "manager4500",
                                               "text": "已生成付款单 FKD000123"}})
    assert answer["errcode"] == 0 and answer["result"] is True and answer["success"] is True
    assert dingtalk_emulator.comments == [{"process_instance_id": "c1", "comment_userid": "manager4500",
                                           "text": "已生成付款单 FKD000123",
                                           "created_at": dingtalk_emulator.comments[0]["created_at"]}]
    records = client.call(GET, {"process_instance_id": "c1"})["process_instance"]["operation_records"]
    assert records[-1]["operation_type"] == "ADD_REMARK" and records[-1]["remark"] == "已生成付款单 FKD000123"
    # Flat bodies (without the "request" object) and unknown instances are refused.
    assert client.call(COMMENT, {"process_instance_id": "c1", "comment_userid": "u", "text": "t"})["errcode"] != 0
    unknown = client.call(COMMENT, {"request": {"process_instance_id": "zz", "comment_userid": "u", "text": "t"}})
    assert unknown["errcode"] == ERR_INVALID_PARAM
    assert len(dingtalk_emulator.comments) == 1


def test_set_outcome_approves_a_running_claim_late(dingtalk_emulator, client):
    created = datetime.now(UTC) - timedelta(days=3)
    dingtalk_emulator.add_instances([instance("late", created)])
    before = client.call(GET, {"process_instance_id": "late"})["process_instance"]
    assert before["status"] == "RUNNING" and "finish_time" not in before
    finished = datetime.now(UTC).replace(microsecond=0)
    dingtalk_emulator.set_outcome("late", "COMPLETED", "agree", finished)
    after = client.call(GET, {"process_instance_id": "late"})["process_instance"]
    assert (after["status"], after["result"], after["finish_time"]) == ("COMPLETED", "agree", china(finished))
    assert after["tasks"][0]["task_status"] == "COMPLETED" and after["tasks"][0]["task_result"] == "AGREE"
    assert after["operation_records"][-1]["operation_result"] == "AGREE"
    # Still listed by its start time, not by the approval time.
    assert client.listids(created - timedelta(seconds=1), created + timedelta(seconds=1))["result"]["list"] == [
        "late"]
    dingtalk_emulator.set_outcome("late", "TERMINATED", "", "2030-01-01 00:00:00")
    terminated = client.call(GET, {"process_instance_id": "late"})["process_instance"]
    assert terminated["status"] == "TERMINATED"
    assert terminated["operation_records"][-1]["operation_type"] == "TERMINATE_PROCESS_INSTANCE"


# ---------------------------------------------------------------------- QPS limit and latency
def burst(client: Client, calls: int, workers: int = 8) -> list[dict]:
    token = client.token
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda _: client.call(GET, {"process_instance_id": "q"}, token=token),
                             range(calls)))


def test_qps_burst_is_throttled_with_90018(request):
    emulator = started_emulator(request, qps=3, wrap_errors="alternate", qps_penalty_s=30)
    emulator.add_instances([instance("q", datetime.now(UTC) - timedelta(hours=1))])
    client = Client(emulator)
    answers = burst(client, 30)
    throttled = [a for a in answers if a["errcode"] != 0]
    assert 1 <= len([a for a in answers if a["errcode"] == 0]) <= 3
    assert throttled and all(error_code(a) == ERR_APP_QPS for a in throttled)
    assert any(a["errcode"] == ERR_WRAPPED and a["sub_code"] == "90018" for a in throttled)
    assert any(a["errcode"] == ERR_APP_QPS for a in throttled)
    assert all("超出了该接口承受的最大qps" in (a.get("sub_msg") or a["errmsg"]) for a in throttled)
    # The penalty outlives the 1-second window, for this app on this API only.
    time.sleep(1.1)
    assert error_code(client.call(GET, {"process_instance_id": "q"})) == ERR_APP_QPS
    assert client.listids(datetime.now(UTC) - timedelta(days=1))["errcode"] == 0


def test_qps_limit_is_per_app_and_the_penalty_ends(request):
    emulator = started_emulator(request, qps=2, qps_penalty_s=0.2, apps={"other-key": "other-secret"})
    emulator.add_instances([instance("q", datetime.now(UTC) - timedelta(hours=1))])
    client, other = Client(emulator), Client(emulator, "other-key", "other-secret")
    assert any(a["errcode"] != 0 for a in burst(client, 20))
    assert other.call(GET, {"process_instance_id": "q"})["errcode"] == 0
    time.sleep(1.3)  # past both the window and the penalty
    assert client.call(GET, {"process_instance_id": "q"})["errcode"] == 0


def test_latency_applies_to_every_call_and_concurrent_calls_overlap(request):
    emulator = started_emulator(request, latency_ms=300)
    emulator.add_instances([instance("q", datetime.now(UTC) - timedelta(hours=1))])
    client = Client(emulator)
    client.token  # noqa: B018  (fetch it before the measured burst)
    began = time.monotonic()
    answers = burst(client, 6, workers=6)
    assert time.monotonic() - began >= 0.3
    assert all(a["errcode"] == 0 for a in answers)
    assert emulator.peak_in_flight >= 2


# ---------------------------------------------------------------------- faults
@pytest.mark.parametrize(("fault", "errcode", "sub_code"), [
    ("busy", ERR_BUSY, None),
    ("qps_wrapped", ERR_WRAPPED, "90018"),
    ("qps_plain", ERR_APP_QPS, None),
    ("global_qps_plain", ERR_GLOBAL_QPS, None),
    ("invalid_token_wrapped", ERR_WRAPPED, "40014"),
    ("invalid_token_plain", ERR_INVALID_TOKEN, None),
    ("expired_token_plain", ERR_TOKEN_EXPIRED, None),
    ("token_33001_wrapped", ERR_WRAPPED, "33001"),
])
def test_errcode_faults_fire_once(dingtalk_emulator, client, fault, errcode, sub_code):
    dingtalk_emulator.add_instances([instance("f", datetime.now(UTC) - timedelta(hours=1))])
    token = client.token
    dingtalk_emulator.inject(fault)
    answer = client.call(GET, {"process_instance_id": "f"}, token=token)
    assert answer["errcode"] == errcode and answer.get("sub_code") == sub_code and answer["request_id"]
    assert client.call(GET, {"process_instance_id": "f"}, token=token)["errcode"] == 0


def test_injected_token_error_makes_the_client_fetch_a_token_again(dingtalk_emulator, client):
    dingtalk_emulator.add_instances([instance("f", datetime.now(UTC) - timedelta(hours=1))])
    client.token  # noqa: B018
    dingtalk_emulator.inject("invalid_token", api="get")
    assert error_code(client.call(GET, {"process_instance_id": "f"})) == ERR_INVALID_TOKEN
    refreshed = client.gettoken()["access_token"]
    assert client.call(GET, {"process_instance_id": "f"}, token=refreshed)["errcode"] == 0
    assert dingtalk_emulator.calls["gettoken"] == 2 and dingtalk_emulator.calls["get"] == 2


def test_faults_target_one_api_and_count_down(dingtalk_emulator, client):
    dingtalk_emulator.add_instances([instance("f", datetime.now(UTC) - timedelta(hours=1))])
    client.token  # noqa: B018
    dingtalk_emulator.inject("busy", api="get", times=2)
    assert client.listids(datetime.now(UTC) - timedelta(days=1))["errcode"] == 0
    assert [client.call(GET, {"process_instance_id": "f"})["errcode"] for _ in range(3)] == [ERR_BUSY, ERR_BUSY, 0]
    dingtalk_emulator.inject("busy", times=None)
    assert client.listids(datetime.now(UTC) - timedelta(days=1))["errcode"] == ERR_BUSY
    assert client.gettoken()["errcode"] == ERR_BUSY
    dingtalk_emulator.clear_faults()
    assert client.call(GET, {"process_instance_id": "f"})["errcode"] == 0


def test_fault_rate_fails_a_share_of_calls_reproducibly(request):
    outcomes = []
    for _ in range(2):
        emulator = started_emulator(request, qps=None, fault_seed=5)
        emulator.add_instances([instance("f", datetime.now(UTC) - timedelta(hours=1))])
        client = Client(emulator)
        client.token  # noqa: B018
        emulator.inject("busy", api="get", rate=0.5)
        outcomes.append([client.call(GET, {"process_instance_id": "f"})["errcode"] for _ in range(40)])
    assert outcomes[0] == outcomes[1]
    assert 5 < outcomes[0].count(ERR_BUSY) < 35


@pytest.mark.parametrize(("fault", "status"), [("http_500", 500), ("http_502", 502)])
def test_gateway_errors(dingtalk_emulator, client, fault, status):
    dingtalk_emulator.inject(fault, api="listids")
    answer = client.post(LISTIDS, {"process_code": PROCESS_CODE, "start_time": ms(datetime.now(UTC))})
    assert answer.status_code == status and "text/html" in answer.headers["content-type"]


def test_ip_ban_html_page(dingtalk_emulator, client):
    dingtalk_emulator.inject("ip_ban_html")
    answer = client.session.get(f"{dingtalk_emulator.base_url}/gettoken",
                                params={"appkey": "demo-app-key", "appsecret": "demo-app-secret"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "<html>" in answer.text
    with pytest.raises(ValueError):
        answer.json()


def test_ip_ban_json_variant(dingtalk_emulator, client):
    dingtalk_emulator.inject("ip_ban_json", api="get")
    body = client.call(GET, {"process_instance_id": "x"})
    assert body["status"] == 1111 and body["wait"] == 5 and body["punish"] == "deny" and "errcode" not in body


def test_malformed_json_body(dingtalk_emulator, client):
    dingtalk_emulator.inject("malformed_json", api="get")
    answer = client.post(GET, {"process_instance_id": "x"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.text)


def test_hanging_answer_outlasts_the_client_timeout(request):
    emulator = started_emulator(request, hang_seconds=30)
    client = Client(emulator)
    client.token  # noqa: B018
    emulator.inject("hang", api="get")
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.post(GET, {"process_instance_id": "x"}, timeout=0.5)


def test_dropped_connection(dingtalk_emulator, client):
    client.token  # noqa: B018
    dingtalk_emulator.inject("drop", api="get")
    with pytest.raises(requests.exceptions.ConnectionError):
        client.post(GET, {"process_instance_id": "x"})
    assert client.call(GET, {"process_instance_id": "x"})["errcode"] == ERR_INVALID_PARAM


def test_unknown_fault_names_are_refused(dingtalk_emulator):
    with pytest.raises(ValueError):
        dingtalk_emulator.inject("meteor")
    with pytest.raises(ValueError):
        dingtalk_emulator.inject("busy", api="listid")


# ---------------------------------------------------------------------- admin endpoints and CLI
def test_admin_endpoints_drive_a_running_emulator(dingtalk_emulator, client):
    admin = f"{dingtalk_emulator.base_url}/_emulator"
    assert requests.get(f"{admin}/health", timeout=10).json()["ok"] is True
    created = datetime.now(UTC) - timedelta(hours=3)
    added = requests.post(f"{admin}/instances", json=[instance("adm", created)], timeout=10).json()
    assert added == {"ok": True, "added": 1, "instances": 1}
    assert requests.post(f"{admin}/instances", json={"instances": [{"x": 1}]}, timeout=10).status_code == 400
    for path in ("instances", "outcome", "faults", "config"):
        assert requests.post(f"{admin}/{path}", data="not json", timeout=10).status_code == 400
    outcome = requests.post(f"{admin}/outcome", json={"instance_id": "adm", "status": "COMPLETED",
                                                      "result": "refuse"}, timeout=10).json()
    assert outcome["instance"]["result"] == "refuse"
    assert client.call(GET, {"process_instance_id": "adm"})["process_instance"]["result"] == "refuse"
    assert requests.post(f"{admin}/faults", json={"fault": "busy", "api": "get", "times": 1},
                         timeout=10).json()["ok"] is True
    assert client.call(GET, {"process_instance_id": "adm"})["errcode"] == ERR_BUSY
    requests.post(f"{admin}/faults", json={"fault": "busy", "times": None}, timeout=10)
    assert requests.delete(f"{admin}/faults", timeout=10).json()["ok"] is True
    assert client.call(GET, {"process_instance_id": "adm"})["errcode"] == 0
    client.call(COMMENT, {"request": {"process_instance_id": "adm", "comment_userid": "u", "text": "好"}})
    assert requests.get(f"{admin}/comments", timeout=10).json()["comments"][0]["text"] == "好"
    assert requests.post(f"{admin}/config", json={"latency_ms": 5, "qps": 50}, timeout=10).json()["ok"]
    state = requests.get(f"{admin}/state", timeout=10).json()
    assert state["instances"] == 1 and state["comments"] == 1 and state["config"]["qps"] == 50
    assert state["calls"]["get"] == 3 and state["statuses"] == {"COMPLETED/refuse": 1}
    assert requests.post(f"{admin}/tokens/expire", timeout=10).json()["ok"]
    assert error_code(client.call(GET, {"process_instance_id": "adm"})) == ERR_TOKEN_EXPIRED


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_command_line_serves_generated_claims(tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "dk_emulators.dingtalk", "--help"],
                               capture_output=True, text=True, check=True).stdout
    for option in ("--port", "--app-key", "--qps", "--latency-ms", "--token-ttl", "--seed-file", "--generate"):
        assert option in help_text
    port = _free_port()
    today = datetime.now(CHINA_TZ).date()
    process = subprocess.Popen(
        [sys.executable, "-m", "dk_emulators.dingtalk", "--port", str(port), "--generate", "25",
         "--start", str(today - timedelta(days=10)), "--end", str(today), "--seed", "4",
         "--stream-redelivery-seconds", "3", "--stream-ping-seconds", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ},
    )
    try:
        state = None
        for _ in range(200):
            try:
                state = requests.get(f"http://127.0.0.1:{port}/_emulator/state", timeout=1).json()
                break
            except requests.exceptions.ConnectionError:
                threading.Event().wait(0.1)
        assert state is not None and state["instances"] == 25
        assert state["process_codes"] == [PROCESS_CODE]
        assert state["config"]["stream_redelivery_seconds"] == 3
        opened = requests.post(f"http://127.0.0.1:{port}/v1.0/gateway/connections/open", timeout=10,
                               json={"clientId": "demo-app-key", "clientSecret": "demo-app-secret",
                                     "subscriptions": [{"type": "EVENT", "topic": "*"}]}).json()
        with connect(f"{opened['endpoint']}?ticket={opened['ticket']}", open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=5))["headers"]["topic"] == "ping"  # Stream mode served too
    finally:
        process.terminate()
        process.wait(timeout=10)
