"""Submit and audit loaded bills as the scheme asks, when BatchSave did not do it already."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from dingtalk_kingdee.pipeline.protocols import KingdeeClient
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import DocumentStatus, SchemeStaging, chunked
from dingtalk_kingdee.staging.states import SUBMITTABLE

# Bill numbers per ExecuteBillQuery / Submit / Audit call.
NUMBERS_CHUNK = 200


def advance_documents(scheme: Scheme, kingdee: KingdeeClient, engine: Engine) -> dict:
    """Submit and audit loaded bills as the scheme asks; reads the current status first (re-runnable)."""
    target = scheme.target
    staged = SchemeStaging(engine, scheme.id)
    wanted = DocumentStatus.AUDITED if target.audit else DocumentStatus.SUBMITTED
    counts = {"submitted": 0, "audited": 0}
    for part in chunked(staged.loaded_bills_behind(wanted), NUMBERS_CHUNK):
        numbers = {bill.bill_number: bill.instance_id for bill in part if bill.bill_number}
        rows = kingdee.bill_query(target.form_id, ["FBillNo", "FDOCUMENTSTATUS"], {"FBillNo": list(numbers)})
        status: dict[str, str] = {r["FBillNo"]: r["FDOCUMENTSTATUS"] for r in rows}
        to_submit = [n for n in numbers if status.get(n) in SUBMITTABLE]
        if to_submit and target.submit:
            result = kingdee.submit(target.form_id, to_submit)
            status.update(dict.fromkeys(result.numbers_ok, DocumentStatus.SUBMITTED))
            counts["submitted"] += len(result.numbers_ok)
        to_audit = [n for n in numbers if status.get(n) == DocumentStatus.SUBMITTED]
        if to_audit and target.audit:
            result = kingdee.audit(target.form_id, to_audit)
            status.update(dict.fromkeys(result.numbers_ok, DocumentStatus.AUDITED))
            counts["audited"] += len(result.numbers_ok)
        by_status: dict[str, list[str]] = {}
        for number, instance_id in numbers.items():
            if status.get(number):
                by_status.setdefault(status[number], []).append(instance_id)
        for doc_status, instance_ids in by_status.items():
            staged.record_doc_status(instance_ids, doc_status)
    return counts
