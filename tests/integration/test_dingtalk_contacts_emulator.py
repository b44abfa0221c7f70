"""The DingTalk emulator's contacts calls over real HTTP: the department tree and paged users of the
demo organisation, consistent with include/demo/universe.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from dk_emulators.dingtalk import ERR_INVALID_PARAM, ERR_MISSING_PARAM, DingTalkEmulator

UNIVERSE = json.loads((Path(__file__).resolve().parents[2] / "include" / "demo" / "universe.json")
                      .read_text(encoding="utf-8"))
LISTSUB = "/topapi/v2/department/listsub"
USERS = "/topapi/v2/user/list"


class Contacts:
    def __init__(self, emulator: DingTalkEmulator) -> None:
        self.base_url = emulator.base_url
        self.http = requests.Session()
        self.token = self.http.get(f"{self.base_url}/gettoken", params={
            "appkey": emulator.app_key, "appsecret": emulator.app_secret}, timeout=10).json()["access_token"]

    def call(self, path: str, body: dict) -> dict:
        answer = self.http.post(f"{self.base_url}{path}", params={"access_token": self.token}, json=body, timeout=10)
        assert answer.status_code == 200
        return answer.json()

    def users(self, dept_id: int, size: int) -> tuple[list[dict], int]:
        users, cursor, pages = [], 0, 0
        while True:
            answer = self.call(USERS, {"dept_id": dept_id, "cursor": cursor, "size": size})
            assert answer["errcode"] == 0, answer
            pages += 1
            users.extend(answer["result"]["list"])
            if not answer["result"]["has_more"]:
                assert "next_cursor" not in answer["result"]
                return users, pages
            cursor = answer["result"]["next_cursor"]


@pytest.fixture
def contacts(dingtalk_emulator: DingTalkEmulator) -> Contacts:
    return Contacts(dingtalk_emulator)


def test_the_tree_walked_from_the_root_is_the_universe(contacts: Contacts) -> None:
    seen: dict[int, dict] = {}
    pending = [1]
    while pending:
        answer = contacts.call(LISTSUB, {"dept_id": pending.pop()})
        assert answer["errcode"] == 0, answer
        for dept in answer["result"]:
            seen[dept["dept_id"]] = dept
            pending.append(dept["dept_id"])
    expected = {int(d["dept_id"]): d["name"] for d in
                [*UNIVERSE["departments"], *UNIVERSE["directory_only"]["departments"]]}
    assert {k: v["name"] for k, v in seen.items()} == expected
    assert seen[1006]["parent_id"] == 1003 and seen[1001]["parent_id"] == 1
    assert contacts.call(LISTSUB, {})["result"] == contacts.call(LISTSUB, {"dept_id": 1})["result"]


def test_users_are_paged_and_are_the_universe_people(contacts: Contacts) -> None:
    everyone: dict[str, dict] = {}
    for dept_id in (1001, 1002, 1003, 1004, 1005, 1006):
        whole, pages = contacts.users(dept_id, size=100)
        paged, small_pages = contacts.users(dept_id, size=2)
        assert paged == whole and pages == 1 and small_pages == max(1, -(-len(whole) // 2))
        for user in whole:
            assert user["dept_id_list"] == [dept_id]
            everyone[user["userid"]] = user
    people = [*UNIVERSE["employees"], *UNIVERSE["unmapped_employees"], *UNIVERSE["directory_only"]["employees"]]
    assert set(everyone) == {p["userid"] for p in people}
    for person in people:
        user = everyone[person["userid"]]
        assert (user["name"], user["job_number"], user["active"]) == (
            person["name"], person.get("job_number", ""), person.get("active", True))
    assert sorted(u["userid"] for u in everyone.values() if u["name"] == "张伟") == ["016401583811", "manager4500"]


def test_contacts_parameter_errors(contacts: Contacts) -> None:
    assert contacts.call(USERS, {"dept_id": 1001, "cursor": 0, "size": 101})["errcode"] == ERR_INVALID_PARAM
    assert contacts.call(USERS, {"dept_id": 1001, "cursor": 0})["errcode"] == ERR_MISSING_PARAM
    assert contacts.call(USERS, {"dept_id": 4242, "cursor": 0, "size": 10})["errcode"] == 60003
    assert contacts.call(LISTSUB, {"dept_id": 4242})["errcode"] == 60003


def test_contacts_calls_are_counted_rate_limited_and_take_faults(request: pytest.FixtureRequest) -> None:
    emulator = DingTalkEmulator(qps=1, qps_penalty_s=5, organisation={
        "kingdee": {"org_name": "小公司"}, "departments": [{"dept_id": "7", "name": "一部"}],
        "employees": [{"userid": "u1", "name": "甲", "dept_id": "7"}]})
    emulator.start()
    request.addfinalizer(emulator.stop)
    contacts = Contacts(emulator)
    assert contacts.call(USERS, {"dept_id": 7, "cursor": 0, "size": 10})["result"]["list"][0]["userid"] == "u1"
    assert contacts.call(USERS, {"dept_id": 7, "cursor": 0, "size": 10})["errcode"] in (88, 90018)
    emulator.inject("busy", api="department_listsub")
    assert contacts.call(LISTSUB, {"dept_id": 1})["errcode"] == -1
    assert emulator.calls["user_list"] == 2 and emulator.calls["department_listsub"] == 1
