"""Why a claim did not become a bill: one vocabulary for the transform, the scheme, staging and reports."""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """A reject's ``reason_code``, as stored in ``dk_rejects`` and shown in reports and alerts."""

    NO_ROWS = "no_rows"
    AMOUNT_MISSING = "amount_missing"
    AMOUNT_UNPARSEABLE = "amount_unparseable"
    AMOUNT_NOT_POSITIVE = "amount_not_positive"
    AMOUNT_TOO_LARGE = "amount_too_large"
    AMOUNT_PRECISION = "amount_precision"   # more decimals than Kingdee holds (cents); never rounded
    TOTAL_MISMATCH = "total_mismatch"
    UNMAPPED_EMPLOYEE = "unmapped_employee"
    UNMAPPED_DEPARTMENT = "unmapped_department"
    UNMAPPED_EXPENSE_ITEM = "unmapped_expense_item"
    UNMAPPED_VALUE = "unmapped_value"
    MISSING_FIELD = "missing_field"
    BAD_DATE = "bad_date"
    DUPLICATE_BUSINESS_ID = "duplicate_business_id"
    NOT_APPROVED = "not_approved"
    MALFORMED_PAYLOAD = "malformed_payload"
    STAGING_REFUSED = "staging_refused"   # the staging database refused this claim's outcome (the error is kept)
    UNKNOWN_STATUS = "unknown_status"   # a status DingTalk does not document, still so after several reads


# The reasons a value-map miss may carry: fixing the map (not the claim) cures them.
MAPPING_REASONS = frozenset({
    RejectReason.UNMAPPED_EMPLOYEE, RejectReason.UNMAPPED_DEPARTMENT, RejectReason.UNMAPPED_EXPENSE_ITEM,
    RejectReason.UNMAPPED_VALUE,
})


class BillProblem(StrEnum):
    """What can befall a bill after the transform, named like the reject reasons in reports and alerts."""

    KINGDEE_REFUSED = "kingdee_refused"   # Kingdee refused the model: the bill is ``failed``
    OUTCOME_UNKNOWN = "outcome_unknown"   # a save got no answer: the bill is ``unknown`` until looked up


class AnswerProblem(StrEnum):
    """A DingTalk answer staging cannot hold at all (so no reject can be stored for it): reported from
    extract's counts."""

    UNSTORABLE_INSTANCE_ID = "unstorable_instance_id"   # the instance id holds a NUL: never stored, never paid


class RunProblem(StrEnum):
    """What can stop a run (not one claim), named the same way."""

    TASK_FAILED = "task_failed"           # a task failed after its last retry


# Normal business, nothing to fix (the approver refused, the employee withdrew): counted in reports,
# listed last, never alerted.
ROUTINE_REASONS = frozenset({RejectReason.NOT_APPROVED})

# What needs a person to act: alerted (each claim once per code until it changes) and listed first.
# Other rejects (a bad amount, a duplicate) are reported, not alerted: the claim itself must change.
ACTIONABLE_REASONS = frozenset({
    *MAPPING_REASONS, BillProblem.KINGDEE_REFUSED, BillProblem.OUTCOME_UNKNOWN, RunProblem.TASK_FAILED,
    AnswerProblem.UNSTORABLE_INSTANCE_ID,
})


def is_actionable(code: str) -> bool:
    """Whether a reject reason or problem code needs a person (and is alerted)."""
    return code in ACTIONABLE_REASONS


def is_routine(code: str) -> bool:
    """Whether a reject reason is a normal business outcome (reported, never alerted, listed last)."""
    return code in ROUTINE_REASONS
