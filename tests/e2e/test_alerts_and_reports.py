"""Alerts an operator keeps reading and reports scoped to the run: real runs against both emulators, the
alerts through the DingTalk emulator's group-robot endpoint, staging on a real database."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from dk_emulators.dingtalk import DEMO_ROBOT_TOKEN

from dingtalk_kingdee import pipeline, reports
from dingtalk_kingdee.notifications import DingTalkRobotNotifier
from dingtalk_kingdee.pipeline import Run
from dingtalk_kingdee.reasons import MAPPING_REASONS
from tests.e2e.conftest import SCHEME_FILE

pytestmark = pytest.mark.e2e


@pytest.fixture
def world(world_factory, monkeypatch, tmp_path):
    built = world_factory(count=80, seed=11, edge_rate=0.3)
    monkeypatch.setenv("AIRFLOW_CONN_DINGDING_DEFAULT", json.dumps(
        {"conn_type": "dingding", "host": built.dingtalk.base_url, "password": DEMO_ROBOT_TOKEN}))
    monkeypatch.setenv("DK_VAR_DIR", str(tmp_path / "var"))
    return built


def alerting_run(world, **kwargs) -> dict:
    """A run that alerts through the group robot, as the DAG's report task does."""
    return world.run(alert=DingTalkRobotNotifier.sender({}), **kwargs)


def final_claims(world, *reasons: str) -> list:
    return [c for c in world.seed if c.truth.late_approval_at is None and c.truth.expected_reject in reasons]


def test_only_what_needs_a_person_is_alerted_with_the_exact_count_and_the_fix(world):
    summary = alerting_run(world)
    [message] = world.dingtalk.robot_messages
    title, text = message["markdown"]["title"], message["markdown"]["text"]

    gaps = final_claims(world, *MAPPING_REASONS)
    assert len(gaps) == 6
    assert title == f"expense_to_paybill: {len(gaps)} 条报销需要处理"
    assert summary["alerted_claims"] == len(gaps)
    for claim in gaps:
        assert claim.instance["business_id"] in text
    # Refused, withdrawn and malformed claims are counted in the report, never alerted.
    for claim in final_claims(world, "not_approved", "no_rows", "amount_missing", "duplicate_business_id"):
        assert claim.instance["business_id"] not in text
    assert summary["rejected_by_reason"]["not_approved"] == len(final_claims(world, "not_approved"))
    # The fix is named: which CSV file takes which key.
    userid = final_claims(world, "unmapped_employee")[0].instance["originator_userid"]
    assert re.search(rf'add the line `{userid},<value>` to \S*include/schemes/expense_to_paybill/employees\.csv',
                     text), text
    assert "expense_items.csv" in text


def test_a_claim_is_alerted_once_per_reason_until_it_changes(world):
    alerting_run(world)
    assert len(world.dingtalk.robot_messages) == 1
    again = alerting_run(world)
    alerting_run(world)
    assert len(world.dingtalk.robot_messages) == 1  # nothing new: no alert
    assert again["alerted_claims"] == 0 and again["already_alerted"] == 6

    # Claims approved since, which Kingdee refuses, are news: a Kingdee refusal, with Kingdee's message.
    world.approve_late()
    employees = dict.fromkeys(world.scheme.maps["employees"], "EMP9999")
    broken = world.scheme.model_copy(update={"maps": {**world.scheme.maps, "employees": employees}})
    summary = alerting_run(world, scheme=broken)
    refused = summary["bills_by_state"]["failed"]
    assert refused > 0
    message = world.dingtalk.robot_messages[-1]["markdown"]
    assert message["title"] == f"expense_to_paybill: {refused} 条报销需要处理"
    assert "kingdee_refused" in message["text"] and "EMP9999" in message["text"]
    assert len(world.dingtalk.robot_messages) == 2
    alerting_run(world, scheme=broken)
    assert len(world.dingtalk.robot_messages) == 2


def test_a_run_for_named_claims_reports_and_alerts_only_those(world):
    world.run()  # everything staged once, no alert
    gap = final_claims(world, "unmapped_employee")[0]
    refused = final_claims(world, "not_approved")[0]
    ids = (gap.instance["process_instance_id"], refused.instance["process_instance_id"])
    summary = alerting_run(world, instance_ids=ids)

    assert summary["claims_seen"] == 2
    assert f"python -m dingtalk_kingdee.reports --scheme expense_to_paybill --instance-ids {' '.join(ids)}" in \
        summary["text"]
    assert summary["rejected_by_reason"] == {"unmapped_employee": 1, "not_approved": 1}
    [message] = world.dingtalk.robot_messages
    assert message["markdown"]["title"] == "expense_to_paybill: 1 条报销需要处理"
    assert gap.instance["business_id"] in message["markdown"]["text"]
    assert refused.instance["business_id"] not in message["markdown"]["text"]


def test_the_report_lists_actionable_problems_first_with_money_in_its_currency_and_all_in_a_file(world, capsys):
    summary = world.run()
    run_id = f"test_run_{world.runs}"
    text = summary["text"]
    assert f"claims seen: {len(world.seed)} " in text
    lines = [line.strip() for line in text.splitlines() if re.match(r"\s{4}(rejected|bill) \S+: \[", line)]
    codes = [re.search(r"\[(\w+)\]", line)[1] for line in lines]
    mapping = [i for i, c in enumerate(codes) if c in MAPPING_REASONS]
    routine = [i for i, c in enumerate(codes) if c == "not_approved"]
    assert mapping and routine and max(mapping) < min(routine)
    loaded = Decimal(summary["money_by_state"]["loaded"])
    assert f"loaded {summary['bills_by_state']['loaded']} ({loaded:,} CNY)" in text
    assert summary["currency"] == "CNY"
    assert summary["needs_a_person"] == {"unmapped_employee": 2, "unmapped_expense_item": 4}

    # The log stops after max_listed lines and says where the file with every line is.
    short = pipeline.report(world.scheme, world.engine, Run(run_id=run_id), max_listed=3)
    assert re.search(r"\.\.\. and \d+ more: the full list is in \S+\.txt", short["text"]), short["text"]
    written = Path(short["report_file"]).read_text(encoding="utf-8")
    for line in lines:
        assert line in written
    # ... and the one-line command it prints lists them all from staging, wherever that is reachable.
    command = re.search(r"python -m dingtalk_kingdee\.reports --scheme expense_to_paybill --run '(\S+)'",
                        short["text"])
    assert command and command[1] == run_id
    assert reports.main(["--scheme", str(SCHEME_FILE), "--run", run_id]) == 0
    printed = capsys.readouterr().out
    for line in lines:
        assert line in printed
