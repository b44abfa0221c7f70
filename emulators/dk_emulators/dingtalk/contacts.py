"""The organisation's contacts (通讯录) the emulator serves: the department tree and the users of each
department, built from the demo universe, and the two calls that read them,
``topapi/v2/department/listsub`` (direct children of a department) and ``topapi/v2/user/list``
(direct members of a department, cursor-paged, size 1..100).

Who is in the directory: every ``employees`` and ``unmapped_employees`` person of the universe and
the ``directory_only`` people (who file no demo claims), in the department ``dept_id`` names. The
root department ``1`` carries the organisation's name; a department's ``parent_id`` defaults to it.
A person's ``job_number`` (工号) is served as given, ``""`` when the universe has none; ``active``
defaults to true.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dk_emulators.dingtalk.api import int_param
from dk_emulators.dingtalk.wire import (
    ERR_INVALID_PARAM,
    ERR_MISSING_PARAM,
    ApiError,
    ok,
)

if TYPE_CHECKING:
    from fastapi import Request
    from fastapi.responses import Response

    from dk_emulators.dingtalk.emulator import DingTalkEmulator

ROOT_DEPT_ID = 1
MAX_USER_PAGE_SIZE = 100
ERR_NO_DEPARTMENT = 60003  # 部门不存在


@dataclass
class Directory:
    """Departments by id (``{"dept_id", "name", "parent_id"}``) and users (as ``user/list`` lists them)."""

    departments: dict[int, dict[str, Any]] = field(default_factory=dict)
    users: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_universe(cls, universe: Mapping[str, Any]) -> Directory:
        org_name = universe.get("kingdee", {}).get("org_name", "")
        directory_only = universe.get("directory_only", {})
        departments = {ROOT_DEPT_ID: {"dept_id": ROOT_DEPT_ID, "name": org_name, "parent_id": 0}}
        for dept in [*universe.get("departments", []), *directory_only.get("departments", [])]:
            dept_id = int(dept["dept_id"])
            departments[dept_id] = {"dept_id": dept_id, "name": dept["name"],
                                    "parent_id": int(dept.get("parent_id", ROOT_DEPT_ID))}
        people = [*universe.get("employees", []), *universe.get("unmapped_employees", []),
                  *directory_only.get("employees", [])]
        users = [{"userid": person["userid"], "name": person["name"],
                  "job_number": person.get("job_number", ""), "title": person.get("title", ""),
                  "dept_id_list": [int(person["dept_id"])], "active": bool(person.get("active", True))}
                 for person in people]
        return cls(departments, users)

    def children(self, dept_id: int) -> list[dict[str, Any]]:
        self._require(dept_id)
        return [dict(d) for d in self.departments.values() if d["parent_id"] == dept_id]

    def members(self, dept_id: int) -> list[dict[str, Any]]:
        self._require(dept_id)
        return [dict(u, dept_id_list=list(u["dept_id_list"])) for u in self.users if dept_id in u["dept_id_list"]]

    def _require(self, dept_id: int) -> None:
        if dept_id not in self.departments:
            raise ApiError(ERR_NO_DEPARTMENT, f"部门不存在: dept_id={dept_id}")


def _int(body: dict, name: str, default: int | None = None) -> int:
    """An integer parameter; absent: ``default``, or the missing-parameter error when there is none."""
    if body.get(name) in (None, ""):
        if default is None:
            raise ApiError(ERR_MISSING_PARAM, f"缺少参数 {name}")
        return default
    return int_param(body, name)


def department_listsub(emu: DingTalkEmulator, api: str, body: dict, request: Request) -> Response:
    """Direct children of ``dept_id`` (default: the root, 1)."""
    return ok(result=emu.directory.children(_int(body, "dept_id", ROOT_DEPT_ID)))


def user_list(emu: DingTalkEmulator, api: str, body: dict, request: Request) -> Response:
    """One page of the direct members of ``dept_id``: ``{"has_more", "next_cursor"?, "list"}``."""
    dept_id = _int(body, "dept_id")
    cursor = _int(body, "cursor")
    size = _int(body, "size")
    if size < 1 or size > MAX_USER_PAGE_SIZE:
        raise ApiError(ERR_INVALID_PARAM, f"size参数不合法，取值范围为1~{MAX_USER_PAGE_SIZE}")
    if cursor < 0:
        raise ApiError(ERR_INVALID_PARAM, "cursor参数不合法")
    members = emu.directory.members(dept_id)
    page = members[cursor:cursor + size]
    result: dict[str, Any] = {"has_more": cursor + size < len(members), "list": page}
    if result["has_more"]:
        result["next_cursor"] = cursor + size
    return ok(result=result)
