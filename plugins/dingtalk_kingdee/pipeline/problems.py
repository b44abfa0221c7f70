"""What in a run's claims went wrong, in the order a person should read it, and the fix for each.

Pure: it reads a staging ``Summary`` and the scheme. The report lists every problem (actionable
first, routine last); the alert tells only the actionable ones (``reasons.is_actionable``), once
per claim and code until what it says changes (the fingerprint).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dingtalk_kingdee.reasons import AnswerProblem, BillProblem, is_actionable, is_routine
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import AlertRecord, BillState, Summary

# Kingdee's preset currency numbers (BD_Currency) and their ISO codes.
KINGDEE_CURRENCIES = {"PRE001": "CNY", "PRE002": "HKD", "PRE003": "EUR", "PRE004": "JPY", "PRE005": "TWD",
                      "PRE006": "GBP", "PRE007": "USD"}
_BILL_PROBLEMS = {BillState.FAILED: BillProblem.KINGDEE_REFUSED, BillState.UNKNOWN: BillProblem.OUTCOME_UNKNOWN}
# How the transform words a value-map miss: `... "<key>" is not in value map <name> (<file>); add it there`.
_MAP_MISS = re.compile(r'"(?P<key>.*)" is not in value map (?P<map>\S+)', re.S)
# How ``transform.limits.shorten`` ends a value it cut.
SHORTENED = "…"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one claim: a reject reason or a bill problem, its detail and its fix."""

    instance_id: str
    business_id: str
    code: str
    detail: str            # the reject reason, or Kingdee's message for a refused bill
    fix: str | None = None

    @property
    def actionable(self) -> bool:
        return is_actionable(self.code)

    @property
    def kind(self) -> str:
        """``rejected`` (no bill) or ``bill`` (a bill Kingdee refused or did not answer for)."""
        if self.code in set(AnswerProblem):
            return "unstored"
        return "bill" if self.code in set(BillProblem) else "rejected"

    def line(self) -> str:
        text = f"{self.kind} {self.business_id or self.instance_id}: [{self.code}] {self.detail}"
        return f"{text} — fix: {self.fix}" if self.fix else text


def bill_currency(scheme: Scheme) -> str:
    """The bills' currency as a person reads it (``CNY``), from the scheme's constant FCURRENCYID."""
    spec = scheme.mapping.header.get("FCURRENCYID")
    number = str(spec.const) if spec is not None and spec.const is not None else ""
    return KINGDEE_CURRENCIES.get(number, number)


def value_map_fix(scheme: Scheme, reason: str) -> str | None:
    """For a value-map miss: which file (or inline map) takes which key."""
    found = _MAP_MISS.search(reason)
    if not found:
        return None
    key, name = found["key"], found["map"]
    spec = scheme.value_maps.get(name)
    folder = Path(scheme.path).parent if scheme.path else Path(".")
    if key.endswith(SHORTENED):  # the reason quotes a long value cut short: the line needs all of it
        line = "a line for the whole value quoted (shortened) in the reason"
    else:
        line = f"the line `{_csv_field(key)},<value>`" if spec is not None and spec.file else f"`{key}: <value>`"
    if spec is not None and spec.file:
        return f"add {line} to {folder / scheme.id / spec.file}; the next run retries"
    where = Path(scheme.path).name if scheme.path else f"{scheme.id}.yaml"
    return f"add {line} under value_maps.{name}.values in {where}; the next run retries"


def _csv_field(key: str) -> str:
    """A key as one CSV field: quoted when it holds a comma, a quote or a line break."""
    return '"' + key.replace('"', '""') + '"' if any(c in key for c in ',"\r\n') else key


def claim_problems(scheme: Scheme, found: Summary) -> list[Problem]:
    """Every reject and problem bill of the summary: actionable first, routine (not approved) last."""
    problems = [
        Problem(r.instance_id, r.business_id or "", r.reason_code, r.reason,
                value_map_fix(scheme, r.reason) if is_actionable(r.reason_code) else None)
        for r in found.rejected_claims
    ]
    for b in found.problem_bills:
        code = _BILL_PROBLEMS[b.state]
        if code == BillProblem.KINGDEE_REFUSED:
            detail = f"Kingdee refused the bill: {b.last_error or '(no message)'}"
            fix = "correct what Kingdee names, then trigger a run with replay_rejected"
        else:
            detail = f"sent without an answer ({b.last_error or 'no message'})"
            fix = (f"none usually: the next load looks it up in Kingdee by {scheme.target.match_field}; "
                   "if it stays unknown, check Kingdee")
        problems.append(Problem(b.instance_id, b.business_id, code, detail, fix))
    return ordered(problems)


def answer_problems(step_counts: dict | None) -> list[Problem]:
    """The answers extract could not store (``unstorable``: an instance id holding a NUL), from the
    run's step counts: staging has no row for them, so only the run that read them can report them."""
    extract = (step_counts or {}).get("extract") or {}
    return [Problem(instance_id, "", AnswerProblem.UNSTORABLE_INSTANCE_ID,
                    "DingTalk answered an instance id holding a NUL character (shown escaped): staging cannot "
                    "store the claim, so it is not paid",
                    "find the claim in DingTalk (the extract log names its business id) and pay it by hand; "
                    "ask DingTalk why its id holds a NUL")
            for instance_id in extract.get("unstorable") or ()]


def ordered(problems: Sequence[Problem]) -> list[Problem]:
    """Actionable first, routine (not approved) last."""
    return sorted(problems, key=lambda p: (not p.actionable, is_routine(p.code), p.code, p.business_id,
                                           p.instance_id))


def alert_records(problems: Sequence[Problem]) -> list[AlertRecord]:
    """One ledger record per claim and actionable code; the fingerprint digests what is said about it."""
    details: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in problems:
        if p.actionable:
            details[(p.instance_id, p.code)].append(p.detail)
    return [AlertRecord(instance_id, code, hashlib.sha256("\n".join(sorted(texts)).encode()).hexdigest())
            for (instance_id, code), texts in details.items()]


def alert_message(scheme_id: str, run_id: str, problems: Sequence[Problem], full_list: str,
                  max_lines: int = 20) -> tuple[str, str]:
    """(title, markdown): the exact number of claims that need a person, grouped by code with each fix.

    A fix shared by many claims (one missing employee, many claims) is one line naming them; the body
    stops after ``max_lines`` lines with "and N more", never the title's count.
    """
    claims = {p.instance_id for p in problems}
    title = f"{scheme_id}: {len(claims)} 条报销需要处理"
    by_code: dict[str, list[Problem]] = defaultdict(list)
    for p in problems:
        by_code[p.code].append(p)
    entries: list[str] = []
    for code, items in by_code.items():
        entries.append(f"**{code}**: {len({p.instance_id for p in items})} claims")
        by_fix: dict[str, list[Problem]] = defaultdict(list)
        for p in items:
            if p.code in set(BillProblem) or p.fix is None:
                entries.append(f"- {p.business_id or p.instance_id}: {p.detail}"
                               + (f" — fix: {p.fix}" if p.fix and p.code != BillProblem.OUTCOME_UNKNOWN else ""))
            else:
                by_fix[p.fix].append(p)
        for fix, fixed in by_fix.items():
            names = ", ".join(sorted({p.business_id or p.instance_id for p in fixed}))
            entries.append(f"- {fix} (claims {names})")
    shown = entries[:max_lines]
    if len(entries) > max_lines:
        shown.append(f"- ... and {len(entries) - max_lines} more")
    lines = [f"### {title}", "", f"run `{run_id}`", "", *shown, "", f"Full list: {full_list}"]
    return title, "\n".join(lines)
