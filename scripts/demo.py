"""`make demo`: the whole sync, end to end, on the embedded default (both emulators + SQLite staging).

Everything the demo writes stays under ``var/demo/`` (emptied at each start): its own Airflow home
(metadata DB and task logs, ``var/demo/airflow_home``), SQLite staging and the Kingdee emulator's
bills. So the demo's runs never reach the Airflow home of ``make airflow`` (whose scheduler would
otherwise find a run already there for an hour it wants to schedule) and ``make airflow`` never
touches the demo's.

1. generates a few hundred expense claims over the last days (statuses mixed, edge cases included)
   and serves them from the DingTalk emulator; starts the Kingdee emulator with the demo base data;
2. runs the DAG for the current hour with `airflow dags test` (a real Airflow run, in its own process);
3. approves the claims that were still running (late approvals) and runs the DAG again;
4. prints what happened: bills created, rejects with reasons, money totals, checks against the
   emulators, and how to look at the bills afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from dk_emulators.dingtalk import DingTalkEmulator  # noqa: E402
from dk_emulators.dingtalk.seed import SeedConfig, generate_claims  # noqa: E402
from dk_emulators.kingdee import KingdeeEmulator  # noqa: E402

from dingtalk_kingdee import staging  # noqa: E402
from dingtalk_kingdee.scheme import load_scheme  # noqa: E402

SCHEME_FILE = ROOT / "include" / "schemes" / "expense_to_paybill.yaml"
DEMO_DIR = ROOT / "var" / "demo"
CLAIMS = 300
SEED = 20241128


def airflow_env(demo_dir: Path, staging_url: str, connections: dict[str, dict]) -> dict[str, str]:
    """The environment of the demo's Airflow commands: its own Airflow home whatever AIRFLOW_HOME is
    inherited, the given staging, and the connections (id → connection JSON) as AIRFLOW_CONN_*."""
    env = dict(os.environ)
    env["AIRFLOW_HOME"] = str(demo_dir / "airflow_home")
    for conn_id, body in connections.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(body)
    env["STAGING_DATABASE_URL"] = staging_url
    # A demo task that fails should say so now, not after minutes of retry back-off.
    env["DK_TASK_RETRIES"] = "0"
    return env


def migrate_airflow_home(env: dict[str, str]) -> None:
    """A new metadata DB in the demo's Airflow home (`airflow dags test` needs one)."""
    home = Path(env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "migrate.log"
    with log_path.open("w") as log:
        proc = subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    if proc.returncode != 0:
        print(log_path.read_text(errors="replace")[-4000:])
        raise SystemExit(f"`airflow db migrate` failed for the demo's Airflow home {home} (exit {proc.returncode})")


def run_dag(dag_id: str, logical_date: datetime, env: dict[str, str], log_path: Path) -> float:
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), "dags", "test", dag_id, logical_date.isoformat()],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=False,
        )
    elapsed = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    if proc.returncode != 0 or "state=failed" in text.replace(" ", "").lower():
        print(text[-4000:])
        raise SystemExit(f"the DAG run failed (exit {proc.returncode}); full log: {log_path}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=DEMO_DIR,
                        help="where the demo keeps everything it writes; emptied first (default var/demo)")
    parser.add_argument("--claims", type=int, default=CLAIMS, help=f"claims to generate (default {CLAIMS})")
    args = parser.parse_args(argv)
    demo_dir = args.dir.resolve()
    shutil.rmtree(demo_dir, ignore_errors=True)
    demo_dir.mkdir(parents=True)
    scheme = load_scheme(SCHEME_FILE)
    dag_id = f"dingtalk_kingdee_{scheme.id}"
    now = datetime.now(UTC)
    # Run 1 is the hourly run for the hour that just ended; claims were started over the five days
    # before it. (With a cron data-interval timetable a run's logical date is its interval's end.)
    interval_end = now.replace(minute=0, second=0, microsecond=0)
    seed = generate_claims(SeedConfig(count=args.claims, start=interval_end - timedelta(days=5),
                                      end=interval_end - timedelta(minutes=5), seed=SEED,
                                      process_code=scheme.source.process_code))
    dingtalk = DingTalkEmulator(instances=[c.instance for c in seed])
    kingdee = KingdeeEmulator(basedata=ROOT / "include" / "demo" / "kingdee_basedata.json",
                              db_path=str(demo_dir / "kingdee.db"))
    dingtalk_url = dingtalk.start()
    kingdee.start()
    staging_url = f"sqlite:///{demo_dir / 'staging.db'}"
    env = airflow_env(demo_dir, staging_url, {scheme.source.dingtalk_conn_id: dingtalk.connection(),
                                              scheme.target.kingdee_conn_id: kingdee.connection()})
    try:
        statuses = Counter(f"{c.instance['status']}/{c.instance.get('result') or '-'}" for c in seed)
        print(f"DingTalk emulator on {dingtalk_url}: {len(seed)} claims of template {scheme.source.process_code} "
              f"started between {seed_span(seed)}")
        print(f"  statuses: {dict(sorted(statuses.items()))}")
        print(f"Kingdee emulator on {kingdee.base_url} (account set demo-acct, bills in {demo_dir / 'kingdee.db'})")
        print(f"Staging: {staging_url}")
        print(f"Airflow home of the demo: {env['AIRFLOW_HOME']} (its own metadata DB; `make airflow` uses another)")
        print("Preparing it (airflow db migrate) ...", flush=True)
        migrate_airflow_home(env)
        print()

        print(f"Run 1: airflow dags test {dag_id} {interval_end.isoformat()} ...", flush=True)
        took = run_dag(dag_id, interval_end, env, demo_dir / "run1.log")
        staged = staging.SchemeStaging(staging.connect(staging_url), scheme.id)
        first = staged.summary()
        print_summary(first, kingdee, took, demo_dir / "run1.log")

        late = [c for c in seed if c.truth.late_approval_at is not None]
        for claim in late:
            dingtalk.set_outcome(claim.instance["process_instance_id"], "COMPLETED", "agree",
                                 finish_time=datetime.now(UTC))
        print(f"\n{len(late)} claims that were still running are now approved in DingTalk (late approvals).")
        next_end = interval_end + timedelta(hours=1)
        print(f"Run 2: airflow dags test {dag_id} {next_end.isoformat()} ...", flush=True)
        took = run_dag(dag_id, next_end, env, demo_dir / "run2.log")
        second = staged.summary()
        print_summary(second, kingdee, took, demo_dir / "run2.log")

        check(seed, kingdee, second, scheme.target.match_field)
        print("\nLook at the results:")
        print(f"  bills in staging:  sqlite3 {demo_dir / 'staging.db'} "
              "\"select business_id, bill_number, state, amount_cents/100.0 from dk_bills limit 10\"")
        print(f"  rejects:           sqlite3 {demo_dir / 'staging.db'} "
              "\"select business_id, reason_code, reason from dk_rejects\"")
        print(f"  Kingdee bills:     python -m dk_emulators.kingdee --db {demo_dir / 'kingdee.db'}"
              " then POST ExecuteBillQuery (docs/emulators-kingdee.md), or open the Airflow UI: make airflow")
        print(f"  task logs:         {demo_dir / 'run1.log'}, {demo_dir / 'run2.log'}")
    finally:
        dingtalk.stop()
        kingdee.stop()
        print("Emulators stopped.")


