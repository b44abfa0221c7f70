"""The sync's steps as plain functions: extract → transform → load → write_back → report.

Each takes a scheme, the API clients it needs (``protocols``: the hooks, or anything with their
methods), a staging engine and a ``Run`` (what this run was asked to do), and returns small counts
for XCom. Each is idempotent: run again alone, it picks up where staging says things stand. The DAG
factory wires them; tests and benchmarks call them directly.

One module per step (``extract_step``, ``transform_step``, ``load_step`` with ``settle`` and
``documents``, ``write_back_step``, ``report_step``); ``run`` holds the plan.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from dingtalk_kingdee.pipeline.documents import advance_documents
from dingtalk_kingdee.pipeline.extract_step import extract
from dingtalk_kingdee.pipeline.load_step import LoadIncomplete, load
from dingtalk_kingdee.pipeline.protocols import DingTalkClient, KingdeeClient
from dingtalk_kingdee.pipeline.report_step import AlertSender, report
from dingtalk_kingdee.pipeline.run import FORM_TIME_HINT, FORM_TIME_PATTERN, Run, china_time, form_time, select_ids
from dingtalk_kingdee.pipeline.settle import SENDING_LEASE, reconcile
from dingtalk_kingdee.pipeline.transform_step import transform
from dingtalk_kingdee.pipeline.write_back_step import write_back
from dingtalk_kingdee.scheme import Scheme


def run_all(scheme: Scheme, dingtalk: DingTalkClient, kingdee: KingdeeClient, engine: Engine, run: Run,
            alert: AlertSender | None = None) -> dict:
    """The five steps in order, in one process (demo and tests; the DAG runs them as tasks)."""
    steps = {"extract": extract(scheme, dingtalk, engine, run), "transform": transform(scheme, engine, run)}
    steps["load"] = load(scheme, kingdee, engine, run)
    steps["write_back"] = write_back(scheme, dingtalk, engine, run)
    return report(scheme, engine, run, steps, alert=alert)


__all__ = [
    "FORM_TIME_HINT",
    "FORM_TIME_PATTERN",
    "SENDING_LEASE",
    "AlertSender",
    "DingTalkClient",
    "KingdeeClient",
    "LoadIncomplete",
    "Run",
    "advance_documents",
    "china_time",
    "extract",
    "form_time",
    "load",
    "reconcile",
    "report",
    "run_all",
    "select_ids",
    "transform",
    "write_back",
]
