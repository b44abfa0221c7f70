"""The scheduled hourly extract against the DingTalk emulator on a simulated clock, staging on a real
database: the listing watermark, the read schedule, the daily sweep, the call ledger, the budget and
the monthly quota (90020)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from dk_emulators.dingtalk import CHINA_TZ, DingTalkEmulator

from dingtalk_kingdee import pipeline, staging
from dingtalk_kingdee.hooks.dingtalk import DingTalkHook, RetryPolicy, reset_shared_state
from dingtalk_kingdee.scheme import Scheme, load_scheme

ROOT = Path(__file__).resolve().parents[2]
SCHEME = load_scheme(ROOT / "include" / "schemes" / "expense_to_paybill.yaml")
FAST = RetryPolicy(backoff_base=0.01, backoff_cap=0.02, ban_wait=0.1)
# A whole hour in China time, some days back (the hook refuses starts more than 365 days ago).
T0 = (datetime.now(CHINA_TZ) - timedelta(days=5)).replace(hour=10, minute=0, second=0, microsecond=0)


def with_source(**changes) -> Scheme:
    return SCHEME.model_copy(update={"source": SCHEME.source.model_copy(update=changes)})


def claim(instance_id: str, created: datetime, status: str = "RUNNING") -> dict:
    return {"process_instance_id": instance_id, "process_code": SCHEME.source.process_code,
            "create_time": created.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S"), "status": status,
            "result": "agree" if status == "COMPLETED" else "", "business_id": f"B-{instance_id}",
            "originator_userid": "manager4500", "form_component_values": [], "operation_records": [], "tasks": []}


class Hours:
    """Scheduled hourly runs of extract, each with a fresh hook (one task, one process)."""

    def __init__(self, emulator: DingTalkEmulator, engine, scheme: Scheme) -> None:
        self.emulator, self.engine, self.scheme = emulator, engine, scheme
        self.last_calls: dict[str, int] = {}
        self.workers: int | None = None

    def run(self, end: datetime, scheduled: bool = True, start: datetime | None = None) -> dict:
        self.emulator.set_clock(end + timedelta(minutes=2))  # the run starts just after its interval
        run = pipeline.Run(run_id=f"scheduled__{end.isoformat()}", scheduled=scheduled, window_end=end,
                           window_start=start or end - timedelta(days=self.scheme.source.lookback_days))
        hook = DingTalkHook("dingtalk_default", retry_policy=FAST, max_workers=self.workers)
        counts = pipeline.extract(self.scheme, hook, self.engine, run)
        self.last_calls = {k: v for k, v in hook.call_counts().items() if k != "gettoken"}
        return counts

    def watermark(self) -> datetime | None:
        mark = staging.ReadSchedule(self.engine, self.scheme.id).watermark()
        return mark.listed_until if mark else None


@pytest.fixture
def emulator(monkeypatch):
    reset_shared_state()
    emu = DingTalkEmulator(qps=None, process_codes=[SCHEME.source.process_code])
    emu.set_clock(T0)
    emu.start()
    monkeypatch.setenv("AIRFLOW_CONN_DINGTALK_DEFAULT", json.dumps(emu.connection(qps=200)))
    yield emu
    emu.stop()
    reset_shared_state()


@pytest.fixture
def hours(emulator, staging_url):
    yield Hours(emulator, staging.connect(staging_url), with_source(sweep_hour=None))
    staging.get_engine.cache_clear()


def test_an_idle_hour_costs_one_listing_call_whatever_the_history(emulator, hours):
    emulator.add_instances([claim(f"old{n:03d}", T0 - timedelta(days=20, minutes=n * 7), "COMPLETED")
                            for n in range(120)])
    first = hours.run(T0)  # no watermark yet: the whole look-back, and every unknown claim read
    assert first["listed"] == 120 and first["fetched"] == 120
    assert hours.last_calls == {"processinstance/listids": 6, "processinstance/get": 120}
    assert hours.watermark() == T0

    idle = hours.run(T0 + timedelta(hours=1))
    assert hours.last_calls == {"processinstance/listids": 1}
    assert datetime.fromisoformat(idle["listing_from"]) == T0 - timedelta(minutes=10)
    # The step's own count, as XCom shows it (gettoken, unmetered, only when the token is not cached).
    assert {k: v for k, v in idle["dingtalk_calls"].items() if k != "gettoken"} == {"processinstance/listids": 1}


def test_a_new_claim_waits_an_hour_then_its_reads_double_up_to_the_cap(emulator, hours):
    hours.scheme = with_source(sweep_hour=None, reread_cap_hours=4)
    hours.run(T0)
    emulator.add_instances([claim("slow", T0 + timedelta(minutes=20))])
    reads = []
    for hour in range(1, 16):
        counts = hours.run(T0 + timedelta(hours=hour))
        reads.append(counts["fetched"])
    # Listed at +1 h; read at +2 h, +3 h (1 h), +5 h (2 h), then every 4 h (the cap): +9 h, +13 h.
    assert [h + 1 for h, n in enumerate(reads) if n] == [2, 3, 5, 9, 13]
    emulator.set_outcome("slow", "COMPLETED", "agree", T0 + timedelta(hours=14))
    assert hours.run(T0 + timedelta(hours=17))["fetched"] == 1  # due at +17 h: read, final
    assert staging.ReadSchedule(hours.engine, SCHEME.id).scheduled_count() == 0
    assert hours.run(T0 + timedelta(hours=40))["fetched"] == 0  # never read again


def test_a_missed_hour_is_listed_by_the_next_run(emulator, hours):
    hours.run(T0)
    emulator.add_instances([claim("in-missed-hour", T0 + timedelta(minutes=30), "COMPLETED")])
    counts = hours.run(T0 + timedelta(hours=2))  # the +1 h run never happened
    assert datetime.fromisoformat(counts["listing_from"]) == T0 - timedelta(minutes=10)
    assert counts["new"] == 1
    assert hours.run(T0 + timedelta(hours=3))["fetched"] == 1


def test_a_failed_extract_leaves_the_watermark_and_the_next_run_lists_its_hour(emulator, hours):
    hours.run(T0)
    emulator.add_instances([claim("in-failed-hour", T0 + timedelta(minutes=30), "COMPLETED")])
    emulator.inject("http_500", api="listids", times=None)
    with pytest.raises(Exception, match="listids"):
        hours.run(T0 + timedelta(hours=1))
    assert hours.watermark() == T0
    emulator.clear_faults()
    counts = hours.run(T0 + timedelta(hours=2))
    assert counts["new"] == 1 and hours.watermark() == T0 + timedelta(hours=2)
    ledger = staging.CallLedger(hours.engine)
    # The failed run's calls are in the ledger too: six attempts of one listing call.
    failed_run = ledger.run_calls(SCHEME.id, f"scheduled__{(T0 + timedelta(hours=1)).isoformat()}")
    assert failed_run["processinstance/listids"] == 6


def test_the_overlap_catches_a_claim_that_appears_late_just_before_the_watermark(emulator, hours):
    hours.run(T0)
    # Listed by DingTalk only after the T0 run: started 5 min before T0 (inside the 10 min overlap)
    # and 30 min before T0 (outside it: the daily sweep's job).
    emulator.add_instances([claim("late-5", T0 - timedelta(minutes=5), "COMPLETED"),
                            claim("late-30", T0 - timedelta(minutes=30), "COMPLETED")])
    counts = hours.run(T0 + timedelta(hours=1))
    assert counts["listed"] == 1 and counts["new"] == 1
    assert staging.ReadSchedule(hours.engine, SCHEME.id).unknown_among(["late-5", "late-30"]) == ["late-30"]


def test_the_daily_sweep_finds_a_claim_the_hourly_listing_missed_and_reads_only_that(emulator, hours):
    hours.scheme = with_source(sweep_hour=3)
    night = (T0 + timedelta(days=1)).replace(hour=3)
    emulator.add_instances([claim(f"known{n}", T0 - timedelta(days=2, hours=n), "COMPLETED") for n in range(30)])
    hours.run(night - timedelta(hours=1))  # first run: whole look-back, counts as the sweep
    emulator.add_instances([claim("missed", night - timedelta(hours=6), "COMPLETED")])
    counts = hours.run(night)  # 03:00 China time, but the first run, an hour ago, was that night's sweep
    assert counts["sweep"] is False  # swept 1 h ago: not due again until the next night
    counts = hours.run(night + timedelta(days=1))
    assert counts["sweep"] is True and counts["found_by_sweep"] == 1
    assert hours.last_calls == {"processinstance/listids": 2, "processinstance/get": 1}
    assert counts["fetched"] == 1


def test_an_explicit_window_lists_what_it_asks_and_leaves_the_watermark(emulator, hours):
    emulator.add_instances([claim("week-old", T0 - timedelta(days=7), "COMPLETED"),
                            claim("recent", T0 - timedelta(hours=2), "COMPLETED")])
    hours.run(T0)
    emulator.add_instances([claim("week-old-2", T0 - timedelta(days=7, hours=1), "COMPLETED")])
    counts = hours.run(T0 + timedelta(hours=1), scheduled=False, start=T0 - timedelta(days=8))
    assert counts["listed"] == 3 and counts["fetched"] == 1  # a backfill: the whole window listed
    assert hours.watermark() == T0


def test_near_the_budget_long_running_re_reads_wait_and_at_it_no_call_is_made(emulator, hours):
    hours.scheme = with_source(sweep_hour=None, reread_cap_hours=1, monthly_call_budget=25)
    emulator.add_instances([claim(f"run{n}", T0 - timedelta(hours=3, minutes=n)) for n in range(20)])
    hours.run(T0)  # 1 listing + 20 first reads = 21 of 25: past 80 % of the budget
    counts = hours.run(T0 + timedelta(hours=1))
    assert counts["budget_state"] == "near" and counts["deferred_by_budget"] == 20
    assert hours.last_calls == {"processinstance/listids": 1}
    emulator.add_instances([claim(f"new{n}", T0 + timedelta(hours=1, minutes=n), "COMPLETED") for n in range(12)])
    counts = hours.run(T0 + timedelta(hours=2))  # listed (23 used), first reads due in an hour
    assert counts["new"] == 12 and hours.last_calls == {"processinstance/listids": 1}
    counts = hours.run(T0 + timedelta(hours=3))  # 24 used after listing: one read left, for a new claim
    assert counts["fetched"] == 1 and counts["deferred_by_budget"] == 20 + 11
    assert staging.CallLedger(hours.engine).month_total(staging.month_of(T0)) == 25
    hours.run(T0 + timedelta(hours=4))
    assert hours.last_calls == {}  # at the budget: not a single metered call


def test_quota_exhausted_keeps_what_was_read_and_later_runs_probe_with_one_call(emulator, hours):
    emulator.monthly_quota = 6
    hours.workers = 1  # one read at a time: exactly five answered before the quota runs out
    emulator.add_instances([claim(f"c{n}", T0 - timedelta(hours=5, minutes=n), "COMPLETED") for n in range(10)])
    counts = hours.run(T0)  # 1 listing call + 5 reads, then 90020
    assert counts["quota_exhausted"] is True and counts["fetched"] == 5
    assert hours.last_calls["processinstance/get"] == 6  # 5 answered + the refused one; no retry
    assert hours.watermark() == T0  # the listing itself completed
    month = staging.month_of(T0)
    assert staging.CallLedger(hours.engine).event(month, "quota_exhausted") is not None
    counts = hours.run(T0 + timedelta(hours=1))
    assert counts["quota_exhausted"] is True
    assert hours.last_calls == {"processinstance/listids": 1}  # the probe
    emulator.monthly_quota = None  # the organisation bought a pack
    counts = hours.run(T0 + timedelta(hours=2))
    assert counts.get("quota_exhausted") is None and counts["fetched"] == 5  # the five still due
    assert staging.CallLedger(hours.engine).event(month, "quota_exhausted") is None


def test_a_listed_instance_id_holding_a_nul_is_counted_unstorable_and_the_others_are_read(emulator, hours):
    """The read schedule cannot hold it (PostgreSQL text refuses NUL): reported, never silently dropped."""
    emulator.add_instances([claim("ok1", T0 - timedelta(minutes=30), "COMPLETED"),
                            claim("bad\x00id", T0 - timedelta(minutes=20), "COMPLETED")])
    counts = hours.run(T0)
    assert counts["unstorable"] == ["bad\\x00id"]
    assert counts["fetched"] == 1 and counts["listed"] == 1
    assert staging.SchemeStaging(hours.engine, SCHEME.id).final_among(["ok1"]) == {"ok1"}
