"""What value-map suggestions work on and produce: the two systems' records as the matcher sees them,
and a map's suggestion (proposed lines with their evidence, conflicts, stale lines)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class MapKind(StrEnum):
    """What a value map pairs (a scheme's ``value_maps.<name>.suggest``)."""

    EMPLOYEE_NUMBER = "employee_number"          # DingTalk userid -> Kingdee employee FNumber (BD_Empinfo)
    EMPLOYEE_NAME = "employee_name"              # DingTalk userid -> that employee's Kingdee FName
    DEPARTMENT_NUMBER = "department_number"      # DingTalk dept_id -> Kingdee department FNumber (BD_Department)
    EXPENSE_ITEM_NUMBER = "expense_item_number"  # approval form option -> Kingdee expense item FNumber (BD_Expense)


class Basis(StrEnum):
    """The evidence a proposed line rests on, strongest first."""

    MAPPED_EMPLOYEE = "mapped_employee"        # the userid's line in the employee-number map
    JOB_NUMBER = "job_number"                  # DingTalk job_number = Kingdee FStaffNumber
    NAME_IN_DEPARTMENT = "name_in_department"  # exact name inside the mapped Kingdee department
    NAME = "name"                              # exact name, unique on both sides


class Status(StrEnum):
    """A row of a proposal file: a line to add, or something for a person to decide."""

    PROPOSED = "proposed"                # unambiguous; ``--apply`` adds it
    APPLIED = "applied"                  # was proposed and has been added to the map
    TWO_CANDIDATES = "two_candidates"    # more than one target fits (or one target fits two keys)
    NO_CANDIDATE = "no_candidate"        # nothing in Kingdee fits
    FORBIDDEN = "forbidden"              # the only fit is forbidden (FForbidStatus B) or not audited
    ALREADY_MAPPED = "already_mapped"    # the fit is already the value of another key's line
    TARGET_FORBIDDEN = "target_forbidden"  # an existing line points at a forbidden / unaudited record
    TARGET_DELETED = "target_deleted"      # an existing line points at a number Kingdee no longer has

    @property
    def is_conflict(self) -> bool:
        return self in {Status.TWO_CANDIDATES, Status.NO_CANDIDATE, Status.FORBIDDEN, Status.ALREADY_MAPPED}

    @property
    def is_stale(self) -> bool:
        return self in {Status.TARGET_FORBIDDEN, Status.TARGET_DELETED}


@dataclass(frozen=True)
class DingTalkUser:
    userid: str
    name: str
    job_number: str = ""              # 工号; "" when DingTalk has none
    dept_ids: tuple[str, ...] = ()    # as the approval answers spell them (strings)
    active: bool = True


@dataclass(frozen=True)
class DingTalkDepartment:
    dept_id: str
    name: str
    parent_id: str = ""


@dataclass(frozen=True)
class KingdeeRecord:
    """A base-data record (employee, department or expense item) with the statuses that decide
    whether a bill may reference it."""

    number: str
    name: str
    forbidden: bool = False       # FForbidStatus B
    audited: bool = True          # FDocumentStatus C
    staff_number: str = ""        # employees: FStaffNumber
    department: str = ""          # employees: FPostDept.FNumber

    @property
    def usable(self) -> bool:
        return self.audited and not self.forbidden

    @property
    def state(self) -> str:
        """Why the record is not usable, in words ("" when it is)."""
        if self.forbidden:
            return "forbidden in Kingdee"
        if not self.audited:
            return "not audited in Kingdee"
        return ""

    def describe(self) -> str:
        where = f" in {self.department}" if self.department else ""
        state = f", {self.state}" if self.state else ""
        return f"{self.number} {self.name}{where}{state}"


@dataclass(frozen=True)
class Row:
    """One row of a proposal: ``value`` is set for proposed/applied lines and stale lines."""

    status: Status
    key: str
    value: str = ""
    label: str = ""               # what the key is, for a person (a DingTalk name or department)
    basis: Basis | None = None
    evidence: str = ""
    candidates: tuple[str, ...] = ()


@dataclass
class MapSuggestion:
    """Everything suggested for one value map of a scheme."""

    map_name: str
    kind: MapKind
    rows: list[Row] = field(default_factory=list)

    def with_status(self, *statuses: Status) -> list[Row]:
        return [row for row in self.rows if row.status in statuses]

    @property
    def proposed(self) -> list[Row]:
        return self.with_status(Status.PROPOSED)

    @property
    def conflicts(self) -> list[Row]:
        return [row for row in self.rows if row.status.is_conflict]

    @property
    def stale(self) -> list[Row]:
        return [row for row in self.rows if row.status.is_stale]

    def counts(self) -> dict[str, int]:
        """Rows per status, every status present (zeros included), for reports and XCom."""
        return {status.value: sum(1 for row in self.rows if row.status is status) for status in Status}
