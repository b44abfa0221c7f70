"""Throughput of DingTalkHook.get_instances against the emulator's per-app QPS limit.

Starts the DingTalk emulator in this process (qps=20, added latency 50 / 100 / 200 ms), seeds
instances, fetches them all with ``get_instances`` and prints instances/s against the limit.
Target: at least 90 % of the limit at every latency.

    python bench/bench_dingtalk.py [--count 200] [--latencies 50,100,200] [--qps 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from datetime import UTC, datetime, timedelta, timezone

from dk_emulators.dingtalk import DingTalkEmulator

from dingtalk_kingdee.hooks.dingtalk import DingTalkHook, reset_shared_state

CHINA = timezone(timedelta(hours=8))
CONN_ID = "dingtalk_bench"


def seed(count: int) -> list[dict]:
    created = datetime.now(UTC) - timedelta(days=2)
    return [{
        "process_instance_id": f"bench-{number:06d}",
        "process_code": "PROC-EXPENSE-DEMO",
        "title": f"报销单 {number}",
        "create_time": (created + timedelta(seconds=number)).astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S"),
        "status": "COMPLETED",
        "result": "agree",
        "business_id": f"2024{number:017d}",
        "form_component_values": [{"name": "报销金额", "value": "150", "component_type": "MoneyField"}],
    } for number in range(count)]


def run(latency_ms: int, count: int, qps: int) -> dict:
    reset_shared_state()
    emulator = DingTalkEmulator(qps=qps, latency_ms=latency_ms, instances=seed(count))
    emulator.start()
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(emulator.connection(qps=qps))
    try:
        hook = DingTalkHook(CONN_ID)
        hook.get_instance("bench-000000")  # token and connection warm-up, not measured
        ids = [f"bench-{number:06d}" for number in range(count)]
        calls_before = emulator.calls["get"]
        started = time.monotonic()
        fetched = sum(1 for _ in hook.get_instances(ids))
        elapsed = time.monotonic() - started
        calls = emulator.calls["get"] - calls_before
    finally:
        emulator.stop()
    assert fetched == count, f"fetched {fetched} of {count}"
    throughput = count / elapsed
    return {"latency_ms": latency_ms, "instances": count, "seconds": elapsed, "per_second": throughput,
            "share": throughput / qps, "throttled_answers": calls - count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="instances fetched per latency")
    parser.add_argument("--latencies", default="50,100,200", help="added emulator latency, ms")
    parser.add_argument("--qps", type=int, default=20, help="the app's per-API limit")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the hook's progress lines would drown the table

    print(f"DingTalkHook.get_instances vs a {args.qps} QPS limit  "
          f"({platform.node()}, {os.cpu_count()} cpu, Python {platform.python_version()}, "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    print(f"{'latency':>8} {'instances':>9} {'seconds':>8} {'inst/s':>7} {'% of limit':>10} {'throttled':>9}")
    worst = 1.0
    for latency in (int(value) for value in args.latencies.split(",")):
        result = run(latency, args.count, args.qps)
        worst = min(worst, result["share"])
        print(f"{latency:>6}ms {result['instances']:>9} {result['seconds']:>8.2f} {result['per_second']:>7.2f} "
              f"{result['share']:>9.1%} {result['throttled_answers']:>9}")
    print(f"worst: {worst:.1%} of the limit (target >= 90%): {'OK' if worst >= 0.9 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
