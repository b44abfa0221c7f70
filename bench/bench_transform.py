"""Benchmark of the pure transform: N claims × R expense rows (each with nested rows), in chunks.

    python bench/bench_transform.py [--claims 100000] [--rows 5] [--chunk 5000]

Claims are generated chunk by chunk (as the pipeline reads them from staging), so peak memory is
the transform's own working set. Prints per-chunk time, CPU time and RSS, then the totals, the peak
RSS and the load average before and after (on a shared machine the CPU time is the steadier figure:
wall time also counts the time other processes hold the core).
``--workers 2`` transforms chunks in two processes side by side (the transform is pure and chunks
are independent); the default is the plain sequential loop a caller runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import random
import resource
import sys
import time
import tracemalloc
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


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def make_chunk(start: int, count: int, rows_per_claim: int, rng: random.Random) -> pd.DataFrame:
    ids, payloads = [], []
    for n in range(start, start + count):
        userid, dept = USERS[n % len(USERS)]
        category, expense_type = TYPES[n % len(TYPES)]
        rows = []
        for r in range(rows_per_claim):
            cents = rng.randint(1, 500_000)
            amount = money(cents)
            if r % 2:
                # Two nested rows splitting the amount: must add up, never double it.
                half = cents // 2
                nested = [nested_row(money(half), row_number=f"N{r}a"),
                          nested_row(money(cents - half), row_number=f"N{r}b")]
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


def run_chunk(job: tuple[int, int, int, int]) -> dict:
    """Generate one chunk, transform it, and report its time, counts and this process's memory."""
    index, start, count, rows = job
    raw = make_chunk(start, count, rows, random.Random(20240306 + index))
    # What the pipeline holds: payloads parsed from staging JSON text.
    raw["payload"] = [json.loads(json.dumps(p)) for p in raw["payload"]]
    began, began_cpu = time.perf_counter(), time.process_time()
    result = transform_claims(raw, SCHEME)
    seconds, cpu = time.perf_counter() - began, time.process_time() - began_cpu
    counts = {"bills": len(result.bills), "rejected_claims": result.rejects["instance_id"].nunique(),
              "waiting": len(result.waiting),
              "entries": sum(len(m["FPAYBILLENTRY"]) for m in result.bills["model"]),
              "table_rows": len(result.rows)}
    del raw, result
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] / 2**20 if tracemalloc.is_tracing() else None
    return {"index": index, "seconds": seconds, "cpu": cpu, "counts": counts, "rss": current_rss_mb(),
            "peak": peak_rss_mb(), "pid": os.getpid(), "traced": traced}


SCHEME = load_scheme(ROOT / "include" / "schemes" / "expense_to_paybill.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=1,
                        help="processes transforming chunks side by side (1 = the caller's plain loop)")
    parser.add_argument("--trace", action="store_true",
                        help="also print Python heap still allocated after each chunk (tracemalloc; slow)")
    args = parser.parse_args()
    if args.trace:
        tracemalloc.start()

    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, pandas {pd.__version__}; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"claims {args.claims} x {args.rows} rows (each row with 1-2 nested rows), chunks of {args.chunk}, "
          f"workers {args.workers}; load average {_load()}")
    jobs = [(i, start, min(args.chunk, args.claims - start), args.rows)
            for i, start in enumerate(range(0, args.claims, args.chunk))]
    totals = dict.fromkeys(("bills", "rejected_claims", "waiting", "entries", "table_rows"), 0)
    per_process: dict[int, float] = {}
    cpu = 0.0
    peak = 0.0
    began = time.perf_counter()
    if args.workers == 1:
        outcomes = map(run_chunk, jobs)
    else:
        pool = multiprocessing.get_context("fork").Pool(args.workers)
        outcomes = pool.imap(run_chunk, jobs)
    for outcome in outcomes:
        for key, value in outcome["counts"].items():
            totals[key] += value
        per_process[outcome["pid"]] = per_process.get(outcome["pid"], 0.0) + outcome["seconds"]
        cpu += outcome["cpu"]
        peak = max(peak, outcome["peak"])
        print(f"chunk {outcome['index'] + 1:3d}: transform {outcome['seconds']:6.2f} s (cpu {outcome['cpu']:5.2f} s)   "
              f"rss now {outcome['rss']:7.1f} MB   peak {outcome['peak']:7.1f} MB   (pid {outcome['pid']})"
              + (f"   heap after chunk {outcome['traced']:6.1f} MB" if outcome["traced"] is not None else ""),
              flush=True)
    wall = time.perf_counter() - began
    if args.workers != 1:
        pool.close()
        pool.join()
    transform_seconds = sum(per_process.values())
    busiest = max(per_process.values())
    print(f"counts: {totals}")
    print(f"transform time: {transform_seconds:.1f} s summed over chunks; busiest process {busiest:.1f} s "
          f"({args.claims / busiest:,.0f} claims/s); wall incl. payload generation {wall:.1f} s")
    print(f"transform CPU time: {cpu:.1f} s summed over chunks")
    print(f"peak RSS per process: {peak:.0f} MB (x{args.workers} process(es)); load average now {_load()}")


if __name__ == "__main__":
    main()
