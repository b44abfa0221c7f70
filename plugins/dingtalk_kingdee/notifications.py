"""``DingTalkRobotNotifier``: failure and problem alerts through a DingTalk group robot.

It posts markdown through the dingding provider's hook (connection type ``dingding``, the robot's
webhook token as password). Alerts are off unless the robot connection (``settings.robot_conn_id``
by default) exists.

Two uses:

* ``on_failure_callback=DingTalkRobotNotifier()``: without a text, it describes the failed task of
  the callback's context. Called as a callback it never raises: an alert must not hide (or
  replace) the failure it reports.
* ``DingTalkRobotNotifier.sender(context)``: the report's alert of the claims that need a person
  (``pipeline.problems`` chooses and words them, the alert ledger keeps them from repeating); a
  delivery failure is recorded in the report's summary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow.sdk import BaseHook, BaseNotifier
from airflow.sdk.exceptions import AirflowNotFoundException

from dingtalk_kingdee.settings import get_settings

MAX_ERROR_CHARS = 800
# A plain module logger: these lines must reach wherever the callback runs, task log or not.
log = logging.getLogger(__name__)


def robot_configured(conn_id: str) -> bool:
    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def failure_message(context: Mapping[str, Any]) -> tuple[str, str]:
    """(title, markdown) naming the failed task's DAG, task, run, try and error."""
    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(ti, "run_id", "?")
    try_number = getattr(ti, "try_number", "?")
    error = context.get("exception")
    title = f"同步失败 {dag_id}.{task_id}"
    text = (f"### {title}\n\n- run: `{run_id}`\n- try: {try_number}\n- error: {str(error)[:MAX_ERROR_CHARS]}\n\n"
            "Clear the task in the Airflow UI to retry it: every task is safe to run again.")
    return title, text


class DingTalkRobotNotifier(BaseNotifier):
    """Post a markdown message to a DingTalk group robot.

    :param robot_conn_id: the robot's ``dingding`` connection (default: ``settings.robot_conn_id``).
    :param title: message title; with ``text`` None, the failed task of the context is described.
    :param text: markdown body (templated when the notifier is called as a callback).
    """

    template_fields: Sequence[str] = ("robot_conn_id", "title", "text")

    def __init__(self, *, robot_conn_id: str | None = None, title: str | None = None,
                 text: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.robot_conn_id = robot_conn_id
        self.title = title
        self.text = text

    @classmethod
    def sender(cls, context: Any, robot_conn_id: str | None = None) -> Callable[[str, str], bool]:
        """``send(title, text)`` for the report's alert: True when sent, False when no robot is configured."""
        def send(title: str, text: str) -> bool:
            return cls(robot_conn_id=robot_conn_id, title=title, text=text).notify(context)

        return send

    @property
    def conn_id(self) -> str:
        return self.robot_conn_id or get_settings().robot_conn_id

    def message(self, context: Mapping[str, Any]) -> tuple[str, str]:
        if self.text is None:
            return failure_message(context)
        return self.title or "", self.text

    def notify(self, context: Any) -> bool:
        """Send; True when sent, False when no robot is configured. Raises when delivery fails.

        Called directly (not as a callback), the text is sent as given, never rendered as a
        template: a reject reason is data and may contain ``{{``.
        """
        conn_id = self.conn_id
        if not robot_configured(conn_id):
            log.info("no DingTalk robot connection %r: alert not sent", conn_id)
            return False
        from airflow.providers.dingding.hooks.dingding import DingdingHook

        title, text = self.message(context)
        DingdingHook(dingding_conn_id=conn_id, message_type="markdown",
                     message={"title": title, "text": text}).send()
        return True

    def __call__(self, *args: Any) -> None:
        """As a callback: send, and only log a failure to send (the task's failure stays the news)."""
        try:
            super().__call__(*args)
        except Exception:
            log.exception("could not send the DingTalk robot alert")
