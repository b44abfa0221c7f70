"""Settle bills whose fate in Kingdee is not known here, by looking them up by the scheme's match field.

A lookup that finds a bill settles it at once. A lookup that misses proves absence only once the
bill's sending lease has run out (measured on the staging database's clock, so no worker's clock
matters): until then a save of it may still be committing, and the bill stays ``unknown``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.engine import Engine

from dingtalk_kingdee.errors import KingdeeAuthError, KingdeeError
from dingtalk_kingdee.pipeline.protocols import KingdeeClient
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.settings import get_settings
from dingtalk_kingdee.staging import BillInDoubt, SchemeStaging, chunked
from dingtalk_kingdee.staging.states import AWAITING_ANSWER

log = logging.getLogger(__name__)

# Match values per ExecuteBillQuery filter.
QUERY_CHUNK = 200


def sending_lease() -> timedelta:
    """How long a sent bill may still commit (``DK_SENDING_LEASE_SECONDS``, default 15 minutes)."""
    return timedelta(seconds=get_settings().sending_lease_seconds)


# Kept for callers that name the default; the setting is read at each load.
SENDING_LEASE = timedelta(minutes=15)


def reconcile(scheme: Scheme, kingdee: KingdeeClient, engine: Engine, run: Run,
              lease: timedelta | None = None) -> dict:
    """Settle bills whose outcome is unknown by asking Kingdee, before anything is sent again."""
    staged = SchemeStaging(engine, scheme.id)
    doubtful = staged.bills_in_doubt(sending_lease() if lease is None else lease, run.instance_ids)
    found, missing, waiting = settle(scheme, kingdee, staged, run.run_id, doubtful, refuse_missing=False,
                                     missing_error="not found in Kingdee after its sending lease ran out; "
                                                   "will be sent again")
    return {"reconciled_found": found, "reconciled_missing": missing, "reconciled_waiting": waiting}


def settle(scheme: Scheme, kingdee: KingdeeClient, staged: SchemeStaging, run_id: str,
           doubtful: Sequence[BillInDoubt], refuse_missing: bool, missing_error: str) -> tuple[int, int, int]:
    """Look bills up in Kingdee by the match field: found → loaded; missing after the lease → pending
    (to be sent again) or, with ``refuse_missing``, failed; missing within it → left as it is.

    A lookup that fails for one bill's value (a value FilterString cannot hold, a query error) is
    retried bill by bill, so it leaves only that bill unsettled, named in the log and its
    ``last_error``. Returns (found, missing, waiting).
    """
    found = missing = waiting = 0
    for part in chunked(list(doubtful), QUERY_CHUNK):
        for bill, row in _look_up(scheme, kingdee, staged, part):
            if row is not None:
                staged.mark_loaded(bill.instance_id, run_id, kingdee_id=text_or_none(row.get("FID")),
                                   bill_number=row.get("FBillNo"), doc_status=row.get("FDOCUMENTSTATUS"),
                                   from_states=AWAITING_ANSWER)
                found += 1
                log.info("reconcile: claim %s is in Kingdee as %s", bill.instance_id, row.get("FBillNo"))
            elif not bill.lease_expired:
                waiting += 1
                log.info("reconcile: claim %s not in Kingdee yet, but a save of it may still be committing; "
                         "left unknown until its sending lease runs out", bill.instance_id)
            else:
                if refuse_missing:
                    staged.mark_refused(bill.instance_id, run_id, missing_error, from_states=AWAITING_ANSWER)
                else:
                    staged.return_to_pending([bill.instance_id], run_id, missing_error, from_states=AWAITING_ANSWER)
                missing += 1
                log.info("reconcile: claim %s has no bill in Kingdee (%s=%s): %s", bill.instance_id,
                         scheme.target.match_field, bill.match_value, "failed" if refuse_missing else "pending")
    return found, missing, waiting


def _look_up(scheme: Scheme, kingdee: KingdeeClient, staged: SchemeStaging,
             part: Sequence[BillInDoubt]) -> list[tuple[BillInDoubt, dict | None]]:
    """(bill, its Kingdee row or None) for the bills of ``part`` whose lookup worked."""
    match_field = scheme.target.match_field
    fields = list(dict.fromkeys(["FID", "FBillNo", match_field, "FDOCUMENTSTATUS"]))

    def query(bills: Sequence[BillInDoubt]) -> list[tuple[BillInDoubt, dict | None]]:
        rows = kingdee.bill_query(scheme.target.form_id, fields, {match_field: [b.match_value for b in bills]})
        seen: dict[str, dict] = {}
        for row in rows:
            seen.setdefault(str(row.get(match_field)), row)
        return [(bill, seen.get(bill.match_value)) for bill in bills]

    try:
        return query(part)
    except (KingdeeError, ValueError, TypeError) as exc:
        if not value_at_fault(exc):
            raise
        if len(part) == 1:
            bill = part[0]
            error = f"lookup by {match_field} failed for claim {bill.instance_id} (business_id " \
                    f"{bill.business_id!r}): {exc}"
            staged.record_bill_error(bill.instance_id, error)
            log.error("reconcile: %s; the other bills go on", error)
            return []
        log.warning("reconcile: a lookup of %d bills failed (%s); looking them up one by one", len(part), exc)
    return [found for bill in part for found in _look_up(scheme, kingdee, staged, [bill])]


# MsgCodes of a refusal no value can cause: session lost, no permission, network control, call limit,
# admin login forbidden.
_NOT_A_VALUE = frozenset({1, 2, 13, 14, 15})


def value_at_fault(exc: Exception) -> bool:
    """Could one bill's value have caused this failure (so that going bill by bill isolates it)? Not when
    Kingdee is unreachable (no MsgCode) or refuses the caller rather than the request."""
    if isinstance(exc, KingdeeAuthError):
        return False
    if isinstance(exc, KingdeeError):
        return exc.msg_code is not None and exc.msg_code not in _NOT_A_VALUE
    return True


def text_or_none(value: object) -> str | None:
    return None if value is None else str(value)
