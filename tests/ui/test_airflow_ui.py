"""What an operator does in the Airflow UI of `make airflow`, in a real browser; screenshots in
var/ui-artefacts/. The tests run in this order and share one Airflow (see conftest.py)."""

from __future__ import annotations

import itertools
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.ui.conftest import DAG_ID, screenshot

CONNECTION_FIELDS = {
    "dingtalk": ["Base URL", "App key (AppKey)", "App secret (AppSecret)", "Agent ID", "QPS budget"],
    "kingdee": ["Server URL", "User", "Password or app secret", "Account set ID (acctID)", "App ID",
                "Language (LCID)", "Organisation number", "Auth mode"],
}
HOOK_NAMES = {"dingtalk": "DingTalk Approval (OA)", "kingdee": "Kingdee K/3Cloud WebAPI"}
PARAMS = ["Dry run", "Window start (China time)", "Window end (China time)", "Instance ids", "Replay rejected"]
CHINA = ZoneInfo("Asia/Shanghai")


def typed_window() -> tuple[str, str]:
    """A window as an operator types it, China time: from midnight six days ago (the claims are
    started over the last five) to the next full hour."""
    now = datetime.now(CHINA)
    start = (now - timedelta(days=6)).replace(hour=0, minute=0, second=0, microsecond=0)
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return start.strftime("%Y-%m-%d %H:%M"), end.strftime("%Y-%m-%d %H:%M")


