"""The DingTalk emulator's simulated clock and monthly metered-call quota, over real HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta

import requests
from dk_emulators.dingtalk import CHINA_TZ, ERR_MONTHLY_QUOTA

from tests.integration.test_dingtalk_emulator import GET, Client, error_code, instance, started_emulator


def admin(emulator, method: str, path: str, body: dict | None = None) -> requests.Response:
    return requests.request(method, f"{emulator.base_url}/_emulator/{path}", json=body, timeout=10)


def test_clock_is_pinned_and_moved_by_the_admin_endpoint(request):
    emu = started_emulator(request)
    pinned = datetime(2026, 3, 31, 23, 0, tzinfo=CHINA_TZ)
    answer = admin(emu, "POST", "clock", {"now": pinned.isoformat()}).json()
    assert answer["simulated"] is True and datetime.fromisoformat(answer["now"]) == pinned
    moved = admin(emu, "POST", "clock", {"advance_s": 3600}).json()
    assert datetime.fromisoformat(moved["now"]) == pinned + timedelta(hours=1)
    assert datetime.fromisoformat(admin(emu, "GET", "clock").json()["now"]) == pinned + timedelta(hours=1)
    # The listing's default end_time follows the simulated clock: a claim started after it is not listed.
    emu.add_instances([instance("early", pinned - timedelta(hours=2)), instance("later", pinned + timedelta(hours=3))])
    client = Client(emu)
    listed = client.listids(pinned - timedelta(days=1))["result"]["list"]
    assert listed == ["early"]
    assert admin(emu, "POST", "clock", {"real": True}).json()["simulated"] is False
    assert admin(emu, "POST", "clock", {"now": "2026-03-31T23:00:00"}).status_code == 400  # naive


def test_quota_off_by_default(dingtalk_emulator):
    client = Client(dingtalk_emulator)
    dingtalk_emulator.add_instances([instance("a", datetime.now(CHINA_TZ) - timedelta(hours=1))])
    for _ in range(12):  # under the 20 QPS limit
        assert client.call(GET, {"process_instance_id": "a"})["errcode"] == 0
    usage = admin(dingtalk_emulator, "GET", "usage").json()
    assert usage["quota"] is None and usage["by_api"] == {"get": 12} and usage["refused"] == 0


def test_quota_answers_90020_past_it_until_the_first_of_next_month(request):
    start = datetime(2026, 3, 31, 22, 0, tzinfo=CHINA_TZ)
    emu = started_emulator(request, monthly_quota=5, clock=lambda: start)
    emu.set_clock(start)
    emu.add_instances([instance("a", start - timedelta(hours=1))])
    client = Client(emu)
    assert client.gettoken()["errcode"] == 0  # gettoken is not metered
    for _ in range(4):
        assert client.call(GET, {"process_instance_id": "a"})["errcode"] == 0
    assert client.listids(start - timedelta(days=1))["errcode"] == 0  # the 5th metered call
    refused = client.call(GET, {"process_instance_id": "a"})
    assert error_code(refused) == ERR_MONTHLY_QUOTA
    assert "额度:5次" in (refused.get("sub_msg") or refused["errmsg"])
    usage = emu.usage()
    assert usage["month"] == "2026-03" and usage["used"] == 5 and usage["refused"] == 1
    assert usage["by_api"] == {"get": 4, "listids": 1}
    # 23:59 China time is still March; one minute past midnight China time is April: the quota is back.
    emu.set_clock(datetime(2026, 3, 31, 23, 59, tzinfo=CHINA_TZ))
    assert error_code(client.call(GET, {"process_instance_id": "a"})) == ERR_MONTHLY_QUOTA
    admin(emu, "POST", "clock", {"advance_s": 120})
    assert client.call(GET, {"process_instance_id": "a"})["errcode"] == 0
    usage = admin(emu, "GET", "usage").json()
    assert usage["month"] == "2026-04" and usage["used"] == 1
    assert usage["months"]["2026-03"] == {"used": 5, "by_api": {"get": 4, "listids": 1}, "refused": 2}


def test_quota_is_a_live_setting(dingtalk_emulator):
    client = Client(dingtalk_emulator)
    dingtalk_emulator.add_instances([instance("a", datetime.now(CHINA_TZ) - timedelta(hours=1))])
    assert client.call(GET, {"process_instance_id": "a"})["errcode"] == 0
    assert admin(dingtalk_emulator, "POST", "config", {"monthly_quota": 1}).json()["config"]["monthly_quota"] == 1
    assert error_code(client.call(GET, {"process_instance_id": "a"})) == ERR_MONTHLY_QUOTA
    assert admin(dingtalk_emulator, "POST", "config", {"monthly_quota": -1}).status_code == 400
    admin(dingtalk_emulator, "POST", "config", {"monthly_quota": None})
    assert client.call(GET, {"process_instance_id": "a"})["errcode"] == 0
