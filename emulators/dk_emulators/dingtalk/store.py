"""The approval instances the emulator serves, their index by start time, and the comments added to
them; thread-safe. Instances are stored shaped like the detail answer's ``process_instance`` plus
``process_instance_id`` and ``process_code``."""

from __future__ import annotations

import bisect
import copy
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from dk_emulators.dingtalk.wire import DEFAULT_PROCESS_CODE, china_time_to_ms, format_china_time

STATUSES = frozenset({"NEW", "RUNNING", "COMPLETED", "TERMINATED", "CANCELED"})


def _instance_dict(item: Any) -> dict:
    """Accept a plain instance dict or anything with an ``.instance`` dict (a SeedClaim)."""
    instance = getattr(item, "instance", item)
    if not isinstance(instance, dict):
        raise TypeError(f"not an instance: {type(item).__name__}")
    return instance


class InstanceStore:
    """Instances by id, the process codes known, and the comments added through the API."""

    def __init__(self, process_codes: Iterable[str] = (DEFAULT_PROCESS_CODE,)) -> None:
        self.process_codes: set[str] = set(process_codes)
        self.comments: list[dict] = []
        self._instances: dict[str, dict] = {}
        self._index: dict[str, list[tuple[int, str]]] = {}
        self._index_dirty = True
        self._lock = threading.RLock()

    def add(self, instances: Iterable[Any]) -> int:
        """Store instances (dicts or SeedClaims); an existing id is replaced. Returns how many."""
        count = 0
        with self._lock:
            for item in instances:
                instance = copy.deepcopy(_instance_dict(item))
                instance_id = instance.get("process_instance_id")
                if not instance_id or not instance.get("create_time"):
                    raise ValueError("an instance needs process_instance_id and create_time")
                china_time_to_ms(instance["create_time"])  # refuse unparseable times now, not at listing
                instance.setdefault("process_code", DEFAULT_PROCESS_CODE)
                self._instances[instance_id] = instance
                self.process_codes.add(instance["process_code"])
                count += 1
            self._index_dirty = True
        return count

    def get(self, instance_id: str) -> dict:
        """A copy of the stored instance; KeyError when unknown."""
        with self._lock:
            return copy.deepcopy(self._instances[instance_id])

    def delete(self, instance_id: str) -> dict:
        """Remove an instance (as its deletion in DingTalk does); returns it. KeyError when unknown."""
        with self._lock:
            instance = self._instances.pop(instance_id)
            self._index_dirty = True
            return instance

    def status_of(self, instance_id: str) -> str | None:
        """The stored instance's status; None when unknown."""
        with self._lock:
            stored = self._instances.get(instance_id)
            return None if stored is None else stored.get("status")

    def detail(self, instance_id: str) -> dict | None:
        """The instance as the detail answer shows it (without id and process code), or None."""
        with self._lock:
            stored = self._instances.get(instance_id)
            if stored is None:
                return None
            return {k: copy.deepcopy(v) for k, v in stored.items() if k not in ("process_instance_id", "process_code")}

    def __len__(self) -> int:
        return len(self._instances)

    def statuses(self) -> Counter[str]:
        """``status/result`` -> how many instances are in it."""
        with self._lock:
            return Counter(f"{i.get('status')}/{i.get('result', '')}" for i in self._instances.values())

    def set_outcome(self, instance_id: str, status: str, result: str, finish_time: datetime | str | None,
                    clock: Callable[[], datetime]) -> dict:
        """Move an instance to a new state, closing open tasks and appending an operation record
        the way the real service shows them. Returns a copy of the updated instance."""
        status = status.upper()
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._lock:
            instance = self._instances[instance_id]
            instance["status"] = status
            instance["result"] = result
            if status in {"NEW", "RUNNING"}:
                instance.pop("finish_time", None)
                return copy.deepcopy(instance)
            finished = format_china_time(finish_time, clock)
            instance["finish_time"] = finished
            tasks = instance.setdefault("tasks", [])
            records = instance.setdefault("operation_records", [])
            open_tasks = [t for t in tasks if t.get("task_status") in {"RUNNING", "NEW"}]
            if status == "COMPLETED":
                decision = "AGREE" if result == "agree" else "REFUSE"
                actor = open_tasks[0]["userid"] if open_tasks else instance.get("originator_userid", "")
                for position, task in enumerate(open_tasks):
                    task["task_status"] = "COMPLETED" if position == 0 else "CANCELED"
                    task["task_result"] = decision if position == 0 else "NONE"
                    task["finish_time"] = finished
                records.append({"userid": actor, "date": finished, "operation_type": "EXECUTE_TASK_NORMAL",
                                "operation_result": decision})
            else:
                for task in open_tasks:
                    task["task_status"] = "CANCELED"
                    task["task_result"] = "NONE"
                    task["finish_time"] = finished
                records.append({"userid": instance.get("originator_userid", ""), "date": finished,
                                "operation_type": "TERMINATE_PROCESS_INSTANCE", "operation_result": "NONE"})
            return copy.deepcopy(instance)

    def select(self, process_code: str, start_ms: int, end_ms: int, userids: set[str] | None) -> list[str]:
        """Ids of instances of ``process_code`` STARTED in [start, end), oldest first."""
        with self._lock:
            if self._index_dirty:
                index: dict[str, list[tuple[int, str]]] = {}
                for instance_id, instance in self._instances.items():
                    index.setdefault(instance["process_code"], []).append(
                        (china_time_to_ms(instance["create_time"]), instance_id))
                for rows in index.values():
                    rows.sort()
                self._index, self._index_dirty = index, False
            rows = self._index.get(process_code, [])
            low = bisect.bisect_left(rows, (start_ms, ""))
            high = bisect.bisect_left(rows, (end_ms, ""))
            ids = [instance_id for _, instance_id in rows[low:high]]
            if userids is not None:
                ids = [i for i in ids if self._instances[i].get("originator_userid") in userids]
            return ids

    def add_comment(self, instance_id: str, userid: str, text: str, file: Any, now_text: str) -> bool:
        """Keep a comment and show it as an ADD_REMARK record; False when the instance is unknown."""
        with self._lock:
            instance = self._instances.get(instance_id)
            if instance is None:
                return False
            comment = {"process_instance_id": instance_id, "comment_userid": userid, "text": text,
                       "created_at": now_text}
            if file:
                comment["file"] = file
            self.comments.append(comment)
            instance.setdefault("operation_records", []).append(
                {"userid": userid, "date": now_text, "operation_type": "ADD_REMARK",
                 "operation_result": "NONE", "remark": text})
            return True
