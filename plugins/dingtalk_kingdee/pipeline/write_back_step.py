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

from dingtalk_kingdee.errors import DingTalkError, DingTalkUnavailable
from dingtalk_kingdee.pipeline.protocols import DingTalkClient
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.pipeline.settle import sending_lease
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import CommentToPost, SchemeStaging

log = logging.getLogger(__name__)

# Concurrent like the detail fetch: the hook's shared limiter keeps the calls within the app's QPS.
COMMENT_WORKERS = 8


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
    entries = staged.claim_comments(instance_ids=run.instance_ids)

    def comment(entry: CommentToPost) -> bool:
        text = scheme.write_back.render_comment(bill_number=entry.bill_number, business_id=entry.business_id,
                                                amount=entry.amount, payee=entry.payee or "")
        user_id = scheme.write_back.comment_user_for(entry.originator_userid)
        try:
            dingtalk.add_comment(entry.instance_id, user_id, text)
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
        for done, sent in enumerate(pool.map(comment, entries), start=1):
            counts["comments_sent" if sent else "comments_failed"] += 1
            if done % 200 == 0:
                log.info("write_back: %d/%d comments", done, len(entries))
    log.info("write_back: %d ledger lines added, %d comments sent, %d failed", added, counts["comments_sent"],
             counts["comments_failed"])
    return counts
