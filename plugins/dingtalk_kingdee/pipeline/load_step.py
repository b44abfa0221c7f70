"""load: send pending bills to Kingdee through BatchSave, exactly once.

Before anything is sent, bills whose earlier answer was lost are settled by query (``settle``). Each
batch is marked ``sending`` (committed) before its call; its outcome is recorded per model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.engine import Engine

from dingtalk_kingdee.errors import KingdeeAuthError, KingdeeError, KingdeeOutcomeUnknown
from dingtalk_kingdee.money import from_cents
from dingtalk_kingdee.pipeline.documents import advance_documents
from dingtalk_kingdee.pipeline.protocols import KingdeeClient, ModelError
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.pipeline.settle import reconcile, settle, text_or_none
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import BillInDoubt, BillState, ClaimedBill, DocumentStatus, SchemeStaging

log = logging.getLogger(__name__)

# MsgCodes of a whole-call refusal that a model's content can cause (4 exception, 8 bad parameter,
# 9 field or value does not exist, 11 validation failed, 12 not allowed).
MODEL_ERROR_CODES = frozenset({4, 8, 9, 11, 12})


class LoadIncomplete(RuntimeError):
    """Some bills' outcome in Kingdee is unknown; a retry reconciles them before sending anything."""


def load(scheme: Scheme, kingdee: KingdeeClient, engine: Engine, run: Run) -> dict:
    """Send pending bills in batches through BatchSave, each marked ``sending`` before its call."""
    staged = SchemeStaging(engine, scheme.id)
    if run.dry_run:
        pending = staged.bills(BillState.PENDING, run.instance_ids).values()
        total = sum((b.amount for b in pending), from_cents(0))
        log.info("load (dry run): would send %d bills, %s in total; nothing sent", len(pending), total)
        return {"dry_run": True, "would_send": len(pending), "would_send_amount": str(total)}

    counts = reconcile(scheme, kingdee, engine, run)
    counts.update(sent=0, loaded=0, failed=0, unknown=0)
    sender = _Sender(scheme, kingdee, staged, run.run_id, counts)
    # Bills of a batch Kingdee refused as a whole go again one by one, to find the model at fault.
    one_by_one: list[str] = []
    while True:
        if one_by_one:
            claimed = staged.claim_for_sending(1, instance_ids=[one_by_one.pop(0)])
            if not claimed:
                continue
        else:
            claimed = staged.claim_for_sending(scheme.target.batch_size, instance_ids=run.instance_ids)
            if not claimed:
                break
        if not sender.send(claimed, one_by_one):
            break
        log.info("load: %d sent, %d loaded, %d refused so far", counts["sent"], counts["loaded"], counts["failed"])

    target = scheme.target
    if not target.auto_submit_and_audit and (target.submit or target.audit):
        counts.update(advance_documents(scheme, kingdee, engine))
    if counts["unknown"]:
        raise LoadIncomplete(
            f"{counts['unknown']} bills were sent without an answer; the next attempt reconciles them with "
            f"ExecuteBillQuery on {target.match_field} before sending anything"
        )
    return counts


class _Sender:
    """Sends one claimed batch and records every model's outcome in staging and in ``counts``."""

    def __init__(self, scheme: Scheme, kingdee: KingdeeClient, staged: SchemeStaging, run_id: str,
                 counts: dict) -> None:
        self.scheme = scheme
        self.kingdee = kingdee
        self.staged = staged
        self.run_id = run_id
        self.counts = counts

    def send(self, claimed: Sequence[ClaimedBill], one_by_one: list[str]) -> bool:
        """BatchSave ``claimed``; False when the load must stop (no answer: reconcile first)."""
        target = self.scheme.target
        ids = [c.instance_id for c in claimed]
        self.counts["sent"] += len(claimed)
        try:
            outcomes = self.kingdee.batch_save(target.form_id, [c.model for c in claimed],
                                               self.scheme.batch_save_options())
        except KingdeeOutcomeUnknown as exc:
            self.staged.mark_unknown(ids, self.run_id, str(exc))
            self.counts["unknown"] += len(claimed)
            log.error("load: no answer for a batch of %d bills (%s); they will be reconciled before any resend",
                      len(claimed), exc)
            return False
        except KingdeeError as exc:
            if exc.msg_code not in MODEL_ERROR_CODES or isinstance(exc, KingdeeAuthError):
                # Refused for a reason no model can cure (session, permission, limits): try again later.
                self.staged.return_to_pending(ids, self.run_id, str(exc))
                raise
            if len(claimed) == 1:
                self._refused(claimed[0], str(exc))
                return True
            # A model of the batch is at fault, which one is not said. Whether any of the others were
            # kept is not documented either: settle them by query, then send the rest one by one.
            self.staged.mark_unknown(ids, self.run_id, str(exc))
            found, _ = settle(self.scheme, self.kingdee, self.staged, self.run_id,
                              [BillInDoubt(c.instance_id, c.match_value) for c in claimed],
                              refuse_missing=False, missing_error=str(exc))
            self.counts["loaded"] += found
            one_by_one.extend(ids)
            log.warning("load: Kingdee refused a batch of %d bills as a whole (%s); sending them one by one",
                        len(claimed), exc)
            return True
        duplicates: list[str] = []
        saved_status = DocumentStatus.AUDITED if target.auto_submit_and_audit else DocumentStatus.CREATED
        for claim, outcome in zip(claimed, outcomes, strict=True):
            if outcome.success:
                self.staged.mark_loaded(claim.instance_id, self.run_id, kingdee_id=text_or_none(outcome.kingdee_id),
                                        bill_number=outcome.number, doc_status=saved_status)
                self.counts["loaded"] += 1
            elif _is_duplicate_number(outcome.errors):
                # Most likely our own earlier save whose answer was lost: settle it by query, never resend.
                self.staged.mark_unknown([claim.instance_id], self.run_id,
                                         "; ".join(e.message for e in outcome.errors))
                duplicates.append(claim.instance_id)
            else:
                self._refused(claim, "; ".join(f"{e.field or '-'}: {e.message}" for e in outcome.errors) or "refused")
        if duplicates:
            # Found by the match field: our own earlier save. Not found: the number belongs to another
            # bill, and resending would only be refused again.
            found, clashing = settle(
                self.scheme, self.kingdee, self.staged, self.run_id,
                self.staged.bills_in_doubt(timedelta(0), duplicates), refuse_missing=True,
                missing_error=f"Kingdee already holds another bill with this FBillNo (none with this "
                              f"{target.match_field}): change the FBillNo mapping or the other bill, then replay",
            )
            self.counts["loaded"] += found
            self.counts["failed"] += clashing
        return True

    def _refused(self, claim: ClaimedBill, reason: str) -> None:
        """Kingdee refused this bill's model: kept as failed with the reason until a fix and a replay."""
        self.staged.mark_refused(claim.instance_id, self.run_id, reason)
        self.counts["failed"] += 1
        log.warning("load: Kingdee refused the bill of claim %s (business_id %s): %s",
                    claim.instance_id, claim.business_id, reason)


def _is_duplicate_number(errors: Sequence[ModelError]) -> bool:
    return any((e.field or "").lower() == "fbillno" and ("唯一" in e.message or "unique" in e.message.lower())
               for e in errors)
