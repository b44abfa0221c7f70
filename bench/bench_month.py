"""A month of hourly runs in minutes: DingTalk calls spent by today's look-back listing, by the
incremental listing with its read schedule, and by event mode, side by side.

The DingTalk emulator runs on a clock this script controls and with no QPS limit; a generator starts
claims through a 30-day month (working hours, China time), each decided after a delay from minutes to
10 days (approved, refused, withdrawn, terminated) or never decided. 720 scheduled hourly runs of the
real pipeline (extract → transform → load → write_back → report, DingTalkHook and KingdeeHook against
the emulators, staging on SQLite or ``--staging-url``) go by; a few hours fail their listing.
``--history-days N`` (default 30) starts the month warm, as a deployment that has run before: the
claims of the N days before it (same generator, same rate) are in the emulator, those decided before
the month already staged and billed by one run at the month's eve (its calls are not counted), the
others still running with their read schedule, decided during the month; so the look-back window is
full from the first hour.
Printed per mode and volume: DingTalk calls by API, calls per paid claim, the largest run, idle-run calls, the delay
from approval to bill (median, p95, max), claims lost or paid twice.

    python bench/bench_month.py [--claims 300 1000 5000] [--modes lookback incremental] [--budget N]
                                [--history-days 30] [--seed N]
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
from dk_emulators.dingtalk.stream_frames import approval_event_body, event_type_for  # noqa: E402
from dk_emulators.kingdee import KingdeeEmulator  # noqa: E402

from dingtalk_kingdee import pipeline, staging  # noqa: E402
from dingtalk_kingdee.dag_factory import ASSET_TRIGGERED, catch_up_since, plan_run  # noqa: E402
from dingtalk_kingdee.errors import IntegrationError  # noqa: E402
from dingtalk_kingdee.events.approval import APPROVAL_EVENT_TYPE, approval_verdict  # noqa: E402
from dingtalk_kingdee.hooks.dingtalk import DingTalkHook, RetryPolicy, reset_shared_state  # noqa: E402
from dingtalk_kingdee.hooks.dingtalk_stream_frames import StreamEvent  # noqa: E402
from dingtalk_kingdee.hooks.kingdee import KingdeeHook  # noqa: E402
from dingtalk_kingdee.scheme import EventsSpec, Scheme, load_scheme  # noqa: E402
from dingtalk_kingdee.staging import BillState  # noqa: E402

HOURS = 720  # the month; --hours plays only its first hours (a quick look)
FAST = RetryPolicy(backoff_base=0.001, backoff_cap=0.002)
# A run's trigger form left as it is: what the DAG's own runs plan with.
PARAMS = {"dry_run": False, "window_start": None, "window_end": None, "instance_ids": [], "replay_rejected": False}
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
    event_runs: int = 0
    event_calls: Counter = field(default_factory=Counter)  # metered calls of the event-triggered runs
    events_lost: int = 0
    lost_caught: list[float] = field(default_factory=list)  # delay (h) of the claims whose event was lost
    events_orphaned: int = 0
    orphan_caught: list[float] = field(default_factory=list)  # delay (h) of the claims whose event had no run


@dataclass
class AssetEvents:
    """The approval asset's events Airflow recorded (time, payload), and the claims of those it handed
    to no run (``--orphaned-events``: the run-queue race); every run takes the recent ones along."""

    recorded: list[tuple[datetime, dict]] = field(default_factory=list)
    orphans: set[str] = field(default_factory=set)

    def recent(self, scheme, when: datetime) -> list[dict]:
        """What the plan task's inlet read returns at ``when``: the events since the catch-up span."""
        since = catch_up_since(scheme, when)
        return [payload for moment, payload in self.recorded if since <= moment <= when]


def month_start() -> datetime:
    """The 1st of a month two months back (within DingTalk's 365-day listing limit), China time."""
    now = datetime.now(CHINA_TZ)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for _ in range(2):
        first = (first - timedelta(days=1)).replace(day=1)
    return first


