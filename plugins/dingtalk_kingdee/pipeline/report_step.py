"""report: the run summary, in the task log, in a file with every line, and as the task's (small) XCom
value; and the alert of what needs a person, once per claim and problem."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from dingtalk_kingdee.pipeline.call_budget import call_alert_message, call_line, call_summary
from dingtalk_kingdee.pipeline.problems import (
    Problem,
    alert_message,
    alert_records,
    answer_problems,
    bill_currency,
    claim_problems,
    ordered,
)
from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.settings import get_settings
from dingtalk_kingdee.staging import CommentState, SchemeStaging, Summary

log = logging.getLogger(__name__)

# A comment that got no answer, or whose write_back died while sending, may have been posted: said plainly.
_COMMENT_WORDS = {CommentState.UNKNOWN: "unknown, not resent", CommentState.SENDING: "being sent"}

# (title, markdown) → True when sent, False when alerts are off (no robot); raises when delivery fails.
AlertSender = Callable[[str, str], bool]


def report(scheme: Scheme, engine: Engine, run: Run, step_counts: dict | None = None, max_listed: int = 50,
           alert: AlertSender | None = None, report_dir: Path | None = None) -> dict:
    """The run summary: claims seen, approved, still running, bills and money per state, problems.

    Scoped to the run's claims: those named by ``instance_ids``, else those the run listed or whose
    bill it moved. Problems are listed actionable first (``reasons.is_actionable``: value-map gaps,
    Kingdee refusals, unknown outcomes), routine ones (not approved) last; the log shows
    ``max_listed`` of them and the file ``<report_dir>/<scheme>/<run>.txt`` (default under
    ``DK_VAR_DIR/reports``) all of them. With ``alert`` and not a dry run, the actionable problems not
    alerted before (or changed since) are sent through it and recorded in the alert ledger.
    Returns the summary as plain values (money as text) with the log lines as ``text``.
    """
    staged = SchemeStaging(engine, scheme.id)
    named = run.instance_ids is not None
    found = staged.summary(run_id=None if named else run.run_id, instance_ids=run.instance_ids)
    dry = " — DRY RUN, nothing written to Kingdee" if run.dry_run else ""
    head, body, problems = summary_lines(scheme, found, f"Run summary for scheme {scheme.id} ({run.run_id}){dry}",
                                         run.window_text(), step_counts)
    currency = bill_currency(scheme)
    path = _report_path(report_dir or get_settings().var_dir / "reports", scheme.id, run.run_id)
    calls = call_summary(engine, scheme, run)
    events = event_counter(run, (step_counts or {}).get("extract"))
    head = [*head, event_line(events), call_line(calls)]
    _write(path, [*head, *body])
    lines = [*head, *body[:max_listed]]
    if len(body) > max_listed:
        lines.append(f"    ... and {len(body) - max_listed} more: the full list is in {path}")
    if body:
        lines.append(f"  full list: {path} or, wherever the staging database is reachable, {_command(scheme, run)}")
    for line in lines:
        log.info(line)

    summary = found.to_dict()
    summary["scope"] = (f"claims named by the run: {len(run.instance_ids)}" if named
                        else "claims the run listed or whose bill it moved")
    summary["events"] = events
    summary["currency"] = currency
    summary["needs_a_person"] = _claims_per_code(problems)
    summary["rejected_claims"] = [
        {"instance_id": p.instance_id, "business_id": p.business_id, "reason_code": p.code, "reason": p.detail}
        for p in problems if p.kind == "rejected"][:max_listed]
    summary["problem_bills"] = summary["problem_bills"][:max_listed]
    summary["report_file"] = str(path)
    if step_counts:
        summary["steps"] = step_counts
    if alert is not None and not run.dry_run:
        summary.update(_alert(staged, scheme, run, problems, alert, str(path)))
    summary["dingtalk_calls"] = calls
    if not run.dry_run:
        summary["retention"] = _apply_retention(staged, get_settings().staging_retention_days)
    if alert is not None and calls["alert"]:  # the month's first budget or quota event, once
        try:
            alert(*call_alert_message(scheme.id, calls))
        except Exception as exc:  # an alert must not fail the report
            log.warning("the DingTalk call alert could not be sent: %s", exc)
    summary["text"] = "\n".join(lines)
    return summary


def summary_lines(scheme: Scheme, found: Summary, title: str, window: str | None = None,
                  step_counts: dict | None = None) -> tuple[list[str], list[str], list[Problem]]:
    """(head lines, one line per problem, the problems) of a staging summary, as the report and the
    ``dingtalk_kingdee.reports`` command print them."""
    problems = ordered([*claim_problems(scheme, found), *answer_problems(step_counts)])
    currency = bill_currency(scheme)
    needs = _claims_per_code(problems)
    lines = [title]
    if window:
        lines.append(f"  window: {window}")
    lines += [
        f"  claims seen: {found.claims_seen}  approved: {found.approved}  still running: {found.still_running}",
        f"  by status: {found.claims_by_status}",
        "  bills by state: " + (", ".join(
            f"{state} {n} ({found.money_by_state[state]:,} {currency})".replace(" )", ")")
            for state, n in sorted(found.bills_by_state.items())) or "none"),
        f"  rejected by reason: {found.rejected_by_reason}",
        "  needs a person: " + (", ".join(f"{code} {n}" for code, n in needs.items()) or "nothing"),
    ]
    if found.comments_by_state:
        lines.append("  comments: " + ", ".join(
            f"{_COMMENT_WORDS.get(state, state)} {n}" for state, n in sorted(found.comments_by_state.items())))
    if step_counts:
        lines.append(f"  steps: {step_counts}")
    return lines, [f"    {p.line()}" for p in problems], problems


def event_counter(run: Run, extract_counts: dict | None = None) -> dict:
    """The run's trigger and, for an event-triggered run, the approval events it received and the
    distinct claims they named (``withdrawn``: named only by terminate/delete events, not read);
    ``caught_up``: claims of recent asset events no run took that the extract read (event or hourly run)."""
    caught_up = int((extract_counts or {}).get("caught_up") or 0)
    if not run.event_triggered:
        return {"trigger": run.trigger or "unknown", "received": 0, "claims": 0, "withdrawn": 0,
                "caught_up": caught_up}
    return {"trigger": run.trigger or "asset_triggered", "received": run.events,
            "claims": len(run.instance_ids or ()) + len(run.withdrawn_ids), "withdrawn": len(run.withdrawn_ids),
            "caught_up": caught_up}


def event_line(events: dict) -> str:
    caught_up = (f"; {events['caught_up']} claims caught up from asset events no run took"
                 if events.get("caught_up") else "")
    if not events["received"] and not events["claims"]:
        return f"  trigger: {events['trigger']}; events: none{caught_up}"
    return (f"  trigger: {events['trigger']}; events: {events['received']} received, {events['claims']} claims "
            f"named ({events['withdrawn']} withdrawn or deleted: not read){caught_up}")


def _command(scheme: Scheme, run: Run) -> str:
    """The one-line command that lists this run's problems again from staging."""
    scope = (" --instance-ids " + " ".join(run.instance_ids) if run.instance_ids is not None
             else f" --run '{run.run_id}'")
    return f"python -m dingtalk_kingdee.reports --scheme {scheme.id}{scope}"


