"""Typed rows going into and coming out of staging: what the steps hand over and get back.

Amounts are ``Decimal`` here and integer cents in the tables (``dingtalk_kingdee.money``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal

from dingtalk_kingdee.staging.states import BillState, CommentState

# -- the transform's outcome, to be stored ---------------------------------------------------


@dataclass(frozen=True)
class BillRecord:
    """A claim's bill as the transform built it, to be stored as ``pending``."""

    instance_id: str
    business_id: str
    match_value: str  # the value of the scheme's match field that finds the bill again in Kingdee
    amount: Decimal
    payee: str | None
    model: dict


@dataclass(frozen=True)
class RejectRecord:
    """One reason a claim did not become a bill."""

    instance_id: str
    business_id: str | None
    field: str | None
    reason_code: str
    reason: str


@dataclass(frozen=True)
class RowRecord:
    """One flattened detail-table row (any depth) of a claim."""

    instance_id: str
    table_path: str
    row_key: str
    parent_row_key: str | None
    row_index: int
    cells: dict


@dataclass(frozen=True)
class SavedTransform:
    """How one chunk's outcome landed: bills stored, claims rejected, claims kept as already sent."""

    bills: int
    rejects: int
    kept_sent: int


@dataclass(frozen=True)
class Pruned:
    """What retention removed: claims touched, detail-table rows deleted, raw answers dropped."""

    claims: int
    rows: int
    payloads: int


# -- what the steps read back ----------------------------------------------------------------


@dataclass(frozen=True)
class ClaimToTransform:
    """A final claim whose latest answer (``payload``, version ``version``) is not transformed yet."""

    instance_id: str
    payload: dict
    version: int


@dataclass(frozen=True)
class ClaimedBill:
    """A bill this load moved to ``sending``: its model is to go to Kingdee now."""

    instance_id: str
    business_id: str
    match_value: str
    amount: Decimal
    model: dict


@dataclass(frozen=True)
class BillInDoubt:
    """A bill whose fate in Kingdee is not known here: looked up by its match value."""

    instance_id: str
    match_value: str
    # Sent longer ago than the sending lease (database clock): if Kingdee does not hold it now, it never
    # will, so it may be sent again. Within the lease a save may still be committing.
    lease_expired: bool = True
    business_id: str = ""


@dataclass(frozen=True)
class LoadedBill:
    """A bill in Kingdee whose document status may still have to be advanced."""

    instance_id: str
    bill_number: str | None
    doc_status: str | None  # Kingdee's FDOCUMENTSTATUS (see states.DocumentStatus), as last seen


@dataclass(frozen=True)
class CommentToPost:
    """A ledger line whose comment ("paid as bill ...") is still to be posted on the claim."""

    instance_id: str
    business_id: str
    bill_number: str | None
    payee: str | None
    amount: Decimal
    originator_userid: str  # who started the claim: the scheme may comment in their name


@dataclass(frozen=True)
class StagedBill:
    """A bill as staging holds it (the dry run's count, inspection, tests)."""

    instance_id: str
    business_id: str
    match_value: str
    amount: Decimal
    payee: str | None
    model: dict
    state: BillState
    attempts: int
    kingdee_id: str | None
    bill_number: str | None
    doc_status: str | None  # Kingdee's FDOCUMENTSTATUS (see states.DocumentStatus), as last seen
    last_error: str | None
    sent_at: datetime | None
    loaded_at: datetime | None
    last_run: str | None


# -- the run's report ------------------------------------------------------------------------


@dataclass(frozen=True)
class RejectedClaim:
    instance_id: str
    business_id: str | None
    reason_code: str
    reason: str
    field: str | None = None  # the target field the reason is about (a value map's field, say)


@dataclass(frozen=True)
class ProblemBill:
    """A bill that needs a person: Kingdee refused it (``failed``) or its save got no answer (``unknown``)."""

    instance_id: str
    business_id: str
    state: BillState
    amount: Decimal
    last_error: str | None


@dataclass(frozen=True)
class AlertRecord:
    """A claim's problem as an alert told it: once per (claim, code) until ``fingerprint`` changes."""

    instance_id: str
    reason_code: str
    fingerprint: str


@dataclass(frozen=True)
class Summary:
    """Where a scheme's claims stand (all of them, or those one run listed)."""

    claims_seen: int
    claims_by_status: dict[str, int]  # "COMPLETED/agree": n
    approved: int
    still_running: int
    bills_by_state: dict[BillState, int]
    money_by_state: dict[BillState, Decimal]
    rejected_by_reason: dict[str, int]
    comments_by_state: dict[CommentState, int]
    rejected_claims: list[RejectedClaim] = field(default_factory=list)
    problem_bills: list[ProblemBill] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON-able values (money as text, never a float) for XCom and the report."""
        return {
            "claims_seen": self.claims_seen,
            "claims_by_status": dict(self.claims_by_status),
            "approved": self.approved,
            "still_running": self.still_running,
            "bills_by_state": {str(s): n for s, n in self.bills_by_state.items()},
            "money_by_state": {str(s): str(m) for s, m in self.money_by_state.items()},
            "rejected_by_reason": dict(self.rejected_by_reason),
            "comments_by_state": {str(s): n for s, n in self.comments_by_state.items()},
            "rejected_claims": [asdict(r) for r in self.rejected_claims],
            "problem_bills": [{**asdict(b), "state": str(b.state), "amount": str(b.amount)}
                              for b in self.problem_bills],
        }