def working_time(rng: random.Random, start: datetime, days: int = 30) -> datetime:
    """A moment in working hours (Mon-Fri 09:00-18:00 China time) of the ``days`` days from ``start``."""
    while True:
        moment = start + timedelta(seconds=rng.uniform(0, days * 86400))
        if moment.weekday() < 5 and 9 <= moment.hour < 18:
            return moment


def plan_claims(count: int, start: datetime, seed: int, days: int = 30) -> list[Planned]:
    rng = random.Random(seed)
    seeded = generate_claims(SeedConfig(count=count, seed=seed, start=start, end=start + timedelta(days=days),
                                        status_weights={"agree": 1.0}, edge_rate=0.0))
    planned = []
    for claim in seeded:
        instance = dict(claim.instance)
        started = working_time(rng, start, days)
        outcome = rng.choices(list(OUTCOMES), weights=list(OUTCOMES.values()))[0]
        # Decision delay log-uniform from 5 minutes to 10 days (median about 7 hours).
        delay = timedelta(minutes=math.exp(rng.uniform(math.log(5), math.log(10 * 24 * 60))))
        instance.update(create_time=started.strftime("%Y-%m-%d %H:%M:%S"), status="RUNNING", result="")
        instance.pop("finish_time", None)
        planned.append(Planned(instance, started, outcome, None if outcome == "never" else started + delay,
                               claim.truth.payable and outcome == "agree"))
    planned.sort(key=lambda p: p.started)
    return planned


def plan_history(count: int, start: datetime, seed: int, days: int) -> list[Planned]:
    """The claims of the ``days`` days before the month, at the month's rate (``count`` per 30 days)."""
    if days <= 0:
        return []
    return plan_claims(round(count * days / 30), start - timedelta(days=days), seed + 1000, days)


def month_scheme(mode: str, args: argparse.Namespace) -> Scheme:
    """The shipped scheme with the mode's listing (event mode: incremental listing, events on, with the
    event settings given on the command line, else the scheme's defaults) and the budget asked for."""
    scheme = load_scheme(ROOT / "include" / "schemes" / "expense_to_paybill.yaml")
    changes: dict = {"listing": "incremental" if mode == "events" else mode}
    if args.budget is not None:
        changes["monthly_call_budget"] = args.budget
    update: dict = {"source": scheme.source.model_copy(update=changes)}
    if mode == "events":
        settings = {key: getattr(args, key) for key in EVENT_SETTINGS if getattr(args, key) is not None}
        update["events"] = EventsSpec(enabled=True, **settings)
    return scheme.model_copy(update=update)


# Event settings the command line may change (``--listing-every-hours`` ...).
EVENT_SETTINGS = ("listing_every_hours", "safety_reread_hours", "safety_reread_cap_hours", "sweep_every_days",
                  "sweep_window_days")


def pushed_event(updated: dict, process_code: str) -> dict | None:
    """The payload the approval event trigger yields for the event the emulator pushes when an instance
    reaches ``updated``'s outcome (None: no settling event, or not this template's)."""
    kind = event_type_for(updated["status"])
    if kind is None:
        return None
    body = approval_event_body(updated, kind)
    instance_id = updated["process_instance_id"]
    event = StreamEvent(message_id=f"m-{instance_id}", event_id=f"e-{instance_id}", event_type=APPROVAL_EVENT_TYPE,
                        born_time=None, topic="*", body=body)
    return approval_verdict(event, process_code).payload


