"""Reading both systems for value-map suggestions: the DingTalk contacts (department tree, users) and
Kingdee base data (employees, departments, expense items), turned into the matcher's records.

The hooks are taken as Protocols: anything with these methods will do (the product's DingTalkHook and
KingdeeHook have them). Kingdee is asked twice per form: once for the usable records only (its
FilterString ``FDocumentStatus='C' AND FForbidStatus='A'`` decides what may be referenced), once for
every record with its statuses, which only explains conflicts and stale lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from dingtalk_kingdee.valuemaps.model import DingTalkDepartment, DingTalkUser, KingdeeRecord

EMPLOYEE_FORM = "BD_Empinfo"
DEPARTMENT_FORM = "BD_Department"
EXPENSE_ITEM_FORM = "BD_Expense"  # 费用项目 (see docs/hook-kingdee.md, "Base data": partly UNVERIFIED)
STATUS_FIELDS = ("FDocumentStatus", "FForbidStatus")
BASE_FIELDS = ("FNumber", "FName", *STATUS_FIELDS)
EMPLOYEE_FIELDS = (*BASE_FIELDS, "FStaffNumber", "FPostDept.FNumber")


class ContactsReader(Protocol):
    def list_departments(self, root_dept_id: int = 1) -> list[dict[str, Any]]:
        """Every department under the root (the root excluded), each ``{"dept_id","name","parent_id"}``."""
        ...

    def list_department_users(self, dept_id: int) -> list[dict[str, Any]]:
        """Every direct member of the department, as ``topapi/v2/user/list`` lists them."""
        ...


class BaseDataReader(Protocol):
    def query_base_data(self, form_id: str, field_keys: Sequence[str], *,
                        usable_only: bool = True) -> list[dict[str, Any]]:
        """Rows of a base-data form as dicts by field key."""
        ...


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def read_directory(contacts: ContactsReader, root_dept_id: int = 1
                   ) -> tuple[list[DingTalkDepartment], list[DingTalkUser]]:
    """The department tree and the users of every department (root included), each user once per
    department as DingTalk lists them (the matcher merges them)."""
    departments = [DingTalkDepartment(_text(d.get("dept_id")), _text(d.get("name")), _text(d.get("parent_id")))
                   for d in contacts.list_departments(root_dept_id)]
    users: list[DingTalkUser] = []
    for dept_id in [str(root_dept_id), *(d.dept_id for d in departments)]:
        for user in contacts.list_department_users(int(dept_id)):
            dept_ids = tuple(_text(d) for d in user.get("dept_id_list") or [dept_id])
            users.append(DingTalkUser(_text(user.get("userid")), _text(user.get("name")),
                                      _text(user.get("job_number")), dept_ids, user.get("active", True) is not False))
    return departments, users


def read_records(kingdee: BaseDataReader, form_id: str, field_keys: Sequence[str] = BASE_FIELDS
                 ) -> list[KingdeeRecord]:
    """Every record of a base-data form; usable ones as Kingdee's own filter says."""
    usable = {_text(row.get("FNumber")).upper() for row in kingdee.query_base_data(form_id, ["FNumber"])}
    records = []
    for row in kingdee.query_base_data(form_id, list(field_keys), usable_only=False):
        number = _text(row.get("FNumber"))
        audited = _text(row.get("FDocumentStatus")).upper() in ("", "C")
        forbidden = _text(row.get("FForbidStatus")).upper() == "B"
        if number.upper() not in usable and audited and not forbidden:
            audited = False  # Kingdee does not count it usable; say so rather than guess why
        records.append(KingdeeRecord(number, _text(row.get("FName")), forbidden, audited,
                                     _text(row.get("FStaffNumber")), _text(row.get("FPostDept.FNumber"))))
    return records
