"""Pairing value-map keys with Kingdee targets by the strongest evidence available; pure.

The rules, for a person to check them against:

- A key that already has a line is never proposed again (a line a person wrote is never replaced);
  its target is only checked: forbidden / not audited (``target_forbidden``) or gone
  (``target_deleted``).
- Employees, strongest evidence first: the DingTalk job number equals one usable Kingdee
  FStaffNumber; else the exact name inside the Kingdee department the user's DingTalk department is
  mapped to; else the exact name alone. A name counts only when it is unique on both sides (one
  Kingdee record, one active DingTalk user of that name): two of either is ``two_candidates``, never a
  guess. A job number that points at a forbidden or unaudited record stops there (``forbidden``):
  the person most likely left, and a namesake must not take their place.
- Departments and expense items: the exact name, unique on both sides. An expense-item key such as
  ``行政报销/差旅费`` is matched by its last part (``差旅费``) or whole.
- A target can be proposed for one key only: the same number fitting two keys (or a key already
  mapped to it) is a conflict.
- Inactive DingTalk users get no line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from dingtalk_kingdee.valuemaps.model import (
    Basis,
    DingTalkDepartment,
    DingTalkUser,
    KingdeeRecord,
    Row,
    Status,
)


def _proposed(key: str, label: str, record: KingdeeRecord, basis: Basis, evidence: str) -> Row:
    return Row(Status.PROPOSED, key, record.number, label, basis, evidence)


def _conflict(status: Status, key: str, label: str, candidates: Iterable[KingdeeRecord], evidence: str) -> Row:
    return Row(status, key, "", label, None, evidence, tuple(r.describe() for r in candidates))


def _by_name(key: str, label: str, name: str, records: Sequence[KingdeeRecord], namesakes: int, what: str,
             notes: list[str]) -> tuple[Row, KingdeeRecord | None]:
    """The exact-name rule: unique on both sides, else a conflict naming every candidate."""
    fits = [r for r in records if r.usable and r.name == name]
    if len(fits) == 1 and namesakes <= 1:
        return _proposed(key, label, fits[0], Basis.NAME, "; ".join(
            [*notes, f"the only usable Kingdee {what} named {name}: {fits[0].describe()}"])), fits[0]
    if fits:
        return _conflict(Status.TWO_CANDIDATES, key, label, fits, "; ".join(
            [*notes, f"{len(fits)} usable Kingdee {what}s and {namesakes} DingTalk entries are named {name}"])), None
    blocked = [r for r in records if not r.usable and r.name == name]
    if blocked:
        return _conflict(Status.FORBIDDEN, key, label, blocked, "; ".join(
            [*notes, f"the only Kingdee {what} named {name} is not usable"])), None
    return _conflict(Status.NO_CANDIDATE, key, label, (), "; ".join(
        [*notes, f"no Kingdee {what} named {name}"])), None


def match_employee(user: DingTalkUser, employees: Sequence[KingdeeRecord], department_lines: Mapping[str, str],
                   active_users: Sequence[DingTalkUser]) -> tuple[Row, KingdeeRecord | None]:
    """One user's row in the employee-number map, and the record it proposes (None for a conflict)."""
    key, label = user.userid, user.name
    notes: list[str] = []
    if user.job_number:
        fits = [r for r in employees if r.usable and r.staff_number == user.job_number]
        if len(fits) == 1:
            evidence = f"job number {user.job_number} = FStaffNumber of {fits[0].describe()}"
            if fits[0].name != user.name:
                evidence += f" (the names differ: DingTalk {user.name})"
            return _proposed(key, label, fits[0], Basis.JOB_NUMBER, evidence), fits[0]
        if fits:
            return _conflict(Status.TWO_CANDIDATES, key, label, fits,
                             f"job number {user.job_number} is the FStaffNumber of {len(fits)} usable employees"), None
        blocked = [r for r in employees if not r.usable and r.staff_number == user.job_number]
        if blocked:
            return _conflict(Status.FORBIDDEN, key, label, blocked, f"job number {user.job_number} = "
                             "FStaffNumber of a Kingdee employee that is not usable"), None
        notes.append(f"job number {user.job_number} is no Kingdee FStaffNumber")
    else:
        notes.append("no job number in DingTalk")
    namesakes = [u for u in active_users if u.name == user.name]
    mapped = {department_lines[d] for d in user.dept_ids if d in department_lines}
    if mapped:
        where = ", ".join(sorted(mapped))
        fits = [r for r in employees if r.usable and r.name == user.name and r.department in mapped]
        in_same = [u for u in namesakes if mapped & {department_lines.get(d) for d in u.dept_ids}]
        if len(fits) == 1 and len(in_same) <= 1:
            return _proposed(key, label, fits[0], Basis.NAME_IN_DEPARTMENT, "; ".join(
                [*notes, f"the only usable employee named {user.name} in {where}: {fits[0].describe()}"])), fits[0]
        if fits:
            return _conflict(Status.TWO_CANDIDATES, key, label, fits, "; ".join(
                [*notes, f"{len(fits)} Kingdee employees and {len(in_same)} DingTalk users named {user.name} "
                         f"in {where}"])), None
        notes.append(f"no usable employee named {user.name} in {where}")
    else:
        notes.append(f"DingTalk department {', '.join(user.dept_ids) or '-'} has no department line")
    return _by_name(key, label, user.name, employees, len(namesakes), "employee", notes)