def simulate(mode: str, planned: list[Planned], start: datetime, args: argparse.Namespace,
             history: list[Planned] = ()) -> Result:
    reset_shared_state()
    result = Result(mode, len(planned))
    scheme = month_scheme(mode, args)
    dingtalk = DingTalkEmulator(qps=None, process_codes=[scheme.source.process_code])
    kingdee = KingdeeEmulator(basedata=ROOT / "include" / "demo" / "kingdee_basedata.json", db_path=":memory:")
    dingtalk.set_clock(start)
    dingtalk.start()
    kingdee.start()
    os.environ["AIRFLOW_CONN_DINGTALK_DEFAULT"] = json.dumps(dingtalk.connection(qps=1000))
    os.environ["AIRFLOW_CONN_KINGDEE_DEFAULT"] = json.dumps(kingdee.connection())
    rng = random.Random(args.seed + 1)
    failing = set(rng.sample(range(24, max(25, args.hours - 48)), args.failed_hours))
    by_id = {p.instance["process_instance_id"]: p for p in [*history, *planned]}
    decisions = sorted(((p.decided, p) for p in by_id.values() if p.decided is not None and p.decided >= start),
                       key=lambda d: d[0])
    billed_at: dict[str, datetime] = {}
    lost_ids: set[str] = set()
    assets = AssetEvents()
    rng_events = random.Random(args.seed + 2)
    next_claim = next_decision = 0
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["DK_VAR_DIR"] = scratch
        engine = staging.connect(args.staging_url or f"sqlite:///{Path(scratch) / 'staging.db'}")
        staged = staging.SchemeStaging(engine, scheme.id)
        before = warm_up(dingtalk, kingdee, scheme, engine, staged, history, start, billed_at)
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
            minute: list[tuple[datetime, Planned]] = []
            while next_decision < len(decisions) and decisions[next_decision][0] < end:
                minute.append(decisions[next_decision])
                next_decision += 1
                decided += 1
                at_end = next_decision >= len(decisions) or decisions[next_decision][0] >= end
                if at_end or _minute(decisions[next_decision][0]) != _minute(minute[0][0]):
                    decide(dingtalk, minute, scheme, engine, staged, result, billed_at, lost_ids, rng_events, args,
                           assets)
                    minute = []
            dingtalk.set_clock(end + timedelta(minutes=2))
            if hour in failing:
                dingtalk.inject("http_500", api="listids", times=None)
            run = pipeline.Run(run_id=f"scheduled__{end.isoformat()}", window_start=end - timedelta(days=30),
                               window_end=end, scheduled=True)
            if scheme.events.enabled:   # the hourly run takes the recent asset events along, as the DAG's plan
                run = plan_run(scheme, run.run_id, PARAMS, end, end, "scheduled",
                               caught_up_payloads=assets.recent(scheme, end))
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
    result.calls = metered_calls(dingtalk) - before.calls
    paid = Counter(str(b["FTHIRDBILLNO"]) for b in kingdee.bills("AP_PAYBILL"))
    result.paid = len(paid) - before.bills
    result.paid_twice = sum(1 for n in paid.values() if n > 1)
    horizon = start + timedelta(hours=args.hours) - timedelta(hours=longest_wait_hours(scheme) + 2)
    for instance_id, claim in by_id.items():
        if not claim.payable or claim.decided is None:
            continue
        if instance_id in billed_at:
            if claim.decided < start:   # billed before the month (warm start): no delay of the month
                continue
            delay = (billed_at[instance_id] - claim.decided).total_seconds() / 3600
            result.delays_h.append(delay)
            if instance_id in lost_ids:
                result.lost_caught.append(delay)
            if instance_id in assets.orphans:
                result.orphan_caught.append(delay)
        elif claim.decided < horizon:
            result.lost.append(instance_id)
    dingtalk.stop()
    kingdee.stop()
    return result


def metered_calls(dingtalk: DingTalkEmulator) -> Counter:
    """Every metered call the emulator counted, by API, all months together."""
    calls: Counter = Counter()
    for month in dingtalk.usage()["months"].values():
        calls.update(month["by_api"])
    return calls


@dataclass
class WarmStart:
    """What the month's eve left: metered calls and Kingdee bills made before the month (not counted)."""

    calls: Counter = field(default_factory=Counter)
    bills: int = 0