def open_trigger_dialog(page, base_url: str):
    page.goto(f"{base_url}/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    return dialog


def dag_runs(airflow_ui) -> list[dict]:
    return airflow_ui.api(f"/dags/{DAG_ID}/dagRuns?limit=100&order_by=logical_date")["dag_runs"]


def test_the_dag_page_and_a_run_triggered_from_the_form_with_a_window_in_china_time(airflow_ui, browser_page):
    page = browser_page
    page.goto(f"{airflow_ui.base_url}/dags/{DAG_ID}")
    for task in ("plan", "extract", "transform", "load", "write_back", "report"):
        page.get_by_text(task, exact=True).first.wait_for()
    screenshot(page, "01-dag-page")

    dialog = open_trigger_dialog(page, airflow_ui.base_url)
    for label in PARAMS:
        dialog.get_by_text(re.compile(rf"^{re.escape(label)}")).first.wait_for()
    # The window fields are plain text fields taking China time, not the date-time picker (which sends UTC).
    start, end = typed_window()
    for name, value in (("window_start", start), ("window_end", end)):
        field = dialog.locator(f"#element_{name}")
        assert field.evaluate("e => e.tagName + ' ' + e.type") == "INPUT text"
        assert field.evaluate("e => e.closest('[data-testid=datetime-input]')") is None
        field.fill(value)
    screenshot(page, "02-trigger-form")
    dialog.get_by_role("button", name="Trigger").last.click()

    run = airflow_ui.wait_for("the triggered run to finish", lambda: next(
        (r for r in dag_runs(airflow_ui) if r["run_type"] == "manual" and r["state"] in ("success", "failed")), None),
        timeout=900)
    assert run["state"] == "success"
    assert (run["conf"]["window_start"], run["conf"]["window_end"]) == (start, end)  # sent as typed
    page.goto(f"{airflow_ui.base_url}/dags/{DAG_ID}/runs/{run['dag_run_id']}")
    page.get_by_text("success").first.wait_for()
    screenshot(page, "03-run")

    # The plan log states the effective window in China time, exactly as typed (not 8 hours off).
    page.goto(f"{airflow_ui.base_url}/dags/{DAG_ID}/runs/{run['dag_run_id']}/tasks/plan")
    page.get_by_text(f"plan: claims started from {start}:00 to {end}:00 China time (Asia/Shanghai)").first.wait_for(
        timeout=120_000)
    screenshot(page, "04-plan-log")


def test_a_runs_report_log(airflow_ui, browser_page):
    page = browser_page
    run = next(r for r in dag_runs(airflow_ui) if r["run_type"] == "manual")
    start, end = run["conf"]["window_start"], run["conf"]["window_end"]
    page.goto(f"{airflow_ui.base_url}/dags/{DAG_ID}/runs/{run['dag_run_id']}/tasks/report")
    # The log view renders only the lines in sight (the end): the reject lines, each with its reason,
    # then where the full list is and the command that prints it again.
    page.get_by_text(re.compile(r"rejected \d+: \[\w+\]")).first.wait_for(timeout=120_000)
    command = rf"python -m dingtalk_kingdee\.reports --scheme \S+ --run '{re.escape(run['dag_run_id'])}'"
    page.get_by_text(re.compile(rf"full list: \S+\.txt or, .* {command}")).first.wait_for()
    screenshot(page, "05-report-log-end")
    # Its head: the window as typed and the money with its currency (a log longer than the view has
    # a button back to its top).
    to_top = page.get_by_role("button", name="Scroll to top")
    if to_top.count():
        to_top.first.click()
    page.get_by_text(f"window: claims started from {start}:00 to {end}:00 China time").first.wait_for()
    page.get_by_text(re.compile(r"bills by state: .*\(\d[\d,.]* CNY\)")).first.wait_for()
    screenshot(page, "06-report-log-head")


def test_a_backfill_started_from_the_dialog_runs_one_at_a_time_by_default(airflow_ui, browser_page):
    page = browser_page
    dialog = open_trigger_dialog(page, airflow_ui.base_url)
    dialog.get_by_text("Backfill", exact=True).click()
    dialog.get_by_text("Date Range").wait_for()
    # Three hourly runs on a day with no run yet: logical dates 01:00, 02:00 and 03:00 UTC two days ago.
    day = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y/%m/%d")
    for picker, time_of_day in zip(dialog.get_by_test_id("datetime-input").all()[:2], ("01:00", "03:00"), strict=True):
        picker.click()
        popover = page.locator("[data-scope=popover][data-part=content][data-state=open]")
        popover.get_by_placeholder("YYYY/MM/DD").fill(day)
        popover.get_by_placeholder("HH:mm").fill(time_of_day)
        page.keyboard.press("Escape")
    max_active = dialog.locator("input[name=max_active_runs]")
    assert max_active.input_value() == "1"  # what the dialog offers
    dialog.get_by_text(re.compile(r"\b3 runs\b")).first.wait_for()
    screenshot(page, "07-backfill-dialog")
    dialog.get_by_role("button", name="Run Backfill").click()

    backfills = airflow_ui.wait_for("the backfill", lambda: airflow_ui.api(f"/backfills?dag_id={DAG_ID}")["backfills"])
    backfill = backfills[0]
    assert backfill["max_active_runs"] == 1
    runs = airflow_ui.wait_for("the backfill's three runs to finish", lambda: (
        done if len(done := [r for r in dag_runs(airflow_ui) if r["run_type"] == "backfill"
                             and r["state"] in ("success", "failed")]) == 3 else None), timeout=600)
    assert {r["state"] for r in runs} == {"success"}
    spans = sorted((r["start_date"], r["end_date"]) for r in runs)
    overlapping = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert not overlapping, f"backfill runs overlapped with max_active_runs 1: {spans}"
    page.goto(f"{airflow_ui.base_url}/dags/{DAG_ID}/runs")
    page.get_by_text("backfill", exact=False).first.wait_for()
    screenshot(page, "08-backfill-runs")


@pytest.mark.parametrize("conn_type", ["dingtalk", "kingdee"])
def test_the_add_form_of_each_connection_type_has_every_field(airflow_ui, browser_page, conn_type):
    page = browser_page
    page.goto(f"{airflow_ui.base_url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").first.click()
    page.get_by_role("option", name=HOOK_NAMES[conn_type]).click()
    assert_fields(dialog, conn_type)
    screenshot(page, f"09-add-{conn_type}")
    dialog.get_by_role("button", name="Close").click()


@pytest.mark.parametrize("conn_type", ["dingtalk", "kingdee"])
def test_the_edit_form_of_each_connection_type_has_every_field(airflow_ui, browser_page, conn_type):
    page = browser_page
    page.goto(f"{airflow_ui.base_url}/connections")
    row_button(page, conn_type, "Edit Connection").click()
    dialog = page.get_by_role("dialog")
    assert_fields(dialog, conn_type)
    screenshot(page, f"10-edit-{conn_type}")
    dialog.get_by_role("button", name="Close").click()


@pytest.mark.parametrize("conn_type", ["dingtalk", "kingdee"])
def test_the_connection_test_button(airflow_ui, browser_page, conn_type):
    page = browser_page
    page.goto(f"{airflow_ui.base_url}/connections")
    row_button(page, conn_type, "Test Connection").click()
    toast = page.get_by_role("status").filter(has_text="Test Connection")
    toast.first.wait_for()
    page.wait_for_timeout(500)
    screenshot(page, f"11-test-button-{conn_type}")
    assert "Failed" not in toast.first.inner_text(), toast.first.inner_text()


def test_the_airflow_home_is_the_scripts_own(airflow_ui):
    """The AIRFLOW_HOME the script inherited (the Makefile's, the test suite's) holds nothing; its own
    metadata DB holds exactly the runs made here."""
    if airflow_ui.inherited_home is not None:
        assert list(airflow_ui.inherited_home.iterdir()) == []
    with sqlite3.connect(airflow_ui.state_dir / "airflow_home" / "airflow.db") as db:
        run_ids = {row[0] for row in db.execute("select run_id from dag_run where dag_id = ?", (DAG_ID,))}
    assert run_ids == {r["dag_run_id"] for r in dag_runs(airflow_ui)}


def assert_fields(dialog, conn_type: str) -> None:
    """Every field of the type is on the form: the standard ones, then (one section open at a time)
    the extra ones."""
    dialog.get_by_text("Standard Fields", exact=True).wait_for()
    dialog.page.wait_for_timeout(500)
    text = dialog.inner_text()
    dialog.get_by_text("Extra Fields", exact=True).click()
    dialog.page.wait_for_timeout(500)
    text += dialog.inner_text()
    missing = [label for label in CONNECTION_FIELDS[conn_type] if label not in text]
    assert not missing, f"{conn_type} form lacks {missing}"


def row_button(page, conn_type: str, name: str):
    return page.get_by_role("row").filter(has_text=f"{conn_type}_default").get_by_role("button", name=name)
