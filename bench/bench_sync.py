"""Whole-sync benchmark: extract → transform → load → write_back over both emulators.

DingTalk at its documented limit (20 calls/s per app per API) with added latency, Kingdee with 50 ms
per call, staging on SQLite (default) or on ``--staging-url``. Prints each step's time and the
detail-fetch rate against the limit: the sync should be bound by DingTalk's limit, nothing else.

    python bench/bench_sync.py [--claims 400] [--dingtalk-latency-ms 100] [--staging-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from dk_emulators.dingtalk import DingTalkEmulator  # noqa: E402
from dk_emulators.dingtalk.seed import SeedConfig, generate_claims  # noqa: E402
from dk_emulators.kingdee import KingdeeEmulator  # noqa: E402

from dingtalk_kingdee import pipeline, staging  # noqa: E402
from dingtalk_kingdee.hooks.dingtalk import DingTalkHook  # noqa: E402
from dingtalk_kingdee.hooks.kingdee import KingdeeHook  # noqa: E402
from dingtalk_kingdee.scheme import load_scheme  # noqa: E402

QPS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=400)
    parser.add_argument("--dingtalk-latency-ms", type=float, default=100)
    parser.add_argument("--kingdee-latency-ms", type=float, default=50)
    parser.add_argument("--staging-url", default="")
    args = parser.parse_args()

    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    claims = generate_claims(SeedConfig(count=args.claims, seed=3, start=now - timedelta(days=5), end=now,
                                        rows=(3, 6)))
    dingtalk = DingTalkEmulator(instances=[c.instance for c in claims], qps=QPS, latency_ms=args.dingtalk_latency_ms)
    kingdee = KingdeeEmulator(basedata=ROOT / "include" / "demo" / "kingdee_basedata.json", db_path=":memory:",
                              latency_ms=args.kingdee_latency_ms)
    dingtalk.start()
    kingdee.start()
    os.environ["AIRFLOW_CONN_DINGTALK_DEFAULT"] = json.dumps(dingtalk.connection())
    os.environ["AIRFLOW_CONN_KINGDEE_DEFAULT"] = json.dumps(kingdee.connection())
    with tempfile.TemporaryDirectory() as scratch:
        url = args.staging_url or f"sqlite:///{Path(scratch) / 'staging.db'}"
        engine = staging.connect(url)
        scheme = load_scheme(ROOT / "include" / "schemes" / "expense_to_paybill.yaml")
        run = pipeline.Run(run_id="bench", window_start=now - timedelta(days=30), window_end=now)
        dingtalk_hook, kingdee_hook = DingTalkHook("dingtalk_default"), KingdeeHook("kingdee_default")
        times: dict[str, float] = {}
        results: dict[str, dict] = {}
        for step, call in (
            ("extract", lambda: pipeline.extract(scheme, dingtalk_hook, engine, run)),
            ("transform", lambda: pipeline.transform(scheme, engine, run)),
            ("load", lambda: pipeline.load(scheme, kingdee_hook, engine, run)),
            ("write_back", lambda: pipeline.write_back(scheme, dingtalk_hook, engine, run)),
        ):
            started = time.perf_counter()
            results[step] = call()
            times[step] = time.perf_counter() - started
        engine.dispose()
    dingtalk.stop()
    kingdee.stop()

    fetched = results["extract"]["fetched"]
    comments = results["write_back"]["comments_sent"]
    print(f"whole sync: {args.claims} claims, DingTalk {QPS}/s + {args.dingtalk_latency_ms:.0f} ms, "
          f"Kingdee + {args.kingdee_latency_ms:.0f} ms, staging {'given URL' if args.staging_url else 'SQLite'}")
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{datetime.now(UTC):%Y-%m-%d}")
    print(f"  extract     {times['extract']:6.1f} s  {fetched} details, {fetched / times['extract']:.2f}/s "
          f"= {100 * fetched / times['extract'] / QPS:.1f} % of the {QPS}/s limit")
    print(f"  transform   {times['transform']:6.1f} s  {results['transform']}")
    print(f"  load        {times['load']:6.1f} s  {results['load']['loaded']} bills "
          f"({results['load']['loaded'] / max(times['load'], 1e-9):.0f}/s, submit+audit included)")
    print(f"  write_back  {times['write_back']:6.1f} s  {comments} comments "
          f"= {100 * comments / max(times['write_back'], 1e-9) / QPS:.1f} % of the {QPS}/s limit")
    print(f"  total       {sum(times.values()):6.1f} s")


if __name__ == "__main__":
    main()
