"""Submit and audit loaded bills as the scheme asks, when BatchSave did not do it already.

One bill's bad value (a bill number FilterString cannot hold, a number Kingdee refuses) never stops
the others: a call that fails for a chunk is repeated bill by bill, and the bill at fault is named in
the log and in its ``last_error``, every run, until it is fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy.engine import Engine

from dingtalk_kingdee.errors import KingdeeError
from dingtalk_kingdee.pipeline.protocols import KingdeeClient
from dingtalk_kingdee.pipeline.settle import value_at_fault
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import DocumentStatus, SchemeStaging, chunked
from dingtalk_kingdee.staging.states import SUBMITTABLE

log = logging.getLogger(__name__)

# Bill numbers per ExecuteBillQuery / Submit / Audit call.
NUMBERS_CHUNK = 200


def advance_documents(scheme: Scheme, kingdee: KingdeeClient, engine: Engine) -> dict:
    """Submit and audit loaded bills as the scheme asks; reads the current status first (re-runnable)."""
    target = scheme.target
    staged = SchemeStaging(engine, scheme.id)
    wanted = DocumentStatus.AUDITED if target.audit else DocumentStatus.SUBMITTED
    counts = {"submitted": 0, "audited": 0, "document_errors": 0}
    for part in chunked(staged.loaded_bills_behind(wanted), NUMBERS_CHUNK):
        numbers = {bill.bill_number: bill.instance_id for bill in part if bill.bill_number}
        per_bill = _PerBill(staged, numbers, counts)
        rows = per_bill.call("status lookup", list(numbers), lambda chunk: kingdee.bill_query(
            target.form_id, ["FBillNo", "FDOCUMENTSTATUS"], {"FBillNo": chunk}))
        # Kingdee may spell a number in another case than staging (its comparison ignores case).
        by_key = {_key(n): n for n in numbers}
        status: dict[str, str] = {by_key[_key(row["FBillNo"])]: row["FDOCUMENTSTATUS"]
                                  for row in rows if _key(row["FBillNo"]) in by_key}
        to_submit = [n for n in numbers if status.get(n) in SUBMITTABLE]
        if to_submit and target.submit:
            done = per_bill.call("submit", to_submit, lambda chunk: kingdee.submit(target.form_id, chunk).numbers_ok)
            ok = _among(to_submit, done)
            status.update(dict.fromkeys(ok, DocumentStatus.SUBMITTED))
            counts["submitted"] += len(ok)
        to_audit = [n for n in numbers if status.get(n) == DocumentStatus.SUBMITTED]
        if to_audit and target.audit:
            done = per_bill.call("audit", to_audit, lambda chunk: kingdee.audit(target.form_id, chunk).numbers_ok)
            ok = _among(to_audit, done)
            status.update(dict.fromkeys(ok, DocumentStatus.AUDITED))
            counts["audited"] += len(ok)
        by_status: dict[str, list[str]] = {}
        for number, instance_id in numbers.items():
            if status.get(number):
                by_status.setdefault(status[number], []).append(instance_id)
        for doc_status, instance_ids in by_status.items():
            staged.record_doc_status(instance_ids, doc_status)
    return counts


class _PerBill:
    """Runs a call on a chunk of bill numbers; when it fails, again number by number, so that only the
    bills at fault are left behind (named in the log and in their ``last_error``)."""

    def __init__(self, staged: SchemeStaging, numbers: dict[str, str], counts: dict) -> None:
        self.staged = staged
        self.numbers = numbers
        self.counts = counts

    def call(self, what: str, chunk: Sequence[str], do: Callable[[list[str]], Sequence]) -> list:
        try:
            return list(do(list(chunk)))
        except (KingdeeError, ValueError, TypeError) as exc:
            if not value_at_fault(exc):
                raise
            if len(chunk) > 1:
                log.warning("documents: %s of %d bills failed (%s); going bill by bill", what, len(chunk), exc)
                return [item for number in chunk for item in self.call(what, [number], do)]
            instance_id = self.numbers[chunk[0]]
            error = f"{what} of bill {chunk[0]!r} (claim {instance_id}) failed: {exc}"
            self.staged.record_bill_error(instance_id, error)
            self.counts["document_errors"] += 1
            log.error("documents: %s; the other bills go on", error)
            return []


def _key(number: object) -> str:
    return str(number).rstrip(" ").lower()


def _among(numbers: Sequence[str], done: Sequence[str]) -> list[str]:
    """Those of ``numbers`` Kingdee reported done (in whatever case it spells them)."""
    keys = {_key(n) for n in done}
    return [n for n in numbers if _key(n) in keys]