def warm_up(dingtalk: DingTalkEmulator, kingdee: KingdeeEmulator, scheme: Scheme, engine, staged,
            history: list[Planned], start: datetime, billed_at: dict[str, datetime]) -> WarmStart:
    """The state a deployment running before the month has at its start: the history's claims in the
    emulator with the decisions made before the month, and one scheduled run at the month's eve (whose
    first listing reads them all: staged, billed when payable, the undecided ones in the read schedule).
    Its calls fall in the previous month (the month's budget is untouched) and are left out."""
    if not history:
        return WarmStart()
    dingtalk.set_clock(history[0].started)
    dingtalk.add_instances([p.instance for p in history])
    for claim in sorted((p for p in history if p.decided is not None and p.decided < start), key=lambda p: p.decided):
        status, verdict = STATUS_OF[claim.outcome]
        dingtalk.set_clock(claim.decided)
        dingtalk.set_outcome(claim.instance["process_instance_id"], status, verdict, claim.decided)
    eve = start - timedelta(minutes=1)
    dingtalk.set_clock(eve)
    run = pipeline.Run(run_id=f"scheduled__{eve.isoformat()}", window_start=eve - timedelta(days=30),
                       window_end=eve, scheduled=True)
    pipeline.run_all(scheme, DingTalkHook("dingtalk_default", retry_policy=FAST), KingdeeHook("kingdee_default"),
                     engine, run)
    for instance_id in staged.bills(BillState.LOADED):
        billed_at.setdefault(instance_id, eve)
    return WarmStart(metered_calls(dingtalk), len({str(b["FTHIRDBILLNO"]) for b in kingdee.bills("AP_PAYBILL")}))


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def longest_wait_hours(scheme: Scheme) -> int:
    """The longest a decided claim can wait for a read: the re-read cap, or in event mode (a lost event)
    the safety cap plus the listing cadence."""
    if scheme.events.enabled:
        return scheme.events.safety_reread_cap_hours + scheme.events.listing_every_hours
    return scheme.source.reread_cap_hours


def decide(dingtalk: DingTalkEmulator, minute: list[tuple[datetime, Planned]], scheme: Scheme, engine, staged,
           result: Result, billed_at: dict[str, datetime], lost_ids: set[str], rng: random.Random,
           args: argparse.Namespace, assets: AssetEvents) -> None:
    """The decisions of one simulated minute; in event mode, then the event-triggered run of their events,
    at the end of that minute (a share of the events lost on the way)."""
    payloads = []
    for moment, claim in minute:
        status, verdict = STATUS_OF[claim.outcome]
        if scheme.events.enabled:   # the event run comes a minute after; the hourly modes keep the hour's end
            dingtalk.set_clock(moment)
        updated = dingtalk.set_outcome(claim.instance["process_instance_id"], status, verdict, moment)
        payload = pushed_event(updated, scheme.source.process_code) if scheme.events.enabled else None
        if payload is None:
            continue
        if rng.random() < args.lost_events:
            result.events_lost += 1
            lost_ids.add(payload["instance_id"])
            continue
        assets.recorded.append((moment, payload))
        if args.orphaned_events and rng.random() < args.orphaned_events:
            result.events_orphaned += 1
            assets.orphans.add(payload["instance_id"])
            continue
        payloads.append(payload)
    if not payloads:
        return
    when = _minute(minute[-1][0]) + timedelta(minutes=1)
    dingtalk.set_clock(when)
    run = plan_run(scheme, f"{ASSET_TRIGGERED}__{when.isoformat()}", PARAMS, None, when, ASSET_TRIGGERED,
                   event_payloads=payloads, caught_up_payloads=assets.recent(scheme, when))
    hook = DingTalkHook("dingtalk_default", retry_policy=FAST)
    pipeline.run_all(scheme, hook, KingdeeHook("kingdee_default"), engine, run)
    result.event_runs += 1
    result.event_calls.update({api: n for api, n in hook.call_counts().items() if api != "gettoken"})
    for instance_id in staged.bills(BillState.LOADED, run.instance_ids):
        billed_at.setdefault(instance_id, when)


