"""Benchmark of the pure transform: N claims × R expense rows (each with nested rows), in chunks.

    python bench/bench_transform.py [--claims 100000] [--rows 5] [--chunk 5000]

Claims are generated chunk by chunk (as the pipeline reads them from staging), so peak memory is
the transform's own working set. Prints per-chunk time and RSS, then total time and peak RSS.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import resource
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dingtalk_kingdee.scheme import load_scheme  # noqa: E402
from dingtalk_kingdee.transform import transform_claims  # noqa: E402
from tests.fixtures.claims.builder import claim, expense_row, nested_row  # noqa: E402

USERS = [("manager4500", "1001"), ("016400079191", "1002"), ("016400158382", "1003"), ("manager4503", "1004"),
         ("016400316764", "1005"), ("newhire9001", "1004")]
TYPES = [("行政报销", "差旅费"), ("行政报销", "交通费"), ("行政报销", "办公费"), ("项目报销", "项目差旅费"),
         ("项目报销", "项目外包费"), ("行政报销", "团建费")]


def current_rss_mb() -> float:
    """Resident set size now (Linux /proc), in MB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_chunk(start: int, count: int, rows_per_claim: int, rng: random.Random) -> pd.DataFrame:
    ids, payloads = [], []
    for n in range(start, start + count):
        userid, dept = USERS[n % len(USERS)]
        category, expense_type = TYPES[n % len(TYPES)]
        rows = []
        for r in range(rows_per_claim):
            amount = f"{rng.randint(1, 500000) / 100:.2f}"
            if r % 2:
                # Two nested rows splitting the amount: must add up, never double it.
                cents = int(amount.replace(".", ""))
                half = cents // 2
                nested = [nested_row(f"{half / 100:.2f}", row_number=f"N{r}a"),
                          nested_row(f"{(cents - half) / 100:.2f}", row_number=f"N{r}b")]
            else:
                nested = [nested_row(amount, row_number=f"N{r}")]
            rows.append(expense_row(amount, description=f"费用 {n}-{r}", date=f"2024-03-{1 + r % 28:02d}",
                                    nested=nested, row_number=f"TableField_{n}_{r}"))
        instance_id = f"inst-{n:08d}"
        payload = claim(instance_id, f"2024{n:013d}", rows=rows, userid=userid, dept_id=dept,
                        category=category, expense_type=expense_type,
                        status="RUNNING" if n % 50 == 0 else "COMPLETED")
        ids.append(instance_id)
        payloads.append(payload)
    return pd.DataFrame({"instance_id": ids, "payload": payloads})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=5_000)
    args = parser.parse_args()

    scheme = load_scheme(ROOT / "include" / "schemes" / "expense_to_paybill.yaml")
    rng = random.Random(20240306)
    print(f"machine: {platform.node()} {platform.machine()} python {platform.python_version()} "
          f"pandas {pd.__version__}; claims {args.claims} × {args.rows} rows, chunks of {args.chunk}")
    counts = {"bills": 0, "rejected_claims": 0, "waiting": 0, "entries": 0, "table_rows": 0}
    transform_seconds = 0.0
    generate_seconds = 0.0
    started = time.perf_counter()
    for start in range(0, args.claims, args.chunk):
        t0 = time.perf_counter()
        raw = make_chunk(start, min(args.chunk, args.claims - start), args.rows, rng)
        # What the pipeline holds: payloads parsed from staging JSON text.
        raw["payload"] = [json.loads(json.dumps(p)) for p in raw["payload"]]
        t1 = time.perf_counter()
        result = transform_claims(raw, scheme)
        t2 = time.perf_counter()
        generate_seconds += t1 - t0
        transform_seconds += t2 - t1
        counts["bills"] += len(result.bills)
        counts["rejected_claims"] += result.rejects["instance_id"].nunique()
        counts["waiting"] += len(result.waiting)
        counts["entries"] += sum(len(m["FPAYBILLENTRY"]) for m in result.bills["model"])
        counts["table_rows"] += len(result.rows)
        del raw, result
        gc.collect()
        print(f"chunk {start // args.chunk + 1:3d}: transform {t2 - t1:6.2f} s   rss now {current_rss_mb():7.1f} MB"
              f"   peak {peak_rss_mb():7.1f} MB", flush=True)
    total = time.perf_counter() - started
    print(f"counts: {counts}")
    print(f"transform time: {transform_seconds:.1f} s  ({args.claims / transform_seconds:,.0f} claims/s); "
          f"payload generation {generate_seconds:.1f} s; wall {total:.1f} s")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
