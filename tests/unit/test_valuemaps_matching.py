"""Value-map matching (pure): the evidence ladder, never a guess between two candidates, lines a person
wrote left alone, stale lines; and the proposal file and its apply."""

from __future__ import annotations

from pathlib import Path

from dingtalk_kingdee.valuemaps.matching import (
    match_employee,
    suggest_departments,
    suggest_employee_names,
    suggest_employees,
    suggest_expense_items,
)
from dingtalk_kingdee.valuemaps.model import (
    Basis,
    DingTalkDepartment,
    DingTalkUser,
    KingdeeRecord,
    MapKind,
    MapSuggestion,
    Status,
)
from dingtalk_kingdee.valuemaps.proposal import apply_proposal, proposal_path, read_proposal, write_proposal

DEPTS = [DingTalkDepartment("1", "公司"), DingTalkDepartment("10", "行政部", "1"),
         DingTalkDepartment("20", "研发中心", "1"), DingTalkDepartment("21", "测试组", "20")]
KD_DEPTS = [KingdeeRecord("BM10", "行政部"), KingdeeRecord("BM20", "研发中心"),
            KingdeeRecord("BM99", "旧部门", forbidden=True)]
DEPT_LINES = {"10": "BM10", "20": "BM20"}
EMPLOYEES = [
    KingdeeRecord("E1", "张伟", staff_number="1", department="BM10"),
    KingdeeRecord("E2", "张伟", staff_number="2", department="BM20"),
    KingdeeRecord("E3", "李娜", staff_number="3", department="BM20"),
    KingdeeRecord("E4", "陈晨", staff_number="4", department="BM10", forbidden=True),
    KingdeeRecord("E5", "王芳", staff_number="5", department="BM10", audited=False),
    KingdeeRecord("E6", "赵敏", staff_number="6", department="BM10"),
]


def user(userid: str, name: str, job: str = "", dept: str = "10", active: bool = True) -> DingTalkUser:
    return DingTalkUser(userid, name, job, (dept,), active)


def rows_by_key(rows):
    return {row.key: row for row in rows}


def test_the_evidence_ladder_job_number_then_name_in_department_then_name() -> None:
    users = [user("u1", "张伟", job="1"), user("u3", "李娜", dept="20"), user("u6", "赵敏", dept="77")]
    rows = rows_by_key(suggest_employees(users, {}, EMPLOYEES, DEPT_LINES))
    assert (rows["u1"].status, rows["u1"].value, rows["u1"].basis) == (Status.PROPOSED, "E1", Basis.JOB_NUMBER)
    assert "job number 1 = FStaffNumber of E1 张伟" in rows["u1"].evidence
    assert (rows["u3"].value, rows["u3"].basis) == ("E3", Basis.NAME_IN_DEPARTMENT)
    assert "no job number" in rows["u3"].evidence
    assert (rows["u6"].value, rows["u6"].basis) == ("E6", Basis.NAME)
    assert "department 77 has no department line" in rows["u6"].evidence


def test_two_namesakes_are_never_guessed_between() -> None:
    # A second 张伟 without a job number, in a department with no line: two Kingdee 张伟 fit by name.
    users = [user("u1", "张伟", job="1"), user("u2", "张伟", dept="21")]
    rows = rows_by_key(suggest_employees(users, {}, EMPLOYEES, DEPT_LINES))
    assert rows["u1"].status is Status.PROPOSED
    assert rows["u2"].status is Status.TWO_CANDIDATES and rows["u2"].value == ""
    assert rows["u2"].candidates == ("E1 张伟 in BM10", "E2 张伟 in BM20")
    assert "2 usable Kingdee employees and 2 DingTalk entries are named 张伟" in rows["u2"].evidence
    # Inside a mapped department the name is enough, even with a namesake elsewhere.
    inside = rows_by_key(suggest_employees([user("u2", "张伟", dept="20"), user("u1", "张伟", job="1")],
                                           {}, EMPLOYEES, DEPT_LINES))
    assert (inside["u2"].value, inside["u2"].basis) == ("E2", Basis.NAME_IN_DEPARTMENT)
    # One Kingdee 李娜 but two DingTalk 李娜 outside any mapped department: still two candidates.
    twins = suggest_employees([user("a", "李娜", dept="77"), user("b", "李娜", dept="78")], {}, EMPLOYEES, DEPT_LINES)
    assert {row.status for row in twins} == {Status.TWO_CANDIDATES}


