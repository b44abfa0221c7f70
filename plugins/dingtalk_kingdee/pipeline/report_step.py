"""report: the run summary, in the task log and as the task's (small) XCom value."""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine

from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import SchemeStaging

log = logging.getLogger(__name__)


def report(scheme: Scheme, engine: Engine, run: Run, step_counts: dict | None = None,
           max_listed: int = 50) -> dict:
    """The run summary: claims seen, approved, loaded, rejected by reason, still running, money per state.

    Scoped to the claims this run listed, or to the claims it was named. Returns the summary as plain
    values (money as text), its rejected claims cut to ``max_listed``, and the log lines as ``text``.
    """
    found = SchemeStaging(engine, scheme.id).summary(run_id=None if run.instance_ids else run.run_id)
    summary = found.to_dict()
    if run.instance_ids:
        summary["scope"] = f"claims named by the run: {len(run.instance_ids)}"
    rejected = found.rejected_claims
    dry = " — DRY RUN, nothing written to Kingdee" if run.dry_run else ""
    lines = [
        f"Run summary for scheme {scheme.id} ({run.run_id}){dry}",
        f"  window: {run.window_text()}",
        f"  claims seen: {found.claims_seen}  approved: {found.approved}  still running: {found.still_running}",
        f"  by status: {found.claims_by_status}",
        "  bills by state: " + ", ".join(
            f"{state} {n} ({found.money_by_state[state]})" for state, n in sorted(found.bills_by_state.items())
        ),
        f"  rejected by reason: {found.rejected_by_reason}",
    ]
    for r in rejected[:max_listed]:
        lines.append(f"    rejected {r.business_id or r.instance_id}: [{r.reason_code}] {r.reason}")
    if len(rejected) > max_listed:
        lines.append(f"    ... and {len(rejected) - max_listed} more reject lines (table dk_rejects)")
    if step_counts:
        lines.append(f"  steps: {step_counts}")
    for line in lines:
        log.info(line)
    summary["rejected_claims"] = summary["rejected_claims"][:max_listed]
    summary["text"] = "\n".join(lines)
    return summary