def _one_key_per_target(rows: list[Row], existing: Mapping[str, str]) -> list[Row]:
    """A number proposed for two keys, or already another key's value, is a conflict, never a guess."""
    taken = {value.upper(): key for key, value in existing.items()}
    proposals = Counter(row.value.upper() for row in rows if row.status is Status.PROPOSED)
    checked: list[Row] = []
    for row in rows:
        target = row.value.upper()
        if row.status is Status.PROPOSED and target in taken:
            row = Row(Status.ALREADY_MAPPED, row.key, "", row.label, None,
                      f"{row.evidence}; but {row.value} is already the value of {taken[target]}", (row.value,))
        elif row.status is Status.PROPOSED and proposals[target] > 1:
            others = sorted(r.key for r in rows if r.value.upper() == target and r.key != row.key)
            row = Row(Status.TWO_CANDIDATES, row.key, "", row.label, None,
                      f"{row.evidence}; but {row.value} fits {', '.join(others)} too", (row.value,))
        checked.append(row)
    return checked


def stale_lines(existing: Mapping[str, str], records: Sequence[KingdeeRecord],
                label: Callable[[str], str] = lambda key: "") -> list[Row]:
    """Existing lines whose target Kingdee has forbidden, not audited, or no longer has."""
    by_number = {r.number.upper(): r for r in records}
    rows: list[Row] = []
    for key, value in existing.items():
        record = by_number.get(value.upper())
        if record is None:
            rows.append(Row(Status.TARGET_DELETED, key, value, label(key), None,
                            f"Kingdee has no record numbered {value}"))
        elif not record.usable:
            rows.append(Row(Status.TARGET_FORBIDDEN, key, value, label(key), None,
                            f"the line's target is {record.describe()}", (record.describe(),)))
    return rows


def _unique_users(users: Iterable[DingTalkUser]) -> list[DingTalkUser]:
    """Active users once each (the directory lists a person once per department), first seen first."""
    merged: dict[str, DingTalkUser] = {}
    for user in users:
        if not user.active:
            continue
        seen = merged.get(user.userid)
        if seen is None:
            merged[user.userid] = user
        else:
            depts = seen.dept_ids + tuple(d for d in user.dept_ids if d not in seen.dept_ids)
            merged[user.userid] = DingTalkUser(seen.userid, seen.name, seen.job_number or user.job_number,
                                               depts, True)
    return list(merged.values())


