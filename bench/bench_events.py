"""Approval to bill through DingTalk Stream events, on real Airflow processes: how long from the
approval in DingTalk to the bill in Kingdee, and how many metered DingTalk calls a paid claim costs.

scripts/topology.py with the LocalExecutor and the scheme's events on (api-server, scheduler,
dag-processor, triggerer; PostgreSQL; both emulators on loopback). Each round approves ``--spread``
claims one every 2-5 s, then ``--burst`` claims within a second, through the DingTalk emulator's
admin API; a poller notes when each bill appears in the Kingdee emulator. Printed per round: latency
median, p95 and max; where the time went (approval -> asset event stored -> run queued -> run started
-> load finished, medians from Airflow's REST API); DingTalk metered calls per paid claim; then
min-median-max over the rounds. ``--load N`` runs N busy processes beside it (a busy machine).

    python bench/bench_events.py [--rounds 3] [--spread 40] [--burst 12] [--load 0]
        [--setting AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=1 ...]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.approvals import (  # noqa: E402
    APPROVE,
    DingTalkAdmin,
    KingdeeAdmin,
    finished_runs,
    planned_claims,
    running_claims,
    wait_for,
)
from scripts.topology import Topology, TopologyConfig  # noqa: E402

REDIS_DB = 10  # the benchmark's own Redis database
ROUND_TIMEOUT_S = 900


@dataclass
class Round:
    latencies: list[float] = field(default_factory=list)  # seconds, approval call to bill seen
    stages: dict[str, list[float]] = field(default_factory=dict)  # stage -> seconds per claim
    calls: Counter = field(default_factory=Counter)  # DingTalk metered calls by API
    paid: int = 0
    runs: Counter = field(default_factory=Counter)  # run type -> runs
    seconds: float = 0.0


class BillWatch:
    """Notes the moment each bill first appears in the Kingdee emulator (polled every 0.25 s)."""

    def __init__(self, kingdee: KingdeeAdmin) -> None:
        self.kingdee = kingdee
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> BillWatch:
        self.seen.update(dict.fromkeys(self.kingdee.bill_counts(), 0.0))  # bills already there
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a busy emulator: ask again
                numbers = self.kingdee.bill_counts()
                now = time.time()
                for number in numbers:
                    self.seen.setdefault(number, now)
            self._stop.wait(0.25)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def epoch(iso: str | None) -> float | None:
    return None if not iso else datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def stages_of(topology: Topology, known: set[str], approved_at: dict[str, float]) -> tuple[dict, Counter]:
    """Per claim, seconds from its approval: its finish event stored as an asset event, the first run
    that took it queued (created), that run started, its load task finished."""
    api, dag_id = topology.api(), topology.dag_id
    since = datetime.fromtimestamp(min(approved_at.values()), UTC).isoformat()
    stored: dict[str, float] = {}
    for event in api.call("GET", "/assets/events", params={"timestamp_gte": since, "limit": 1000,
                                                           "order_by": "timestamp"})["asset_events"]:
        payload = (event.get("extra") or {}).get("payload") or {}
        if payload.get("type") == "finish":
            stored.setdefault(payload.get("instance_id"), epoch(event["timestamp"]))
    marks: dict[str, list[float | None]] = {}
    types: Counter = Counter()
    finished = [r for r in api.dag_runs(dag_id) if r["dag_run_id"] not in known and r["state"] in ("success", "failed")]
    for run in sorted(finished, key=lambda r: r["queued_at"]):  # a run made later for a settled event: not yet
        types[run["run_type"]] += 1
        load = api.call("GET", f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances/load")
        for instance_id in planned_claims(api, dag_id, run["dag_run_id"]):
            marks.setdefault(instance_id, [epoch(run["queued_at"]), epoch(run["start_date"]), epoch(load["end_date"])])
    stages: dict[str, list[float]] = {"event stored": [], "run queued": [], "run started": [], "load done": []}
    for instance_id, start in approved_at.items():
        for name, mark in zip(stages, [stored.get(instance_id), *marks.get(instance_id, [None] * 3)], strict=True):
            if mark is not None:
                stages[name].append(mark - start)
    return stages, types


def one_round(topology: Topology, number: int, spread: int, burst: int, rng: random.Random) -> Round:
    dingtalk = DingTalkAdmin(topology.dingtalk.base_url)
    kingdee = KingdeeAdmin(topology.kingdee.base_url)
    api = topology.api()
    claims = running_claims(spread + burst, topology.scheme.source.process_code, seed=9000 + number)
    dingtalk.add(claims)
    known = {r["dag_run_id"] for r in api.dag_runs(topology.dag_id)}
    calls_before = dingtalk.metered_calls()
    result = Round()
    approved_at: dict[str, float] = {}
    started = time.monotonic()
    with BillWatch(kingdee) as watch:
        for position, claim in enumerate(claims):
            approved_at[claim.instance_id] = time.time()
            dingtalk.decide(claim.instance_id, APPROVE)
            if position < spread:
                time.sleep(rng.uniform(2, 5))
            else:
                time.sleep(1 / burst)
        wait_for("every bill of the round", lambda: all(c.business_id in watch.seen for c in claims),
                 ROUND_TIMEOUT_S)
    wait_for("the round's runs to finish", lambda: finished_runs(api, topology.dag_id, known), ROUND_TIMEOUT_S, 2)
    result.seconds = time.monotonic() - started
    result.latencies = [watch.seen[c.business_id] - approved_at[c.instance_id] for c in claims]
    result.stages, result.runs = stages_of(topology, known, approved_at)
    result.calls = dingtalk.metered_calls() - calls_before
    counts = kingdee.bill_counts()
    result.paid = sum(1 for c in claims if counts[c.business_id] == 1)
    twice = [c.business_id for c in claims if counts[c.business_id] > 1]
    if twice or result.paid != len(claims):
        raise SystemExit(f"round {number}: {result.paid} of {len(claims)} claims paid once; paid twice: {twice}")
    return result


def busy(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def summary(values: list[float]) -> str:
    return f"{min(values):.1f}–{statistics.median(values):.1f}–{max(values):.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spread", type=int, default=40, help="approvals one every 2-5 s per round")
    parser.add_argument("--burst", type=int, default=12, help="approvals within a second per round")
    parser.add_argument("--load", type=int, default=0, help="busy processes beside the benchmark")
    parser.add_argument("--setting", action="append", default=[], metavar="AIRFLOW__SECTION__KEY=VALUE",
                        help="an Airflow setting on top of docker/airflow.env (tuning)")
    args = parser.parse_args(argv)
    settings = dict(s.split("=", 1) for s in args.setting)
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"{args.rounds} rounds of {args.spread} spread + {args.burst} burst approvals; busy processes: "
          f"{args.load}; settings: {settings or 'docker/airflow.env'}", flush=True)
    config = TopologyConfig(name=f"bench{uuid.uuid4().hex[:6]}", executor="LocalExecutor", events=True, claims=0,
                            redis_db=REDIS_DB, airflow_settings=settings,
                            state_dir=ROOT / "var" / "bench-events")
    topology = Topology(config)
    stop = multiprocessing.Event()
    loaders = [multiprocessing.Process(target=busy, args=(stop,), daemon=True) for _ in range(args.load)]
    rounds: list[Round] = []
    try:
        with topology:
            api = topology.api()
            api.call("PATCH", f"/dags/{topology.dag_id}", json={"is_paused": False})
            wait_for("the first hourly run", lambda: finished_runs(api, topology.dag_id, set()), 300, 2)
            wait_for("the Stream connection", lambda: DingTalkAdmin(topology.dingtalk.base_url).stream()[
                "open_connections"], 300)
            for loader in loaders:
                loader.start()
            rng = random.Random(20261130)
            for number in range(1, args.rounds + 1):
                result = one_round(topology, number, args.spread, args.burst, rng)
                rounds.append(result)
                lat = result.latencies
                stage_text = ", ".join(f"{name} {statistics.median(v):.1f} s (p95 {percentile(v, 0.95):.1f})"
                                       for name, v in result.stages.items() if v)
                print(f"round {number}: {len(lat)} approvals in {result.seconds:.0f} s; latency median "
                      f"{statistics.median(lat):.1f} s, p95 {percentile(lat, 0.95):.1f} s, max {max(lat):.1f} s; "
                      f"runs {dict(result.runs)}; medians from approval: {stage_text}; DingTalk calls "
                      f"{dict(result.calls)} = {sum(result.calls.values()) / result.paid:.2f} per paid claim; "
                      f"load average {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        stop.set()
        for loader in loaders:
            loader.join(5)
        with contextlib.suppress(Exception):
            topology.drop_databases()
    if rounds:
        print(f"\nover {len(rounds)} rounds (min–median–max): latency median "
              f"{summary([statistics.median(r.latencies) for r in rounds])} s, p95 "
              f"{summary([percentile(r.latencies, 0.95) for r in rounds])} s, max "
              f"{summary([max(r.latencies) for r in rounds])} s; DingTalk calls per paid claim "
              f"{summary([sum(r.calls.values()) / r.paid for r in rounds])}; "
              f"runs per round {summary([sum(r.runs.values()) for r in rounds])}")


if __name__ == "__main__":
    main()
