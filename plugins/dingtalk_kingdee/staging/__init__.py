"""Staging between the tasks: claims, bills, rejects and the write-back ledger (SQLAlchemy Core).

Works on PostgreSQL and SQLite. The package owns every query; the steps speak to one scheme's
staging through ``SchemeStaging(engine, scheme_id)``:

- ``tables``: the schema (table and column names are the stored contract);
- ``engine``: engines (SQLite WAL, ``BEGIN IMMEDIATE``), schema creation and upgrade;
- ``states``: the stored states as ``StrEnum`` (bill, comment, DingTalk status, Kingdee document status);
- ``records``: typed rows in and out (frozen dataclasses; money as ``Decimal``, cents in the tables);
- ``repository``: ``SchemeStaging``, one intention-named method per thing a step needs;
- ``schedule``: ``ReadSchedule``, a scheme's listing watermark and when each unfinished claim is read next;
- ``calls``: ``CallLedger``, every DingTalk call per run, step, API and month, and the month's budget events.
"""

from dingtalk_kingdee.staging.calls import CallEvent, CallLedger, month_of
from dingtalk_kingdee.staging.engine import connect, create_engine, ensure_schema, get_engine
from dingtalk_kingdee.staging.records import (
    AlertRecord,
    BillInDoubt,
    BillRecord,
    ClaimedBill,
    ClaimToTransform,
    CommentToPost,
    LoadedBill,
    ProblemBill,
    Pruned,
    RejectedClaim,
    RejectRecord,
    RowRecord,
    SavedTransform,
    StagedBill,
    Summary,
)
from dingtalk_kingdee.staging.repository import SchemeStaging, chunked
from dingtalk_kingdee.staging.schedule import DueRead, ReadSchedule, Watermark
from dingtalk_kingdee.staging.states import (
    FINAL_STATUSES,
    BillState,
    CommentState,
    DocumentStatus,
    InstanceResult,
    InstanceStatus,
)

__all__ = [
    "FINAL_STATUSES",
    "AlertRecord",
    "BillInDoubt",
    "BillRecord",
    "BillState",
    "CallEvent",
    "CallLedger",
    "ClaimToTransform",
    "ClaimedBill",
    "CommentState",
    "CommentToPost",
    "DocumentStatus",
    "DueRead",
    "InstanceResult",
    "InstanceStatus",
    "LoadedBill",
    "ProblemBill",
    "Pruned",
    "ReadSchedule",
    "RejectRecord",
    "RejectedClaim",
    "RowRecord",
    "SavedTransform",
    "SchemeStaging",
    "StagedBill",
    "Summary",
    "Watermark",
    "chunked",
    "connect",
    "create_engine",
    "ensure_schema",
    "get_engine",
    "month_of",
]
