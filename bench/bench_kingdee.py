"""Benchmark: AP_PAYBILL bills per second through ``KingdeeHook.batch_save`` at batch sizes 1, 50, 200.

The Kingdee emulator runs in-process over real HTTP with 50 ms of latency per call (a nearby
server); models are valid payment bills built from the demo universe's codes, so every bill is
really validated and stored. Run: ``python bench/bench_kingdee.py [--latency-ms 50] [--seconds 25]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

from dk_emulators.kingdee.basedata import demo_paybill

REPO_ROOT = Path(__file__).resolve().parents[1]
UNIVERSE = REPO_ROOT / "include" / "demo" / "universe.json"
BASEDATA = REPO_ROOT / "include" / "demo" / "kingdee_basedata.json"
CONN_ID = "kingdee_bench"
USER, PASSWORD = "bench", "bench-password"


def paybill_models(universe: dict, count: int, prefix: str) -> list[dict]:
    """``count`` valid AP_PAYBILL models for employees of the demo universe, 1–3 entries each."""
    cost_items = [code for category in universe["categories"].values() for code in category["types"].values()]
    models = []
    for i in range(count):
        rows = range(1 + i % 3)
        models.append(demo_paybill(
            universe, f"{prefix}{i:06d}",
            [Decimal(100 + (i * 37 + row * 11) % 5000) + Decimal("0.25") * row for row in rows],
            employee_index=i, cost_items=[cost_items[(i + row) % len(cost_items)] for row in rows],
            third_bill_no=f"{prefix}T{i:06d}", remark=f"bench bill {i}",
        ))
    return models


def measure(hook, universe: dict, batch_size: int, seconds: float, max_bills: int) -> dict:
    """Save batches of ``batch_size`` for about ``seconds`` (at most ``max_bills``); bills per second."""
    prefix = f"B{batch_size:03d}-"
    models = paybill_models(universe, max_bills, prefix)
    per_call: list[float] = []
    saved = 0
    started = time.perf_counter()
    for offset in range(0, max_bills, batch_size):
        batch = models[offset:offset + batch_size]
        call_started = time.perf_counter()
        outcomes = hook.batch_save("AP_PAYBILL", batch, {"IsVerifyBaseDataField": True,
                                                         "NeedReturnFields": ["FBillNo"]})
        per_call.append(time.perf_counter() - call_started)
        failed = [o for o in outcomes if not o.success]
        if failed:
            raise SystemExit(f"batch size {batch_size}: {len(failed)} bills refused, first: {failed[0].errors}")
        saved += len(outcomes)
        if time.perf_counter() - started >= seconds:
            break
    elapsed = time.perf_counter() - started
    return {"batch_size": batch_size, "bills": saved, "calls": len(per_call), "seconds": elapsed,
            "bills_per_second": saved / elapsed,
            "median_call_ms": statistics.median(per_call) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="time budget per batch size")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO_ROOT / "plugins"))
    from dk_emulators.kingdee import KingdeeEmulator

    from dingtalk_kingdee.hooks.kingdee import KingdeeHook

    universe = json.loads(UNIVERSE.read_text(encoding="utf-8"))
    emulator = KingdeeEmulator(basedata=str(BASEDATA), db_path=":memory:", acct_id="demo-acct",
                               users={USER: PASSWORD}, latency_ms=args.latency_ms)
    base_url = emulator.start()
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps({
        "conn_type": "kingdee", "host": base_url, "login": USER, "password": PASSWORD,
        "extra": {"acct_id": "demo-acct", "lcid": 2052, "org_num": "100", "auth_mode": "session"}})
    try:
        hook = KingdeeHook(kingdee_conn_id=CONN_ID)
        hook.login()
        results = [
            measure(hook, universe, 1, args.seconds, max_bills=400),
            measure(hook, universe, 50, args.seconds, max_bills=6000),
            measure(hook, universe, 200, args.seconds, max_bills=16000),
        ]
        stored = len(emulator.bills("AP_PAYBILL"))
    finally:
        emulator.stop()

    print(f"KingdeeHook.batch_save, AP_PAYBILL, emulator latency {args.latency_ms} ms, session mode")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{'batch':>6} {'bills':>6} {'calls':>6} {'seconds':>8} {'bills/s':>9} {'median call ms':>15}")
    for r in results:
        print(f"{r['batch_size']:>6} {r['bills']:>6} {r['calls']:>6} {r['seconds']:>8.1f} "
              f"{r['bills_per_second']:>9.1f} {r['median_call_ms']:>15.1f}")
    expected = sum(r["bills"] for r in results)
    if stored != expected:
        raise SystemExit(f"the emulator holds {stored} bills, {expected} were reported saved")
    print(f"checked: the emulator stores all {stored} bills")


if __name__ == "__main__":
    main()
