"""Settle bills whose fate in Kingdee is not known here, by looking them up by the scheme's match field."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.engine import Engine

from dingtalk_kingdee.pipeline.protocols import KingdeeClient
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import BillInDoubt, SchemeStaging, chunked
from dingtalk_kingdee.staging.states import AWAITING_ANSWER

log = logging.getLogger(__name__)

# A bill left in "sending" this long belongs to a load that died; younger ones may still be in flight.
SENDING_LEASE = timedelta(minutes=15)
# Match values per ExecuteBillQuery filter.
QUERY_CHUNK = 200


def reconcile(scheme: Scheme, kingdee: KingdeeClient, engine: Engine, run: Run,
              lease: timedelta = SENDING_LEASE) -> dict:
    """Settle bills whose outcome is unknown by asking Kingdee, before anything is sent again."""
    staged = SchemeStaging(engine, scheme.id)
    found, missing = settle(scheme, kingdee, staged, run.run_id, staged.bills_in_doubt(lease, run.instance_ids),
                            refuse_missing=False,
                            missing_error="not found in Kingdee after an unanswered save; will be sent again")
    return {"reconciled_found": found, "reconciled_missing": missing}


def settle(scheme: Scheme, kingdee: KingdeeClient, staged: SchemeStaging, run_id: str,
           doubtful: Sequence[BillInDoubt], refuse_missing: bool, missing_error: str) -> tuple[int, int]:
    """Look bills up in Kingdee by the match field: found → loaded; missing → pending (to be sent
    again) or, with ``refuse_missing``, failed. Returns (found, missing)."""
    found = missing = 0
    match_field = scheme.target.match_field
    fields = list(dict.fromkeys(["FID", "FBillNo", match_field, "FDOCUMENTSTATUS"]))
    for part in chunked(list(doubtful), QUERY_CHUNK):
        by_value = {bill.match_value: bill.instance_id for bill in part}
        rows = kingdee.bill_query(scheme.target.form_id, fields, {match_field: list(by_value)})
        seen: dict[str, dict] = {}
        for row in rows:
            seen.setdefault(str(row.get(match_field)), row)
        for value, instance_id in by_value.items():
            row = seen.get(value)
            if row is not None:
                staged.mark_loaded(instance_id, run_id, kingdee_id=text_or_none(row.get("FID")),
                                   bill_number=row.get("FBillNo"), doc_status=row.get("FDOCUMENTSTATUS"),
                                   from_states=AWAITING_ANSWER)
                found += 1
                log.info("reconcile: claim %s is in Kingdee as %s", instance_id, row.get("FBillNo"))
                continue
            if refuse_missing:
                staged.mark_refused(instance_id, run_id, missing_error, from_states=AWAITING_ANSWER)
            else:
                staged.return_to_pending([instance_id], run_id, missing_error, from_states=AWAITING_ANSWER)
            missing += 1
            log.info("reconcile: claim %s has no bill in Kingdee (%s=%s): %s", instance_id, match_field, value,
                     "failed" if refuse_missing else "pending")
    return found, missing


def text_or_none(value: object) -> str | None:
    return None if value is None else str(value)