def test_forbidden_unaudited_and_missing_targets_are_conflicts() -> None:
    users = [user("u4", "陈晨", job="4"), user("u5", "王芳"), user("u7", "孔明"), user("u8", "钱多多", job="31")]
    rows = rows_by_key(suggest_employees(users, {}, EMPLOYEES, DEPT_LINES))
    assert rows["u4"].status is Status.FORBIDDEN and rows["u4"].candidates == ("E4 陈晨 in BM10, forbidden in Kingdee",)
    assert rows["u5"].status is Status.FORBIDDEN and "not audited" in rows["u5"].candidates[0]
    assert rows["u7"].status is Status.NO_CANDIDATE
    assert rows["u7"].evidence == ("no job number in DingTalk; no usable employee named 孔明 in BM10; "
                                   "no Kingdee employee named 孔明")
    assert rows["u8"].status is Status.NO_CANDIDATE
    assert "job number 31 is no Kingdee FStaffNumber" in rows["u8"].evidence


def test_a_forbidden_job_number_is_not_replaced_by_a_namesake() -> None:
    employees = [*EMPLOYEES, KingdeeRecord("E9", "陈晨", staff_number="9", department="BM10")]
    row, record = match_employee(user("u4", "陈晨", job="4"), employees, DEPT_LINES, [user("u4", "陈晨", job="4")])
    assert row.status is Status.FORBIDDEN and record is None


def test_lines_a_person_wrote_are_kept_and_checked() -> None:
    existing = {"u1": "E2", "gone": "E404", "left": "E4"}
    users = [user("u1", "张伟", job="1"), user("gone", "某人"), user("left", "陈晨", job="4"),
             user("u3", "李娜", dept="20")]
    rows = suggest_employees(users, existing, EMPLOYEES, DEPT_LINES)
    assert not [r for r in rows if r.key == "u1"]  # E1 would fit by job number, but the person chose E2
    by_status = {(r.status, r.key) for r in rows}
    assert by_status == {(Status.PROPOSED, "u3"), (Status.TARGET_DELETED, "gone"), (Status.TARGET_FORBIDDEN, "left")}


def test_one_target_is_proposed_for_one_key_only() -> None:
    users = [user("x", "赵敏", job="6"), user("y", "赵敏2", job="6")]
    assert {r.status for r in suggest_employees(users, {}, EMPLOYEES, DEPT_LINES)} == {Status.TWO_CANDIDATES}
    rows = suggest_employees([user("x", "赵敏", job="6")], {"someone": "E6"}, EMPLOYEES, DEPT_LINES)
    assert rows[0].status is Status.ALREADY_MAPPED and "already the value of someone" in rows[0].evidence


def test_inactive_users_get_no_line_and_a_user_in_two_departments_is_one_row() -> None:
    users = [user("off", "李娜", dept="20", active=False), user("u3", "李娜", dept="20"), user("u3", "李娜", dept="10")]
    rows = suggest_employees(users, {}, EMPLOYEES, DEPT_LINES)
    assert [(r.key, r.value) for r in rows] == [("u3", "E3")]


def test_departments_by_exact_name_and_their_stale_lines() -> None:
    rows = rows_by_key(suggest_departments(DEPTS, {"old": "BM99"}, KD_DEPTS))
    assert "1" not in rows  # the root is the company, not a department
    assert (rows["10"].value, rows["20"].value) == ("BM10", "BM20")
    assert rows["21"].status is Status.NO_CANDIDATE
    assert rows["old"].status is Status.TARGET_FORBIDDEN
    twins = suggest_departments([DingTalkDepartment("30", "行政部"), DingTalkDepartment("31", "行政部")], {}, KD_DEPTS)
    assert {r.status for r in twins} == {Status.TWO_CANDIDATES}


