"""DingTalkRobotNotifier: alerts go through the dingding provider's hook to the group-robot webhook, over HTTP."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from dk_emulators.dingtalk import DEMO_ROBOT_TOKEN

from dingtalk_kingdee.notifications import DingTalkRobotNotifier


@pytest.fixture
def robot(monkeypatch, dingtalk_emulator):
    def configure(token: str = DEMO_ROBOT_TOKEN) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_DINGDING_DEFAULT", json.dumps(
            {"conn_type": "dingding", "host": dingtalk_emulator.base_url, "password": token}))

    return configure


def failure_context(error: Exception) -> dict:
    ti = SimpleNamespace(dag_id="dingtalk_kingdee_expense_to_paybill", task_id="load",
                         run_id="scheduled__2026-11-28T08:00:00+00:00", try_number=2)
    return {"task_instance": ti, "exception": error}


def test_no_robot_connection_means_no_alert(monkeypatch, dingtalk_emulator):
    monkeypatch.delenv("AIRFLOW_CONN_DINGDING_DEFAULT", raising=False)
    assert DingTalkRobotNotifier(robot_conn_id="dingding_default", title="t", text="x").notify({}) is False
    DingTalkRobotNotifier()(failure_context(RuntimeError("boom")))
    assert dingtalk_emulator.robot_messages == []


def test_task_failure_alert_names_dag_task_run_and_error(robot, dingtalk_emulator):
    robot()
    DingTalkRobotNotifier()(failure_context(RuntimeError("Kingdee did not answer")))
    [message] = dingtalk_emulator.robot_messages
    assert message["msgtype"] == "markdown"
    text = message["markdown"]["text"]
    for part in ("dingtalk_kingdee_expense_to_paybill", "load", "scheduled__2026-11-28T08:00:00+00:00",
                 "Kingdee did not answer", "Clear the task"):
        assert part in text


def test_a_refused_alert_never_hides_the_failure(robot, dingtalk_emulator, caplog):
    robot(token="wrong-token")
    DingTalkRobotNotifier()(failure_context(RuntimeError("boom")))  # must not raise
    assert dingtalk_emulator.robot_messages == []
    assert "could not send the DingTalk robot alert" in caplog.text
    with pytest.raises(Exception, match=r"300001|token"):
        DingTalkRobotNotifier(robot_conn_id="dingding_default", title="t", text="x").notify({})


def test_the_report_alert_is_sent_verbatim(robot, dingtalk_emulator):
    """The alert's text is data: a reason holding template syntax reaches the robot unchanged."""
    robot()
    send = DingTalkRobotNotifier.sender({})
    assert send("expense_to_paybill: 1 条报销需要处理", "- i2: amount {{ 1 + 1 }}") is True
    [message] = dingtalk_emulator.robot_messages
    assert message["markdown"] == {"title": "expense_to_paybill: 1 条报销需要处理", "text": "- i2: amount {{ 1 + 1 }}"}


def test_without_a_robot_the_sender_says_so(monkeypatch, dingtalk_emulator):
    monkeypatch.delenv("AIRFLOW_CONN_DINGDING_DEFAULT", raising=False)
    assert DingTalkRobotNotifier.sender({})("t", "x") is False
    assert dingtalk_emulator.robot_messages == []


def test_notifier_text_is_templated_when_used_as_a_callback(robot, dingtalk_emulator):
    robot()
    DingTalkRobotNotifier(title="t", text="task {{ task_instance.task_id }} failed")(
        failure_context(RuntimeError("boom")))
    [message] = dingtalk_emulator.robot_messages
    assert message["markdown"]["text"] == "task load failed"
