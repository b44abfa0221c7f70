"""write_back: record which claim became which bill, and tell DingTalk when the scheme asks for it.

A comment is posted at most once: each is claimed (``pending → sending``, one conditional UPDATE, so
of two overlapping write_backs only one wins it) before it is posted, then ends ``done``, ``failed``
(refused) or ``unknown`` (no answer). DingTalk has no way to look a comment up, so a comment left
``sending`` by a write_back that died is never posted again: after the sending lease it is ``unknown``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.engine import Engine

from dingtalk_kingdee.errors import DingTalkError, DingTalkQuotaExhausted, DingTalkUnavailable
from dingtalk_kingdee.pipeline.call_budget import CallBudget, StepCalls, note_quota_exhausted, quota_spent
from dingtalk_kingdee.pipeline.protocols import DingTalkClient
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.pipeline.settle import sending_lease
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import CommentToPost, SchemeStaging

log = logging.getLogger(__name__)

# Concurrent like the detail fetch: the hook's shared limiter keeps the calls within the app's QPS.
COMMENT_WORKERS = 8
# Comments claimed at a time: a write_back killed mid-way leaves at most these unknown (never resent).
CLAIM_CHUNK = 2 * COMMENT_WORKERS


def write_back(scheme: Scheme, dingtalk: DingTalkClient, engine: Engine, run: Run) -> dict:
    """Record which claim became which bill, and tell DingTalk when the scheme asks for it."""
    if run.dry_run:
        return {"dry_run": True}
    staged = SchemeStaging(engine, scheme.id)
    comments_on = scheme.write_back.comment
    added = staged.record_ledger(comments_on)
    counts = {"ledger_added": added, "comments_sent": 0, "comments_failed": 0}
    if not comments_on:
        return counts
    interrupted = staged.expire_comment_sends(sending_lease())
    if interrupted:
        counts["comments_interrupted"] = interrupted
        log.warning("write_back: %d comments were being sent by a write_back that did not finish; they may "
                    "have been posted, so they are not sent again (comment_state unknown)", interrupted)
    calls = StepCalls(engine, scheme, run, "write_back", dingtalk)
    try:
        counts.update(_comment(scheme, dingtalk, engine, run, staged))
    finally:
        counts["dingtalk_calls"] = calls.record()
    return counts


def _comment(scheme: Scheme, dingtalk: DingTalkClient, engine: Engine, run: Run, staged: SchemeStaging) -> dict:
    """Post the pending comments, one metered call each, within the month's DingTalk call budget; the
    others stay pending for a later run."""
    counts = {"comments_sent": 0, "comments_failed": 0, "comments_waiting": 0}
    if quota_spent(engine, run):
        log.warning("write_back: DingTalk's monthly call quota is exhausted (errcode 90020 this month, no "
                    "successful call since): comments wait")
        return {**counts, "quota_exhausted": True}
    allowed = CallBudget.of(engine, scheme, run).remaining()
    if allowed <= 0:
        log.warning("write_back: the month's DingTalk call budget is spent: comments wait")
        return counts
    quota: list[DingTalkQuotaExhausted] = []

    def comment(entry: CommentToPost) -> bool | None:
        text = scheme.write_back.render_comment(bill_number=entry.bill_number, business_id=entry.business_id,
                                                amount=entry.amount, payee=entry.payee or "")
        user_id = scheme.write_back.comment_user_for(entry.originator_userid)
        try:
            dingtalk.add_comment(entry.instance_id, user_id, text)
        except DingTalkQuotaExhausted as exc:
            # Not a refusal of this comment, and surely not posted: pending again, for a month with quota.
            quota.append(exc)
            staged.return_comment_to_pending(entry.instance_id, str(exc))
            return None
        except DingTalkError as exc:
            staged.mark_comment_refused(entry.instance_id, str(exc))
            log.warning("write_back: DingTalk refused the comment on claim %s: %s", entry.instance_id, exc)
            return False
        except DingTalkUnavailable as exc:
            # It may have been posted: not sent again.
            staged.mark_comment_unanswered(entry.instance_id, str(exc))
            log.warning("write_back: no answer to the comment on claim %s: %s", entry.instance_id, exc)
            return False
        staged.mark_comment_posted(entry.instance_id)
        return True

    with ThreadPoolExecutor(max_workers=COMMENT_WORKERS, thread_name_prefix="write_back") as pool:
        while allowed > 0 and not quota:
            entries = staged.claim_comments(limit=min(CLAIM_CHUNK, allowed), instance_ids=run.instance_ids)
            if not entries:
                break
            allowed -= len(entries)
            for sent in pool.map(comment, entries):
                key = "comments_waiting" if sent is None else "comments_sent" if sent else "comments_failed"
                counts[key] += 1
            done = counts["comments_sent"] + counts["comments_failed"]
            if done % 200 < CLAIM_CHUNK:
                log.info("write_back: %d comments so far", done)
    if quota:
        note_quota_exhausted(engine, scheme, run, quota[0])
        counts["quota_exhausted"] = True
        log.error("write_back: DingTalk's monthly call quota is exhausted (errcode 90020): %d comments wait",
                  counts["comments_waiting"])
    log.info("write_back: %d comments sent, %d failed, %d waiting", counts["comments_sent"],
             counts["comments_failed"], counts["comments_waiting"])
    return counts
