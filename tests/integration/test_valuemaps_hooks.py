"""Reading both systems for value maps over real HTTP: DingTalkHook's contacts calls (tree walk, paging,
the shared rate limiter) and KingdeeHook's base-data queries (only enabled, audited records)."""

from __future__ import annotations

import json

import pytest
from dk_emulators.dingtalk import DingTalkEmulator
from dk_emulators.kingdee import KingdeeEmulator

from dingtalk_kingdee.hooks.dingtalk import DingTalkHook, reset_shared_state
from dingtalk_kingdee.hooks.kingdee import KingdeeHook
from dingtalk_kingdee.valuemaps import sources


@pytest.fixture(autouse=True)
def _fresh_hook_state():
    reset_shared_state()
    yield
    reset_shared_state()


def connect(monkeypatch: pytest.MonkeyPatch, emulator: DingTalkEmulator, qps: int | None = None) -> DingTalkHook:
    monkeypatch.setenv("AIRFLOW_CONN_DINGTALK_CONTACTS", json.dumps(emulator.connection(qps=qps)))
    return DingTalkHook("dingtalk_contacts")


def test_the_demo_directory_through_the_hook(dingtalk_emulator: DingTalkEmulator, monkeypatch) -> None:
    hook = connect(monkeypatch, dingtalk_emulator)
    departments = hook.list_departments()
    assert [(d["dept_id"], d["name"], d["parent_id"]) for d in departments] == [
        (1001, "行政部", 1), (1002, "财务部", 1), (1003, "研发中心", 1), (1004, "销售部", 1), (1005, "项目管理部", 1),
        (1006, "测试组", 1003)]
    assert [u["userid"] for u in hook.list_department_users(1006)] == ["016401583811"]
    tree, users = sources.read_directory(hook)
    assert len(tree) == 6 and len({u.userid for u in users}) == 25
    # One listsub per department (root included), one user/list per department (root included).
    assert dingtalk_emulator.calls["department_listsub"] == 7 + 7
    assert dingtalk_emulator.calls["user_list"] == 1 + 7


def test_users_are_read_page_by_page_within_the_rate_limit(monkeypatch, request) -> None:
    people = [{"userid": f"u{n:03d}", "name": f"员工{n}", "dept_id": "7", "job_number": str(n)} for n in range(250)]
    subs = [{"dept_id": str(100 + n), "name": f"组{n}", "parent_id": "7"} for n in range(12)]
    emulator = DingTalkEmulator(qps=5, qps_penalty_s=1, organisation={
        "kingdee": {"org_name": "大公司"}, "departments": [{"dept_id": "7", "name": "总部"}],
        "directory_only": {"departments": subs}, "employees": people})
    emulator.start()
    request.addfinalizer(emulator.stop)
    hook = connect(monkeypatch, emulator, qps=5)
    users = hook.list_department_users(7)
    assert [u["userid"] for u in users] == [p["userid"] for p in people]
    assert emulator.calls["user_list"] == 3  # 100 + 100 + 50
    assert len(hook.list_departments()) == 13
    # Paced by the hook's limiter at 5/s: no call was refused with 90018, so none was repeated.
    assert emulator.calls["department_listsub"] == 14


def test_kingdee_base_data_only_enabled_and_audited(kingdee_emulator: KingdeeEmulator, kingdee_conn_id: str) -> None:
    hook = KingdeeHook(kingdee_conn_id)
    usable = hook.query_base_data("BD_Empinfo", ["FNumber", "FName", "FStaffNumber", "FPostDept.FNumber"])
    numbers = [row["FNumber"] for row in usable]
    assert "EMP1022" not in numbers and len(numbers) == 21 and numbers == sorted(numbers)
    assert usable[0] == {"FNumber": "EMP1001", "FName": "张伟", "FStaffNumber": "1001", "FPostDept.FNumber": "BM001"}
    everyone = hook.query_base_data("BD_Empinfo", ["FNumber", "FForbidStatus"], usable_only=False)
    assert {"FNumber": "EMP1022", "FForbidStatus": "B"} in everyone
    employees = {r.number: r for r in sources.read_records(hook, sources.EMPLOYEE_FORM, sources.EMPLOYEE_FIELDS)}
    assert employees["EMP1022"].forbidden and not employees["EMP1022"].usable
    assert (employees["EMP1021"].staff_number, employees["EMP1021"].department) == ("1021", "BM003")
    items = sources.read_records(hook, sources.EXPENSE_ITEM_FORM)
    assert {r.name for r in items} >= {"差旅费", "项目会议费"} and all(r.usable for r in items)
