"""End to end: value maps rebuilt from the two systems. On the demo organisation, starting from empty
employee, payee-name and department maps, ``suggest`` then ``apply`` rebuilds them so that the demo
pays the same bills as with the shipped maps; the ambiguous people land in the conflicts with their
evidence; a line a person wrote is kept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dingtalk_kingdee import staging
from dingtalk_kingdee.scheme import load_scheme
from dingtalk_kingdee.valuemaps.proposal import read_proposal
from dingtalk_kingdee.valuemaps.run import suggest_for_scheme
from tests.e2e.conftest import ROOT, SCHEME_FILE
from tests.e2e.expected import _text, bill_total, compare_bill

pytestmark = pytest.mark.e2e
REBUILT = ("employees", "employee_names", "departments", "expense_items")


def emptied_scheme(tmp_path: Path) -> Path:
    """A copy of the shipped schemes folder whose employee, name, department and expense-item maps are
    empty."""
    folder = tmp_path / "schemes"
    shutil.copytree(SCHEME_FILE.parent, folder)
    for name in REBUILT:
        (folder / "expense_to_paybill" / f"{name}.csv").write_text("key,value\n", encoding="utf-8")
    return folder / SCHEME_FILE.name


def category_of(instance: dict) -> str | None:
    return _text(instance, "报销类别")


def type_of(instance: dict) -> str | None:
    return _text(instance, "行政报销类型") or _text(instance, "项目报销类型")


def proposal(scheme_file: Path, name: str) -> dict[str, dict[str, str]]:
    rows = read_proposal(scheme_file.parent / "expense_to_paybill" / f"{name}.proposal.csv")
    return {row["key"]: row for row in rows}


def test_suggest_then_apply_rebuilds_the_maps_and_the_demo_pays_the_same_bills(world_factory, tmp_path):
    world = world_factory(count=80, seed=7)
    scheme_file = emptied_scheme(tmp_path)
    empty = load_scheme(scheme_file)
    world.run(scheme=empty)
    assert world.bills() == []  # without the maps every approved claim is rejected
    rejected = world.staged.summary().rejected_by_reason
    assert rejected.get("unmapped_employee")

    result = suggest_for_scheme(empty)  # a proposal only: the maps are untouched
    for name in REBUILT:
        assert (scheme_file.parent / "expense_to_paybill" / f"{name}.csv").read_text(encoding="utf-8") == "key,value\n"
    counts = result.counts()["maps"]
    assert counts["employees"]["proposed"] == 20 and counts["departments"]["proposed"] == 5

    employees = proposal(scheme_file, "employees")
    second_zhang = employees["016401583811"]
    assert second_zhang["status"] == "two_candidates" and second_zhang["value"] == ""
    assert second_zhang["candidates"] == "EMP1001 张伟 in BM001 | EMP1021 张伟 in BM003"
    assert "no job number in DingTalk" in second_zhang["evidence"]
    assert "DingTalk department 1006 has no department line" in second_zhang["evidence"]
    assert employees["contractor77"]["status"] == "no_candidate"
    assert employees["contractor77"]["evidence"].startswith("no job number in DingTalk")
    assert employees["newhire9001"]["status"] == "no_candidate"
    assert "job number 1031 is no Kingdee FStaffNumber" in employees["newhire9001"]["evidence"]
    forbidden = employees["016401662002"]
    assert forbidden["status"] == "forbidden"
    assert forbidden["candidates"] == "EMP1022 陈晨 in BM004, forbidden in Kingdee"
    assert "job number 1022" in forbidden["evidence"]
    assert "016401741003" not in employees  # never activated
    assert employees["manager4500"]["basis"] == "job_number"
    assert employees["016400395955"]["basis"] == "name_in_department"  # 杨磊 has no job number
    assert proposal(scheme_file, "departments")["1006"]["status"] == "no_candidate"
    assert proposal(scheme_file, "employee_names")["016401583811"]["status"] == "two_candidates"

    items = proposal(scheme_file, "expense_items")
    if "行政报销/团建费" in items:  # an option Kingdee has no expense item for
        assert items["行政报销/团建费"]["status"] == "no_candidate"
    assert {k: r["value"] for k, r in items.items() if r["status"] == "proposed"}.items() <= \
        load_scheme(SCHEME_FILE).value_map("expense_items").items()

    suggest_for_scheme(load_scheme(scheme_file), apply=True)
    rebuilt = load_scheme(scheme_file)
    shipped = load_scheme(SCHEME_FILE)
    for name in REBUILT[:3]:
        assert rebuilt.value_map(name) == shipped.value_map(name), name
    # Expense items: exactly the shipped lines of the options the stored claims carry.
    carried = {f"{category_of(c.instance)}/{type_of(c.instance)}" for c in world.seed}
    assert rebuilt.value_map("expense_items") == {
        key: number for key, number in shipped.value_map("expense_items").items() if key in carried}
    assert proposal(scheme_file, "employees")["manager4500"]["status"] == "applied"

    # The next run, replaying the rejected claims, pays exactly what the shipped maps pay.
    world.run(scheme=rebuilt, replay_rejected=True)
    stored = world.bills_by_business_id()
    payable = {c.instance["business_id"]: c for c in world.seed if c.truth.payable and c.truth.late_approval_at is None}
    assert set(stored) == set(payable)
    world.assert_no_duplicates()
    for business_id, claim in payable.items():
        [bill] = stored[business_id]
        assert compare_bill(bill, claim.instance) == [], business_id
        assert bill_total(bill) == claim.truth.expected_total, business_id

    again = suggest_for_scheme(rebuilt, apply=True)  # nothing left that is sure: nothing added
    assert again.counts()["maps"]["employees"]["applied"] == 0
    for name in REBUILT:
        assert load_scheme(scheme_file).value_map(name) == rebuilt.value_map(name)


def test_a_line_a_person_wrote_is_kept_and_stale_lines_are_reported(world_factory, tmp_path):
    world_factory(count=5)
    scheme_file = emptied_scheme(tmp_path)
    employees_csv = scheme_file.parent / "expense_to_paybill" / "employees.csv"
    # A person chose EMP1006 for manager4500 (job number says EMP1001), kept a line for 陈晨 who left,
    # and one for a number Kingdee no longer has.
    employees_csv.write_text("key,value\nmanager4500,EMP1006\n016401662002,EMP1022\nold.user,EMP0999\n",
                             encoding="utf-8")
    suggest_for_scheme(load_scheme(scheme_file), apply=True)
    lines = employees_csv.read_text(encoding="utf-8").splitlines()
    assert lines[:4] == ["key,value", "manager4500,EMP1006", "016401662002,EMP1022", "old.user,EMP0999"]
    assert "manager4500,EMP1001" not in lines
    rows = proposal(scheme_file, "employees")
    assert rows["016401662002"]["status"] == "target_forbidden"
    assert rows["old.user"]["status"] == "target_deleted"
    # 杨磊 (no job number) fits EMP1006 by name in his department, but a person gave it to manager4500.
    assert rows["016400395955"]["status"] == "already_mapped"
    assert "already the value of manager4500" in rows["016400395955"]["evidence"]


def test_the_cli_writes_the_proposal_and_applies(world_factory, tmp_path):
    world_factory(count=5)
    scheme_file = emptied_scheme(tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}"}
    done = subprocess.run([sys.executable, "-m", "dingtalk_kingdee.valuemaps", "suggest", "--scheme",
                           str(scheme_file), "--apply"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "employees (employee_number): 0 proposed, 20 applied, 4 conflicts, 0 stale" in done.stdout
    assert "two_candidates: 016401583811 张伟" in done.stdout
    assert load_scheme(scheme_file).value_map("employees") == load_scheme(SCHEME_FILE).value_map("employees")


def test_the_value_map_dag_writes_the_proposal_and_applies_with_its_param(world_factory, tmp_path):
    home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()
    if not (home / ".migrated").exists():
        pytest.skip("Airflow's metadata database is not migrated here: run the suite with `make test`")
    from dingtalk_kingdee.valuemaps.dag import build_valuemaps_dag

    world = world_factory(count=5)
    scheme_file = emptied_scheme(tmp_path)
    dag = build_valuemaps_dag(load_scheme(scheme_file))
    assert dag.dag_id == "dingtalk_kingdee_valuemaps_expense_to_paybill" and dag.schedule is None
    calls = world.dingtalk.calls["user_list"]
    dag_run = dag.test(run_conf={"apply": False})
    assert str(dag_run.state) == "success"
    [ti] = dag_run.get_task_instances()
    counts = ti.xcom_pull(task_ids="suggest")
    assert counts["maps"]["employees"]["proposed"] == 20 and counts["maps"]["employees"]["two_candidates"] == 1
    assert load_scheme(scheme_file).value_map("employees") == {}
    assert world.dingtalk.calls["user_list"] > calls  # the contacts were read from DingTalk
    # ... and are in the call ledger under the DAG run, as the XCom says.
    ledger_calls = staging.CallLedger(world.engine).run_calls("expense_to_paybill", f"valuemaps__{dag_run.run_id}")
    assert ledger_calls["v2/user/list"] == world.dingtalk.calls["user_list"] - calls
    assert counts["dingtalk_calls"]["run"] == ledger_calls and counts["dingtalk_calls"]["run_total"] == 14
    dag_run = dag.test(run_conf={"apply": True}, logical_date=world.now)
    assert str(dag_run.state) == "success"
    assert load_scheme(scheme_file).value_map("departments") == load_scheme(SCHEME_FILE).value_map("departments")
