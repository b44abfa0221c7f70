"""Staging between the tasks: claims, bills, rejects and the write-back ledger (SQLAlchemy Core).

Works on PostgreSQL and SQLite. The package owns every query; the steps speak to one scheme's
staging through ``SchemeStaging(engine, scheme_id)``:

- ``tables``: the schema (table and column names are the stored contract);
- ``engine``: engines (SQLite WAL, ``BEGIN IMMEDIATE``), schema creation and upgrade;
- ``states``: the stored states as ``StrEnum`` (bill, comment, DingTalk status, Kingdee document status);
- ``records``: typed rows in and out (frozen dataclasses; money as ``Decimal``, cents in the tables);
- ``repository``: ``SchemeStaging``, one intention-named method per thing a step needs.
"""

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
    RejectedClaim,
    RejectRecord,
    RowRecord,
    SavedTransform,
    StagedBill,
    Summary,
)
from dingtalk_kingdee.staging.repository import SchemeStaging, chunked
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
    "ClaimToTransform",
    "ClaimedBill",
    "CommentState",
    "CommentToPost",
    "DocumentStatus",
    "InstanceResult",
    "InstanceStatus",
    "LoadedBill",
    "ProblemBill",
    "RejectRecord",
    "RejectedClaim",
    "RowRecord",
    "SavedTransform",
    "SchemeStaging",
    "StagedBill",
    "Summary",
    "chunked",
    "connect",
    "create_engine",
    "ensure_schema",
    "get_engine",
]