def _apply_retention(staged: SchemeStaging, days: int) -> dict | None:
    """``DK_STAGING_RETENTION_DAYS``: prune what claims settled that long ago no longer need."""
    if days <= 0:
        return None
    cutoff = datetime.now(UTC) - timedelta(days=days)
    pruned = staged.prune_settled(cutoff)
    log.info("Retention (%d days): %d claims settled before %s pruned: %d detail rows deleted, %d raw answers "
             "dropped (bills and the write-back ledger kept)", days, pruned.claims, cutoff.date(), pruned.rows,
             pruned.payloads)
    return {"days": days, "claims": pruned.claims, "rows": pruned.rows, "payloads": pruned.payloads}


def _claims_per_code(problems: list[Problem]) -> dict[str, int]:
    """Claims per actionable code (a claim missing one employee in two maps counts once)."""
    return dict(Counter(code for _, code in dict.fromkeys((p.instance_id, p.code) for p in problems
                                                          if p.actionable)))


def _alert(staged: SchemeStaging, scheme: Scheme, run: Run, problems: list[Problem], send: AlertSender,
           full_list: str) -> dict:
    """Send what needs a person and was not alerted yet; the ledger records it only once it was sent."""
    candidates = alert_records(problems)
    due = staged.alerts_not_yet_sent(candidates)
    result: dict = {"alerted_claims": 0, "already_alerted": len(candidates) - len(due)}
    if not due:
        return result
    keys = {(d.instance_id, d.reason_code) for d in due}
    title, text = alert_message(scheme.id, run.run_id, [p for p in problems if (p.instance_id, p.code) in keys],
                                full_list)
    try:
        sent = send(title, text)
    except Exception as exc:  # an alert must not fail the report; the next run tries again
        log.warning("the alert could not be sent: %s", exc)
        return {**result, "alert_error": str(exc)}
    if sent:
        staged.record_alerts(due, run.run_id)
        result["alerted_claims"] = len({d.instance_id for d in due})
    return result


def _report_path(folder: Path, scheme_id: str, run_id: str) -> Path:
    return folder / scheme_id / (re.sub(r"[^A-Za-z0-9._-]", "_", run_id) + ".txt")


def _write(path: Path, lines: list[str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as exc:  # the report is in the log anyway
        log.warning("could not write the report file %s: %s", path, exc)