def suggest_employees(users: Iterable[DingTalkUser], existing: Mapping[str, str],
                      employees: Sequence[KingdeeRecord], department_lines: Mapping[str, str]) -> list[Row]:
    """The employee-number map: a row for every active user without a line, then its stale lines."""
    active = _unique_users(users)
    names = {u.userid: u.name for u in active}
    rows = [match_employee(u, employees, department_lines, active)[0] for u in active if u.userid not in existing]
    return _one_key_per_target(rows, existing) + stale_lines(existing, employees, lambda k: names.get(k, ""))


def suggest_employee_names(users: Iterable[DingTalkUser], existing: Mapping[str, str],
                           employees: Sequence[KingdeeRecord], department_lines: Mapping[str, str],
                           employee_lines: Mapping[str, str] | None = None,
                           employee_rows: Sequence[Row] = ()) -> list[Row]:
    """The payee-name map (userid -> the Kingdee employee's name). A user with an employee-number
    line (``employee_lines``) or a proposed one (``employee_rows``) takes that employee's name; a user
    whose employee row is a conflict carries the same conflict; without an employee-number map the
    employee rules run here."""
    active = _unique_users(users)
    by_number = {r.number.upper(): r for r in employees}
    proposed_rows = {row.key: row for row in employee_rows}
    rows: list[Row] = []
    for user in active:
        if user.userid in existing:
            continue
        line = (employee_lines or {}).get(user.userid)
        employee_row = proposed_rows.get(user.userid)
        if line is not None:
            record = by_number.get(line.upper())
            if record is not None and record.usable:
                rows.append(Row(Status.PROPOSED, user.userid, record.name, user.name, Basis.MAPPED_EMPLOYEE,
                                f"employee line {user.userid} -> {record.describe()}"))
            else:
                status = Status.NO_CANDIDATE if record is None else Status.FORBIDDEN
                rows.append(_conflict(status, user.userid, user.name, [record] if record else [],
                                      f"the employee line {user.userid} -> {line} points at "
                                      f"{'nothing' if record is None else 'an unusable record'}"))
        elif employee_row is not None:
            record = by_number.get(employee_row.value.upper()) if employee_row.status is Status.PROPOSED else None
            if record is not None:
                rows.append(Row(Status.PROPOSED, user.userid, record.name, user.name, employee_row.basis,
                                employee_row.evidence))
            else:
                rows.append(Row(employee_row.status, user.userid, "", user.name, None, employee_row.evidence,
                                employee_row.candidates))
        else:
            row, record = match_employee(user, employees, department_lines, active)
            rows.append(row if record is None else Row(Status.PROPOSED, row.key, record.name, row.label, row.basis,
                                                       row.evidence))
    return rows


def suggest_departments(departments: Iterable[DingTalkDepartment], existing: Mapping[str, str],
                        records: Sequence[KingdeeRecord], root_ids: frozenset[str] = frozenset({"1"})) -> list[Row]:
    """The department map: every DingTalk department but the root, by exact name."""
    listed = [d for d in departments if d.dept_id not in root_ids]
    namesakes = Counter(d.name for d in listed)
    rows = [_by_name(d.dept_id, d.name, d.name, records, namesakes[d.name], "department", [])[0]
            for d in listed if d.dept_id not in existing]
    names = {d.dept_id: d.name for d in listed}
    return _one_key_per_target(rows, existing) + stale_lines(existing, records, lambda k: names.get(k, ""))


def suggest_expense_items(options: Iterable[str], existing: Mapping[str, str],
                          records: Sequence[KingdeeRecord]) -> list[Row]:
    """The expense-item map: each option key seen on claims, by the exact name of its last part."""
    keys = list(dict.fromkeys(o for o in options if o))
    rows: list[Row] = []
    for key in keys:
        if key in existing:
            continue
        leaf = key.rsplit("/", 1)[-1]
        name = leaf if any(r.name == leaf for r in records) else key
        # Several options may rightly share one expense item (差旅费 under two categories): one
        # option is never another's namesake, and there is no one-key-per-target rule here.
        rows.append(_by_name(key, key, name, records, 1, "expense item", [])[0])
    return rows + stale_lines(existing, records)
