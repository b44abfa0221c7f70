"""Failure and reject alerts through a DingTalk group robot (the dingding provider's hook).

Alerts are off unless the robot connection (settings.robot_conn_id) exists.
"""

from __future__ import annotations

import logging

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from dingtalk_kingdee.settings import get_settings

log = logging.getLogger(__name__)


def robot_configured(conn_id: str) -> bool:
    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def send_robot_markdown(conn_id: str, title: str, text: str) -> bool:
    """Post a markdown message to the group robot; True when sent, False when no robot is configured."""
    if not robot_configured(conn_id):
        log.info("no DingTalk robot connection %r: alert not sent", conn_id)
        return False
    from airflow.providers.dingding.hooks.dingding import DingdingHook

    DingdingHook(dingding_conn_id=conn_id, message_type="markdown",
                 message={"title": title, "text": text}).send()
    return True


def failure_text(context: dict) -> tuple[str, str]:
    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(ti, "run_id", "?")
    try_number = getattr(ti, "try_number", "?")
    error = context.get("exception")
    title = f"同步失败 {dag_id}.{task_id}"
    text = (f"### {title}\n\n- run: `{run_id}`\n- try: {try_number}\n- error: {str(error)[:800]}\n\n"
            "Clear the task in the Airflow UI to retry it: every task is safe to run again.")
    return title, text


def on_task_failure(context: dict) -> None:
    """Task failure callback: never raises, an alert must not hide the failure it reports."""
    try:
        title, text = failure_text(context)
        send_robot_markdown(get_settings().robot_conn_id, title, text)
    except Exception:
        log.exception("could not send the DingTalk robot alert")


def reject_text(scheme_id: str, run_id: str, summary: dict, max_listed: int = 20) -> tuple[str, str] | None:
    rejected = summary.get("rejected_claims") or []
    if not rejected:
        return None
    title = f"{scheme_id}: {len(rejected)} 条报销未能生成付款单"
    lines = [f"### {title}", "", f"run `{run_id}`", ""]
    for r in rejected[:max_listed]:
        lines.append(f"- {r['business_id'] or r['instance_id']}: [{r['reason_code']}] {r['reason']}")
    if len(rejected) > max_listed:
        lines.append(f"- ... {len(rejected) - max_listed} more")
    return title, "\n".join(lines)