def pct(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def show(results: list[Result], budget: int | None) -> None:
    apis = sorted({api for r in results for api in r.calls})
    print(f"{'claims':>6} {'mode':<11} {'total':>7} " + " ".join(f"{a:>9}" for a in apis)
          + f" {'get/event':>9} {'per paid':>8} {'largest':>7} {'idle med/max':>12} {'quiet max':>9} "
          + f"{'delay h med/p95/max':>20} {'paid':>5} {'lost':>4} {'twice':>5} {'deferred':>8} {'ev runs':>7} "
          + f"{'ev lost':>7} {'lost-ev delay h max':>19} {'orphaned':>8} {'orphan delay h max':>18} {'secs':>6}")
    for r in results:
        total = sum(r.calls.values())
        idle = f"{statistics.median(r.idle_runs):.0f}/{max(r.idle_runs)}" if r.idle_runs else "-"
        delay = (f"{statistics.median(r.delays_h):.2f}/{pct(r.delays_h, 0.95):.2f}/{max(r.delays_h):.2f}"
                 if r.delays_h else "-")
        caught = f"{max(r.lost_caught):.1f}" if r.lost_caught else "-"
        orphan = f"{max(r.orphan_caught):.2f}" if r.orphan_caught else "-"
        print(f"{r.claims:>6} {r.mode:<11} {total:>7} " + " ".join(f"{r.calls.get(a, 0):>9}" for a in apis)
              + f" {sum(n for a, n in r.event_calls.items() if a.endswith('get')):>9}"
              + f" {total / max(r.paid, 1):>8.2f} {max(r.per_run):>7} {idle:>12} "
              + f"{max(r.quiet_runs) if r.quiet_runs else '-':>9} {delay:>20} "
              + f"{r.paid:>5} {len(r.lost):>4} {r.paid_twice:>5} {r.deferred_by_budget:>8} {r.event_runs:>7} "
              + f"{r.events_lost:>7} {caught:>19} {r.events_orphaned:>8} {orphan:>18} {r.seconds:>6.0f}")
    print(f"budget: {budget if budget is not None else 'scheme default'}; API columns: metered calls "
          "(gettoken, unmetered, not shown); get/event: detail reads made by event-triggered runs (the rest of "
          "get: hourly reads); largest: the largest hourly run; idle: hourly runs of hours in which no claim "
          "started or was decided; quiet: idle runs with no read due and no sweep; lost = payable, decided "
          "before the last (longest wait + 2) hours played, never billed; ev lost: events dropped on purpose "
          "(--lost-events), their claims' longest delay in the next column; orphaned: events recorded but handed to "
          "no run (--orphaned-events), their payable claims' longest delay")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--modes", nargs="+", default=["lookback", "incremental"],
                        choices=["lookback", "incremental", "events"])
    parser.add_argument("--lost-events", type=float, default=0.01,
                        help="event mode: share of the approval events lost on the way (default 0.01)")
    parser.add_argument("--orphaned-events", type=float, default=0.0,
                        help="event mode: share of the recorded asset events Airflow hands to no run (the "
                             "run-queue race; default 0): only the runs' catch-up of recent events bills them")
    for key in EVENT_SETTINGS:
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, default=None,
                            help=f"event mode: events.{key} (default: the scheme's)")
    parser.add_argument("--budget", type=int, default=None, help="monthly_call_budget (default: the scheme's)")
    parser.add_argument("--failed-hours", type=int, default=4, help="hours whose listing fails (HTTP 500)")
    parser.add_argument("--staging-url", default="")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--hours", type=int, default=HOURS, help="hourly runs to play (default: the month)")
    parser.add_argument("--history-days", type=int, default=30,
                        help="days of claims before the month, as a deployment already running has them "
                             "(0: the month starts empty)")
    args = parser.parse_args()
    start = month_start()
    print(f"month from {start.isoformat()}, {args.hours} hourly runs; machine: {platform.node()} "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"staging {'given URL' if args.staging_url else 'SQLite'}, history {args.history_days} days, "
          f"seed {args.seed}")
    results = []
    for count in args.claims:
        planned = plan_claims(count, start, args.seed)
        history = plan_history(count, start, args.seed, args.history_days)
        for mode in args.modes:
            results.append(simulate(mode, planned, start, args, history))
            show(results[-1:], args.budget)
    print()
    show(results, args.budget)


if __name__ == "__main__":
    main()
