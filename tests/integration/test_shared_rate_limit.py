"""One DingTalk budget per app across processes: two extracts in two processes at once against the
emulator's enforced 20 calls/s, paced through Redis (real Redis on 127.0.0.1:6379, real HTTP, real
staging SQL). The control runs the same two processes pacing alone and shows the emulator throttling
them, so the shared case can fail."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dk_emulators.dingtalk import CHINA_TZ, DingTalkEmulator

from dingtalk_kingdee import staging
from dingtalk_kingdee.hooks import dingtalk_pacing
from dingtalk_kingdee.staging import CallLedger, month_of

redis = pytest.importorskip("redis")

REDIS_URL = os.environ.get("DK_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
WORKER = Path(__file__).with_name("shared_budget_worker.py")
SCHEMES = {"budget_a": "PROC-BUDGET-A", "budget_b": "PROC-BUDGET-B"}
CLAIMS_PER_SCHEME = 80


def redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")


def claim(instance_id: str, process_code: str, created: datetime) -> dict:
    return {"process_instance_id": instance_id, "process_code": process_code,
            "create_time": created.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S"), "status": "COMPLETED",
            "result": "agree", "business_id": f"B-{instance_id}", "originator_userid": "manager4500",
            "form_component_values": [], "operation_records": [], "tasks": []}


@pytest.fixture
def emulator():
    emu = DingTalkEmulator(qps=20, process_codes=list(SCHEMES.values()))
    created = datetime.now(UTC) - timedelta(hours=20)
    emu.add_instances([claim(f"{code}-{n:03d}", code, created + timedelta(minutes=n))
                       for code in SCHEMES.values() for n in range(CLAIMS_PER_SCHEME)])
    emu.start()
    yield emu
    emu.stop()


def sync_at_once(emu: DingTalkEmulator, staging_url: str, redis_url: str) -> list[dict]:
    """Both schemes' extracts, each in its own process, released at the same moment."""
    staging.connect(staging_url)  # the tables exist before the two processes start
    env = {**os.environ, "AIRFLOW_CONN_DINGTALK_DEFAULT": json.dumps(emu.connection()),
           "DK_RATE_LIMIT_REDIS_URL": redis_url}
    procs = [subprocess.Popen([sys.executable, str(WORKER), staging_url, scheme_id, code], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for scheme_id, code in SCHEMES.items()]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc in procs:
        assert proc.returncode == 0, "an extract failed (a throttling answer must never fail a task)"
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def test_two_processes_share_one_budget_through_redis(emulator, staging_url):
    redis_or_skip()
    counts = sync_at_once(emulator, staging_url, REDIS_URL)
    for scheme_counts in counts:
        assert scheme_counts["fetched"] == CLAIMS_PER_SCHEME
    state = emulator.state()
    print(f"shared limiter: calls {state['calls']}, throttled {state['throttled']}")
    assert state["throttled"] == {}, "the two processes together went over the app's 20 calls/s"
    ledger_total = CallLedger(staging.connect(staging_url)).month_total(month_of(datetime.now(UTC)))
    assert ledger_total == emulator.usage()["used"] == 2 * (CLAIMS_PER_SCHEME + CLAIMS_PER_SCHEME // 20)


def test_control_two_processes_pacing_alone_are_throttled(emulator, staging_url):
    counts = sync_at_once(emulator, staging_url, "")
    for scheme_counts in counts:
        assert scheme_counts["fetched"] == CLAIMS_PER_SCHEME  # the hook waits out the throttling
    throttled = emulator.state()["throttled"]
    print(f"in-process limiters: throttled {throttled}")
    assert throttled.get("get", 0) > 0  # the emulator names APIs by their last path part


def test_an_unreachable_redis_falls_back_to_pacing_in_process(caplog):
    dingtalk_pacing.reset_shared_state()
    limiter = dingtalk_pacing.shared_limiter("http://h", "app-fallback", "processinstance/get", 20,
                                             "redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            limiter.acquire()
        limiter.penalize(0.01)
        limiter.acquire()
    warnings = [r.getMessage() for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1  # warned once, not per call
    dingtalk_pacing.reset_shared_state()
