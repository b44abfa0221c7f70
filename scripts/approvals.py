"""Approving claims in the DingTalk emulator and watching bills appear in the Kingdee emulator, over
their admin APIs (HTTP only), with what Airflow's REST API says about the runs that made them.

Shared by the Stream events test (tests/events) and its benchmark (bench/bench_events.py), which run
against scripts/topology.py. The claims are generated (dk_emulators.dingtalk.seed), valid and still
running: approving one must make exactly one bill; refusing or withdrawing it, none.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import requests
from dk_emulators.dingtalk.seed import SeedClaim, SeedConfig, generate_claims

T = TypeVar("T")

# Outcomes set through /_emulator/outcome: (status, result). A withdrawn claim is TERMINATED (the
# event's type "terminate"); a refused one COMPLETED with result refuse (type "finish").
APPROVE = ("COMPLETED", "agree")
REFUSE = ("COMPLETED", "refuse")
WITHDRAW = ("TERMINATED", "")


def wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.5) -> T:
    """``check()``'s first true answer, asked every ``every`` seconds; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def running_claims(count: int, process_code: str, seed: int, *,
                   age: timedelta = timedelta(hours=26)) -> list[SeedClaim]:
    """``count`` valid, payable claims still RUNNING (waiting for their approver), started about
    ``age`` ago: before the first hourly listing of a fresh topology, so after it only an event (or
    the nightly sweep) brings them to the DAG. Their planned approvals lie hours ahead: only the
    caller approves them."""
    now = datetime.now(UTC)
    claims = generate_claims(SeedConfig(
        count=count, seed=seed, process_code=process_code, start=now - age, end=now - age + timedelta(hours=2),
        status_weights={"running": 1.0}, late_approval_share=1.0, edge_rate=0.0))
    assert all(c.truth.payable and c.instance["status"] == "RUNNING" for c in claims), "the seed changed"
    return claims


@dataclass
class DingTalkAdmin:
    """The DingTalk emulator's /_emulator API: instances, outcomes, Stream state, faults, metered usage."""

    base_url: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        answer = requests.request(method, f"{self.base_url.rstrip('/')}/_emulator{path}", json=body, timeout=30)
        if answer.status_code >= 400:
            raise RuntimeError(f"DingTalk emulator {method} {path}: {answer.status_code} {answer.text[:500]}")
        return answer.json()

    def add(self, claims: list[SeedClaim]) -> None:
        self.call("POST", "/instances", {"instances": [c.instance for c in claims]})

    def decide(self, instance_id: str, outcome: tuple[str, str]) -> None:
        status, result = outcome
        self.call("POST", "/outcome", {"instance_id": instance_id, "status": status, "result": result})

    def stream(self) -> dict:
        """Stream mode's state: open connections, events born, delivered, acked, pending."""
        return self.call("GET", "/stream")

    def arm_stream_fault(self, fault: str, **options: Any) -> dict:
        """A Stream fault (refuse_open, drop_socket, duplicate, delay) for the next ``times`` deliveries."""
        return self.call("POST", "/stream/faults", {"fault": fault, **options})["fault"]

    def clear_stream_faults(self) -> None:
        self.call("DELETE", "/stream/faults")

    def configure(self, **settings: Any) -> dict:
        return self.call("POST", "/config", settings)

    def metered_calls(self) -> Counter:
        """Metered calls of the current month by API (refused ones and the free gettoken apart)."""
        return Counter(self.call("GET", "/usage")["by_api"])


@dataclass
class KingdeeAdmin:
    """The Kingdee emulator's /_emulator API: the bills it holds."""

    base_url: str

    def bill_counts(self) -> Counter:
        """How many AP_PAYBILL bills each third-party number (the claim's business id) has."""
        root = self.base_url.rstrip("/").removesuffix("/k3cloud")  # the admin API is beside the service
        answer = requests.get(f"{root}/_emulator/bills", timeout=30)
        answer.raise_for_status()
        return Counter(str(b["FTHIRDBILLNO"]) for b in answer.json())


def task_result(api, dag_id: str, run_id: str, task_id: str) -> dict:
    """What a finished task returned (its XCom)."""
    return api.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")["value"]


def planned_claims(api, dag_id: str, run_id: str) -> list[str]:
    """The claims the run's plan took from approval events: read, and withdrawn (closed unread). An
    hourly run takes only the claims of recent events caught up (those no run had taken yet)."""
    plan = task_result(api, dag_id, run_id, "plan")
    if plan.get("events") is None:  # not an event-triggered run
        return [*(plan.get("caught_up_ids") or []), *(plan.get("caught_up_withdrawn_ids") or [])]
    return [*(plan.get("instance_ids") or []), *(plan.get("withdrawn_ids") or [])]


def loaded_bills(api, dag_id: str, run_id: str) -> int:
    """Bills the run's load step made (its XCom counts)."""
    return int(task_result(api, dag_id, run_id, "load")["loaded"])


def finished_runs(api: Any, dag_id: str, known: set[str]) -> list[dict] | None:
    """The DAG's runs not in ``known``, when every one of them has finished; else None."""
    runs = [r for r in api.dag_runs(dag_id) if r["dag_run_id"] not in known]
    return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None


def settled_runs(api: Any, dag_id: str) -> list[dict] | None:
    """The DAG's runs when none is queued or running and no asset event waits in Airflow's run queue
    for a run still to be created (with max_active_runs=1 an event queued while a run runs only
    becomes a run after it); else None. The queue is asked first: a run created from it before the
    runs are listed shows among them as queued."""
    if api.call("GET", f"/dags/{dag_id}/assets/queuedEvents")["total_entries"]:
        return None
    return finished_runs(api, dag_id, set())