def seed_span(seed) -> str:
    times = sorted(c.instance["create_time"] for c in seed)
    return f"{times[0]} and {times[-1]} (China time)"


def print_summary(summary: staging.Summary, kingdee: KingdeeEmulator, took: float, log_path: Path) -> None:
    bills = kingdee.bills("AP_PAYBILL")
    money = sum((Decimal(str(e["FPAYTOTALAMOUNTFOR"])) for b in bills for e in b.get("FPAYBILLENTRY", [])),
                Decimal("0"))
    print(f"  done in {took:.0f} s (log: {log_path})")
    print(f"  claims seen {summary.claims_seen}, approved {summary.approved}, "
          f"still running {summary.still_running}")
    print("  bills by state: " + ", ".join(
        f"{s} {n} ({summary.money_by_state[s]} CNY)" for s, n in sorted(summary.bills_by_state.items())))
    print(f"  Kingdee now holds {len(bills)} payment bills, {money:.2f} CNY in all")
    print(f"  rejected claims by reason: {summary.rejected_by_reason}")
    # Claims refused or withdrawn in DingTalk need nothing from anyone; the others need a fix.
    by_reason: dict[str, list[staging.RejectedClaim]] = {}
    for r in summary.rejected_claims:
        by_reason.setdefault(r.reason_code, []).append(r)
    for code, items in sorted(by_reason.items(), key=lambda kv: (kv[0] == "not_approved", kv[0])):
        claims = len({r.instance_id for r in items})
        print(f"    {code} ({claims} claim{'s' if claims > 1 else ''}), e.g. {items[0].reason}")


def check(seed, kingdee: KingdeeEmulator, summary: staging.Summary, match_field: str) -> None:
    """Say plainly whether the outcome is the one the seed says a correct sync must reach."""
    bills = kingdee.bills("AP_PAYBILL")
    by_key = Counter(str(b.get(match_field)) for b in bills)
    doubled = [k for k, n in by_key.items() if n > 1]
    payable = {c.instance["business_id"] for c in seed if c.truth.payable}
    unpayable = {c.instance["business_id"] for c in seed if not c.truth.payable} - payable
    wrongly_paid = sorted(set(by_key) & unpayable)
    missing = sorted(payable - set(by_key))
    print(f"\nChecks: {len(payable)} claims are payable; Kingdee holds {len(by_key)} distinct claims; "
          f"paid twice: {len(doubled)}; paid but not payable: {len(wrongly_paid)}; payable but missing: "
          f"{len(missing)}")
    if doubled or wrongly_paid or missing:
        raise SystemExit(f"demo check failed: doubled {doubled[:5]}, not payable {wrongly_paid[:5]}, "
                         f"missing {missing[:5]}")


if __name__ == "__main__":
    main()
