"""A month of hourly runs in minutes: DingTalk calls spent by today's look-back listing and by the
incremental listing with its read schedule, side by side.

The DingTalk emulator runs on a clock this script controls and with no QPS limit; a generator starts
claims through a 30-day month (working hours, China time), each decided after a delay from minutes to
10 days (approved, refused, withdrawn, terminated) or never decided. 720 scheduled hourly runs of the
real pipeline (extract → transform → load → write_back → report, DingTalkHook and KingdeeHook against
the emulators, staging on SQLite or ``--staging-url``) go by; a few hours fail their listing. Printed per
mode and volume: DingTalk calls by API, calls per paid claim, the largest run, idle-run calls, the delay
from approval to bill (median, p95, max), claims lost or paid twice.

    python bench/bench_month.py [--claims 300 1000 5000] [--modes lookback incremental] [--budget N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from dk_emulators.dingtalk import CHINA_TZ, DingTalkEmulator  # noqa: E402
from dk_emulators.dingtalk.seed import SeedConfig, generate_claims  # noqa: E402
from dk_emulators.kingdee import KingdeeEmulator  # noqa: E402

from dingtalk_kingdee import pipeline, staging  # noqa: E402
from dingtalk_kingdee.errors import IntegrationError  # noqa: E402
from dingtalk_kingdee.hooks.dingtalk import DingTalkHook, RetryPolicy, reset_shared_state  # noqa: E402
from dingtalk_kingdee.hooks.kingdee import KingdeeHook  # noqa: E402
from dingtalk_kingdee.scheme import load_scheme  # noqa: E402
from dingtalk_kingdee.staging import BillState  # noqa: E402

HOURS = 720  # the month; --hours plays only its first hours (a quick look)
FAST = RetryPolicy(backoff_base=0.001, backoff_cap=0.002)
# Decided claims: outcome → share (the rest, "never", stay RUNNING all month).
OUTCOMES = {"agree": 0.76, "refuse": 0.08, "canceled": 0.05, "terminated": 0.04, "never": 0.07}
STATUS_OF = {"agree": ("COMPLETED", "agree"), "refuse": ("COMPLETED", "refuse"), "canceled": ("CANCELED", ""),
             "terminated": ("TERMINATED", "")}


@dataclass
class Planned:
    instance: dict
    started: datetime
    outcome: str
    decided: datetime | None  # None: never decided
    payable: bool


@dataclass
class Result:
    mode: str
    claims: int
    calls: Counter = field(default_factory=Counter)
    per_run: list[int] = field(default_factory=list)
    idle_runs: list[int] = field(default_factory=list)  # no claim started or decided in the hour
    quiet_runs: list[int] = field(default_factory=list)  # idle, and (incremental) no read due, no sweep
    delays_h: list[float] = field(default_factory=list)
    paid: int = 0
    lost: list[str] = field(default_factory=list)
    paid_twice: int = 0
    failed_hours: int = 0
    deferred_by_budget: int = 0
    seconds: float = 0.0


def month_start() -> datetime:
    """The 1st of a month two months back (within DingTalk's 365-day listing limit), China time."""
    now = datetime.now(CHINA_TZ)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for _ in range(2):
        first = (first - timedelta(days=1)).replace(day=1)
    return first


def working_time(rng: random.Random, start: datetime) -> datetime:
    """A moment in working hours (Mon-Fri 09:00-18:00 China time) of the 30 days from ``start``."""
    while True:
        moment = start + timedelta(seconds=rng.uniform(0, HOURS * 3600))
        if moment.weekday() < 5 and 9 <= moment.hour < 18:
            return moment


def plan_claims(count: int, start: datetime, seed: int) -> list[Planned]:
    rng = random.Random(seed)
    seeded = generate_claims(SeedConfig(count=count, seed=seed, start=start, end=start + timedelta(days=30),
                                        status_weights={"agree": 1.0}, edge_rate=0.0))
    planned = []
    for claim in seeded:
        instance = dict(claim.instance)
        started = working_time(rng, start)
        outcome = rng.choices(list(OUTCOMES), weights=list(OUTCOMES.values()))[0]
        # Decision delay log-uniform from 5 minutes to 10 days (median about 7 hours).
        delay = timedelta(minutes=math.exp(rng.uniform(math.log(5), math.log(10 * 24 * 60))))
        instance.update(create_time=started.strftime("%Y-%m-%d %H:%M:%S"), status="RUNNING", result="")
        instance.pop("finish_time", None)
        planned.append(Planned(instance, started, outcome, None if outcome == "never" else started + delay,
                               claim.truth.payable and outcome == "agree"))
    planned.sort(key=lambda p: p.started)
    return planned


def simulate(mode: str, planned: list[Planned], start: datetime, args: argparse.Namespace) -> Result:
    reset_shared_state()
    result = Result(mode, len(planned))
    scheme = load_scheme(ROOT / "include" / "schemes" / "expense_to_paybill.yaml")
    changes: dict = {"listing": mode}
    if args.budget is not None:
        changes["monthly_call_budget"] = args.budget
    scheme = scheme.model_copy(update={"source": scheme.source.model_copy(update=changes)})
    dingtalk = DingTalkEmulator(qps=None, process_codes=[scheme.source.process_code])
    kingdee = KingdeeEmulator(basedata=ROOT / "include" / "demo" / "kingdee_basedata.json", db_path=":memory:")
    dingtalk.set_clock(start)
    dingtalk.start()
    kingdee.start()
    os.environ["AIRFLOW_CONN_DINGTALK_DEFAULT"] = json.dumps(dingtalk.connection(qps=1000))
    os.environ["AIRFLOW_CONN_KINGDEE_DEFAULT"] = json.dumps(kingdee.connection())
    rng = random.Random(args.seed + 1)
    failing = set(rng.sample(range(24, max(25, args.hours - 48)), args.failed_hours))
    by_id = {p.instance["process_instance_id"]: p for p in planned}
    decisions = sorted((p.decided, p) for p in planned if p.decided is not None)
    billed_at: dict[str, datetime] = {}
    next_claim = next_decision = 0
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["DK_VAR_DIR"] = scratch
        engine = staging.connect(args.staging_url or f"sqlite:///{Path(scratch) / 'staging.db'}")
        staged = staging.SchemeStaging(engine, scheme.id)
        for hour in range(1, args.hours + 1):
            end = start + timedelta(hours=hour)
            fresh = []
            while next_claim < len(planned) and planned[next_claim].started < end:
                fresh.append(planned[next_claim].instance)
                next_claim += 1
            dingtalk.set_clock(end)
            if fresh:
                dingtalk.add_instances(fresh)
            decided = 0
            while next_decision < len(decisions) and decisions[next_decision][0] < end:
                moment, claim = decisions[next_decision]
                status, verdict = STATUS_OF[claim.outcome]
                dingtalk.set_outcome(claim.instance["process_instance_id"], status, verdict, moment)
                next_decision += 1
                decided += 1
            dingtalk.set_clock(end + timedelta(minutes=2))
            if hour in failing:
                dingtalk.inject("http_500", api="listids", times=None)
            run = pipeline.Run(run_id=f"scheduled__{end.isoformat()}", window_start=end - timedelta(days=30),
                               window_end=end, scheduled=True)
            hook = DingTalkHook("dingtalk_default", retry_policy=FAST)
            try:
                summary = pipeline.run_all(scheme, hook, KingdeeHook("kingdee_default"), engine, run)
            except IntegrationError:
                summary = None
                result.failed_hours += 1
            dingtalk.clear_faults()
            made = sum(n for api, n in hook.call_counts().items() if api != "gettoken")
            result.per_run.append(made)
            if not fresh and not decided:
                result.idle_runs.append(made)
            if summary is not None and not fresh and not decided:
                extracted = summary["steps"]["extract"]
                if not extracted.get("due") and not extracted.get("new") and not extracted.get("sweep"):
                    result.quiet_runs.append(made)
            if summary is not None:
                result.deferred_by_budget += summary["steps"]["extract"].get("deferred_by_budget", 0)
                if summary["steps"]["load"].get("loaded"):
                    for instance_id in staged.bills(BillState.LOADED):
                        billed_at.setdefault(instance_id, end)
        engine.dispose()
    result.seconds = time.perf_counter() - began
    # The last run's calls are dated just after the month: every month the emulator metered counts.
    for month in dingtalk.usage()["months"].values():
        result.calls.update(month["by_api"])
    paid = Counter(str(b["FTHIRDBILLNO"]) for b in kingdee.bills("AP_PAYBILL"))
    result.paid = len(paid)
    result.paid_twice = sum(1 for n in paid.values() if n > 1)
    horizon = start + timedelta(hours=args.hours) - timedelta(hours=scheme.source.reread_cap_hours + 2)
    for instance_id, claim in by_id.items():
        if not claim.payable or claim.decided is None:
            continue
        if instance_id in billed_at:
            result.delays_h.append((billed_at[instance_id] - claim.decided).total_seconds() / 3600)
        elif claim.decided < horizon:
            result.lost.append(instance_id)
    dingtalk.stop()
    kingdee.stop()
    return result


def pct(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def show(results: list[Result], budget: int | None) -> None:
    apis = sorted({api for r in results for api in r.calls})
    print(f"{'claims':>6} {'mode':<11} {'total':>7} " + " ".join(f"{a:>9}" for a in apis)
          + f" {'per paid':>8} {'largest':>7} {'idle med/max':>12} {'quiet max':>9} {'delay h med/p95/max':>20} "
          + f"{'paid':>5} {'lost':>4} {'twice':>5} {'deferred':>8} {'secs':>6}")
    for r in results:
        total = sum(r.calls.values())
        idle = f"{statistics.median(r.idle_runs):.0f}/{max(r.idle_runs)}" if r.idle_runs else "-"
        delay = (f"{statistics.median(r.delays_h):.1f}/{pct(r.delays_h, 0.95):.1f}/{max(r.delays_h):.1f}"
                 if r.delays_h else "-")
        print(f"{r.claims:>6} {r.mode:<11} {total:>7} " + " ".join(f"{r.calls.get(a, 0):>9}" for a in apis)
              + f" {total / max(r.paid, 1):>8.1f} {max(r.per_run):>7} {idle:>12} "
              + f"{max(r.quiet_runs) if r.quiet_runs else '-':>9} {delay:>20} "
              + f"{r.paid:>5} {len(r.lost):>4} {r.paid_twice:>5} {r.deferred_by_budget:>8} {r.seconds:>6.0f}")
    print(f"budget: {budget if budget is not None else 'scheme default'}; API columns: metered calls "
          "(gettoken, unmetered, not shown); idle: runs of hours in which no claim started or was decided; "
          "quiet: idle runs with no read due and no sweep; lost = payable, decided before the last "
          "(cap + 2) hours played, never billed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--modes", nargs="+", default=["lookback", "incremental"],
                        choices=["lookback", "incremental"])
    parser.add_argument("--budget", type=int, default=None, help="monthly_call_budget (default: the scheme's)")
    parser.add_argument("--failed-hours", type=int, default=4, help="hours whose listing fails (HTTP 500)")
    parser.add_argument("--staging-url", default="")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--hours", type=int, default=HOURS, help="hourly runs to play (default: the month)")
    args = parser.parse_args()
    start = month_start()
    print(f"month from {start.isoformat()}, {args.hours} hourly runs; machine: {platform.node()} "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"staging {'given URL' if args.staging_url else 'SQLite'}")
    results = []
    for count in args.claims:
        planned = plan_claims(count, start, args.seed)
        for mode in args.modes:
            results.append(simulate(mode, planned, start, args))
            show(results[-1:], args.budget)
    print()
    show(results, args.budget)


if __name__ == "__main__":
    main()
