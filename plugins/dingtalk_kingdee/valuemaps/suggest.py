"""One suggestion run for a scheme: read both systems, match every value map that says what it pairs
(``value_maps.<name>.suggest``), write each map's proposal beside it, and with ``apply`` append the
unambiguous lines. What the CLI and the value-map DAG both call."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dingtalk_kingdee.pipeline.call_budget import call_line
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.valuemaps import matching, sources
from dingtalk_kingdee.valuemaps.model import MapKind, MapSuggestion, Row, Status
from dingtalk_kingdee.valuemaps.proposal import apply_proposal, proposal_path, write_proposal

_CONTACT_KINDS = {MapKind.EMPLOYEE_NUMBER, MapKind.EMPLOYEE_NAME, MapKind.DEPARTMENT_NUMBER}
_EMPLOYEE_KINDS = {MapKind.EMPLOYEE_NUMBER, MapKind.EMPLOYEE_NAME}


@dataclass
class MapOutcome:
    suggestion: MapSuggestion
    proposal_file: Path
    map_file: Path | None         # None for an inline map (lines go into the scheme by hand)
    applied: list[Row] = field(default_factory=list)


@dataclass
class SuggestResult:
    scheme_id: str
    maps: list[MapOutcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # maps without ``suggest``
    # The run's DingTalk calls and the month's total, as the ledger has them (``call_budget.call_figures``
    # with the ``run_id``); None when nobody recorded them.
    dingtalk_calls: dict[str, Any] | None = None

    def counts(self) -> dict[str, Any]:
        """Per map: rows per status and the proposal file, and the DingTalk calls; small enough for XCom."""
        return {"scheme_id": self.scheme_id, "skipped": list(self.skipped), "maps": {
            o.suggestion.map_name: {**o.suggestion.counts(), "proposal": str(o.proposal_file)} for o in self.maps},
            "dingtalk_calls": self.dingtalk_calls}

    def text(self) -> str:
        """A short report: one line per map, then every conflict and stale line with its evidence."""
        lines = [f"value-map suggestions for scheme {self.scheme_id}"]
        for o in self.maps:
            c = o.suggestion.counts()
            conflicts = sum(c[s.value] for s in Status if s.is_conflict)
            stale = sum(c[s.value] for s in Status if s.is_stale)
            lines.append(f"  {o.suggestion.map_name} ({o.suggestion.kind}): {c['proposed']} proposed, "
                         f"{c['applied']} applied, {conflicts} conflicts, {stale} stale -> {o.proposal_file}")
        for o in self.maps:
            for row in [*o.suggestion.conflicts, *o.suggestion.stale]:
                lines.append(f"  [{o.suggestion.map_name}] {row.status}: {row.key} {row.label} - {row.evidence}"
                             + (f" (candidates: {' | '.join(row.candidates)})" if row.candidates else ""))
        if self.skipped:
            lines.append(f"  not suggested (no `suggest:` in the scheme): {', '.join(self.skipped)}")
        if self.dingtalk_calls is not None:
            lines.append(call_line(self.dingtalk_calls, self.dingtalk_calls.get("run_id")))
        return "\n".join(lines)


def map_file_of(scheme: Scheme, name: str) -> Path | None:
    spec = scheme.value_maps[name]
    return Path(scheme.path).parent / scheme.id / spec.file if spec.file else None


def needs_contacts(scheme: Scheme) -> bool:
    """Whether a suggestion for ``scheme`` reads the DingTalk contacts (metered calls)."""
    return any(spec.suggest and MapKind(spec.suggest) in _CONTACT_KINDS for spec in scheme.value_maps.values())


def suggest(scheme: Scheme, contacts: sources.ContactsReader | None, kingdee: sources.BaseDataReader,
            *, options: Mapping[str, Iterable[str]] | None = None, apply: bool = False) -> SuggestResult:
    """Suggest lines for every map of ``scheme`` with a ``suggest`` kind; see the module docstring.

    ``contacts`` is needed only when an employee or department map is suggested; ``options`` gives,
    per ``expense_item_number`` map, the keys seen on claims.
    """
    kinds = {name: MapKind(spec.suggest) for name, spec in scheme.value_maps.items() if spec.suggest}
    result = SuggestResult(scheme.id, skipped=sorted(set(scheme.value_maps) - set(kinds)))
    wanted = set(kinds.values())
    departments, users = [], []
    if wanted & _CONTACT_KINDS:
        if contacts is None:
            raise ValueError("employee and department maps need the DingTalk contacts")
        departments, users = sources.read_directory(contacts)
    employees = (sources.read_records(kingdee, sources.EMPLOYEE_FORM, sources.EMPLOYEE_FIELDS)
                 if wanted & _EMPLOYEE_KINDS else [])

    rows: dict[str, list[Row]] = {}
    # Departments first: their lines (written or proposed) are the evidence "name in department".
    department_lines: dict[str, str] = {}
    for name, kind in kinds.items():
        if kind is MapKind.DEPARTMENT_NUMBER:
            existing = scheme.value_map(name)
            rows[name] = matching.suggest_departments(
                departments, existing, sources.read_records(kingdee, sources.DEPARTMENT_FORM))
            department_lines.update({**_lines(rows[name]), **existing})
    employee_lines: dict[str, str] | None = None
    employee_rows: list[Row] = []
    for name, kind in kinds.items():
        if kind is MapKind.EMPLOYEE_NUMBER:
            rows[name] = matching.suggest_employees(users, scheme.value_map(name), employees, department_lines)
            employee_lines, employee_rows = dict(scheme.value_map(name)), rows[name]
    for name, kind in kinds.items():
        if kind is MapKind.EMPLOYEE_NAME:
            rows[name] = matching.suggest_employee_names(users, scheme.value_map(name), employees, department_lines,
                                                         employee_lines, employee_rows)
        elif kind is MapKind.EXPENSE_ITEM_NUMBER:
            rows[name] = matching.suggest_expense_items(
                (options or {}).get(name, ()), scheme.value_map(name),
                sources.read_records(kingdee, sources.EXPENSE_ITEM_FORM))

    for name, kind in kinds.items():
        suggestion = MapSuggestion(name, kind, rows[name])
        map_file = map_file_of(scheme, name)
        beside = map_file or Path(scheme.path).parent / scheme.id / f"{name}.csv"
        outcome = MapOutcome(suggestion, proposal_path(beside), map_file)
        if apply and map_file is not None:
            outcome.applied = apply_proposal(map_file, suggestion)
        write_proposal(outcome.proposal_file, suggestion)
        result.maps.append(outcome)
    return result


def _lines(rows: Iterable[Row]) -> Mapping[str, str]:
    return {row.key: row.value for row in rows if row.status is Status.PROPOSED}
