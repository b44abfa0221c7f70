"""load: send pending bills to Kingdee through BatchSave, exactly once.

Before anything is sent, bills whose earlier answer was lost are settled by query (``settle``). Each
batch is marked ``sending`` (committed) before its call; its outcome is recorded per model. Only an
error naming a model refuses it; any other answer leaves the model ``unknown``, looked up by the
scheme's match field, and sent again only once a lookup after its sending lease proves it absent.
Every model must carry its claim's match value in the match field, or that lookup could not work:
a model that does not is never sent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from dingtalk_kingdee.errors import KingdeeAuthError, KingdeeError, KingdeeOutcomeUnknown
from dingtalk_kingdee.money import from_cents
from dingtalk_kingdee.pipeline.documents import advance_documents
from dingtalk_kingdee.pipeline.protocols import KingdeeClient, ModelError
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.pipeline.settle import reconcile, sending_lease, settle, text_or_none
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
    counts.update(sent=0, loaded=0, failed=0, unknown=0, unanswered=0)
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

    sender.settle_answered()
    target = scheme.target
    if not target.auto_submit_and_audit and (target.submit or target.audit):
        counts.update(advance_documents(scheme, kingdee, engine))
    if counts["unanswered"]:
        raise LoadIncomplete(
            f"{counts['unanswered']} bills were sent without a usable answer; they are looked up with "
            f"ExecuteBillQuery on {target.match_field} before anything is sent again, and sent again only "
            "when not found after their sending lease"
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
        self.answered_unknown: list[str] = []

    def send(self, claimed: Sequence[ClaimedBill], one_by_one: list[str]) -> bool:
        """BatchSave ``claimed``; False when the load must stop (no answer: reconcile first)."""
        target = self.scheme.target
        claimed = self._carrying_match_value(claimed)
        if not claimed:
            return True
        ids = [c.instance_id for c in claimed]
        self.counts["sent"] += len(claimed)
        try:
            outcomes = self.kingdee.batch_save(target.form_id, [c.model for c in claimed],
                                               self.scheme.batch_save_options())
        except KingdeeOutcomeUnknown as exc:
            self._unknown(ids, str(exc), answered=False)
            log.error("load: no usable answer for a batch of %d bills (%s); they will be looked up before any "
                      "resend", len(claimed), exc)
            return False
        except KingdeeError as exc:
            if exc.msg_code not in MODEL_ERROR_CODES or isinstance(exc, KingdeeAuthError):
                # Refused for a reason no model can cure (session, permission, limits). It names no
                # model, so the bills are looked up like any unanswered ones before a resend.
                self._unknown(ids, str(exc), answered=False)
                raise
            if len(claimed) == 1:
                self._refused(claimed[0], str(exc))
                return True
            # A model of the batch is at fault, which one is not said. Whether any of the others were
            # kept is not documented either. The answer came, so the call is over and a lookup now is
            # conclusive: found → loaded, the rest go again one by one to find the model at fault.
            self.staged.mark_unknown(ids, self.run_id, str(exc))
            found, _, _ = settle(self.scheme, self.kingdee, self.staged, self.run_id,
                                 [BillInDoubt(c.instance_id, c.match_value, True, c.business_id) for c in claimed],
                                 refuse_missing=False, missing_error=str(exc))
            self.counts["loaded"] += found
            one_by_one.extend(ids)
            log.warning("load: Kingdee refused a batch of %d bills as a whole (%s); sending them one by one",
                        len(claimed), exc)
            return True
        duplicates: list[BillInDoubt] = []
        saved_status = DocumentStatus.AUDITED if target.auto_submit_and_audit else DocumentStatus.CREATED
        for claim, outcome in zip(claimed, outcomes, strict=True):
            if outcome.success:
                self.staged.mark_loaded(claim.instance_id, self.run_id, kingdee_id=text_or_none(outcome.kingdee_id),
                                        bill_number=outcome.number, doc_status=saved_status)
                self.counts["loaded"] += 1
            elif getattr(outcome, "unknown", False):
                self._unknown([claim.instance_id], "; ".join(e.message for e in outcome.errors), answered=True)
            elif _is_duplicate_number(outcome.errors):
                # Most likely our own earlier save whose answer was lost: settle it by query, never resend.
                self.staged.mark_unknown([claim.instance_id], self.run_id,
                                         "; ".join(e.message for e in outcome.errors))
                duplicates.append(BillInDoubt(claim.instance_id, claim.match_value, True, claim.business_id))
            else:
                self._refused(claim, "; ".join(f"{e.field or '-'}: {e.message}" for e in outcome.errors) or "refused")
        if duplicates:
            # Found by the match field: our own earlier save. Not found: the number belongs to another
            # bill, and resending would only be refused again.
            found, clashing, _ = settle(
                self.scheme, self.kingdee, self.staged, self.run_id, duplicates, refuse_missing=True,
                missing_error=f"Kingdee already holds another bill with this FBillNo (none with this "
                              f"{target.match_field}): change the FBillNo mapping or the other bill, then replay",
            )
            self.counts["loaded"] += found
            self.counts["failed"] += clashing
        return True

    def _carrying_match_value(self, claimed: Sequence[ClaimedBill]) -> list[ClaimedBill]:
        """The claimed bills whose model carries their match value in the match field; the others are
        refused here, never sent: without it a lost answer could not be settled by lookup."""
        field = self.scheme.target.match_field
        carrying = []
        for claim in claimed:
            sent = next((v for k, v in claim.model.items() if k.lower() == field.lower()), None)
            if sent is not None and str(sent) == claim.match_value:
                carrying.append(claim)
                continue
            self._refused(claim, f"claim {claim.instance_id} (business_id {claim.business_id!r}): the model "
                                 f"carries {field}={sent!r}, not the claim's identity "
                                 f"{claim.match_value!r}: the scheme must map {field} from the business_id, "
                                 "or a lost answer could not be settled by lookup; not sent")
        return carrying

    def _unknown(self, ids: Sequence[str], error: str, answered: bool) -> None:
        """No answer settles these bills: unknown, looked up before any resend."""
        self.staged.mark_unknown(ids, self.run_id, error)
        self.counts["unknown"] += len(ids)
        if answered:
            self.answered_unknown.extend(ids)
        else:
            self.counts["unanswered"] += len(ids)

    def settle_answered(self) -> None:
        """Look up the bills an answer left unknown: that call is over, so one found is loaded now; one not
        found stays unknown until its lease runs out (the answer may still have been wrong about it)."""
        if not self.answered_unknown:
            return
        doubtful = self.staged.bills_in_doubt(sending_lease(), self.answered_unknown)
        found, _, _ = settle(self.scheme, self.kingdee, self.staged, self.run_id,
                                   [BillInDoubt(b.instance_id, b.match_value, False, b.business_id)
                                    for b in doubtful], refuse_missing=False, missing_error="")
        self.counts["loaded"] += found
        self.counts["unknown"] -= found
        self.answered_unknown.clear()

    def _refused(self, claim: ClaimedBill, reason: str) -> None:
        """Kingdee refused this bill's model: kept as failed with the reason until a fix and a replay."""
        self.staged.mark_refused(claim.instance_id, self.run_id, reason)
        self.counts["failed"] += 1
        log.warning("load: Kingdee refused the bill of claim %s (business_id %s): %s",
                    claim.instance_id, claim.business_id, reason)


def _is_duplicate_number(errors: Sequence[ModelError]) -> bool:
    return any((e.field or "").lower() == "fbillno" and ("唯一" in e.message or "unique" in e.message.lower())
               for e in errors)