def test_employee_names_follow_the_employee_lines_and_rows() -> None:
    users = [user("u1", "张伟", job="1"), user("u2", "张伟", dept="21"), user("u3", "李娜", dept="20")]
    employee_rows = suggest_employees(users, {"u3": "E3"}, EMPLOYEES, DEPT_LINES)
    rows = rows_by_key(suggest_employee_names(users, {}, EMPLOYEES, DEPT_LINES, {"u3": "E3"}, employee_rows))
    assert (rows["u3"].value, rows["u3"].basis) == ("李娜", Basis.MAPPED_EMPLOYEE)
    assert (rows["u1"].value, rows["u1"].basis) == ("张伟", Basis.JOB_NUMBER)
    assert rows["u2"].status is Status.TWO_CANDIDATES
    alone = rows_by_key(suggest_employee_names(users, {}, EMPLOYEES, DEPT_LINES))
    assert alone["u1"].value == "张伟" and alone["u2"].status is Status.TWO_CANDIDATES


def test_expense_items_by_the_option_leaf() -> None:
    items = [KingdeeRecord("F1", "差旅费"), KingdeeRecord("F2", "交通费"),
             KingdeeRecord("F3", "会议费", forbidden=True)]
    rows = rows_by_key(suggest_expense_items(
        ["行政报销/差旅费", "项目报销/差旅费", "行政报销/团建费", "项目报销/会议费", "交通费"], {}, items))
    assert rows["行政报销/差旅费"].value == rows["项目报销/差旅费"].value == "F1"
    assert rows["交通费"].value == "F2"
    assert rows["行政报销/团建费"].status is Status.NO_CANDIDATE
    assert rows["项目报销/会议费"].status is Status.FORBIDDEN


def test_proposal_file_and_apply_add_only_the_proposed_lines(tmp_path: Path) -> None:
    map_file = tmp_path / "employees.csv"
    map_file.write_text("key,value\nu9,E9", encoding="utf-8")  # a person's line, no final newline
    users = [user("u1", "张伟", job="1"), user("u2", "张伟", dept="21"), user("u3", "李娜", dept="20")]
    suggestion = MapSuggestion("employees", MapKind.EMPLOYEE_NUMBER,
                               suggest_employees(users, {"u9": "E9"}, EMPLOYEES, DEPT_LINES))
    written = read_proposal(write_proposal(proposal_path(map_file), suggestion))
    assert proposal_path(map_file).name == "employees.proposal.csv"
    assert [(r["status"], r["key"], r["value"]) for r in written] == [
        ("proposed", "u1", "E1"), ("two_candidates", "u2", ""), ("proposed", "u3", "E3"),
        ("target_deleted", "u9", "E9")]
    assert written[1]["candidates"] == "E1 张伟 in BM10 | E2 张伟 in BM20"
    map_file.write_text("key,value\nu9,E9\nu3,E30\n", encoding="utf-8")  # a person added u3 meanwhile
    added = apply_proposal(map_file, suggestion)
    assert [(r.key, r.value) for r in added] == [("u1", "E1")]
    assert map_file.read_text(encoding="utf-8") == "key,value\nu9,E9\nu3,E30\nu1,E1\n"
    assert suggestion.counts()["applied"] == 1 and suggestion.counts()["proposed"] == 1
    assert apply_proposal(map_file, suggestion) == []
    fresh = tmp_path / "new" / "departments.csv"
    fresh.parent.mkdir()
    departments = suggest_departments(DEPTS, {}, KD_DEPTS)
    apply_proposal(fresh, MapSuggestion("departments", MapKind.DEPARTMENT_NUMBER, departments))
    assert fresh.read_text(encoding="utf-8") == "key,value\n10,BM10\n20,BM20\n"
