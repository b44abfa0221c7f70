"""`make airflow`: the Airflow UI on http://127.0.0.1:8080 wired to both emulators (Ctrl-C stops all).

Everything it keeps is under var/airflow/ (``--state-dir``), Airflow's own home included
(var/airflow/airflow_home: metadata DB, logs): so it never sees the runs of ``make demo`` (var/demo/)
or of the test suite, whose logical dates would block the hourly schedule.

1. serves the DingTalk emulator (port 8801) with a few hundred generated expense claims of the last
   days, and the Kingdee emulator (port 8802, bills kept in var/airflow/kingdee.db), in this process;
2. registers the connections the scheme names (``dingtalk_default``, ``kingdee_default``) in Airflow's
   metadata database with ``airflow connections add --conn-json``, so the UI shows them in their forms;
3. runs ``airflow standalone`` (api-server, scheduler, dag-processor, triggerer) with a no-login UI and
   staging in var/airflow/staging.db (unless STAGING_DATABASE_URL is set);
4. approves the claims that were still running when their planned approval time comes (late approvals),
   so later runs have new bills to make.

State survives a restart (claims, Kingdee bills, staging, Airflow's runs); ``--fresh`` starts from a
new world (a new metadata DB too).
``--emulators-only`` serves the two emulators in the foreground and prints the connections to use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from dk_emulators.dingtalk import DingTalkEmulator  # noqa: E402
from dk_emulators.dingtalk.seed import (  # noqa: E402
    SeedConfig,
    generate_claims,
    load_seed_file,
    write_seed_file,
)
from dk_emulators.kingdee import KingdeeEmulator  # noqa: E402

from dingtalk_kingdee.provider import get_provider_info  # noqa: E402
from dingtalk_kingdee.scheme import Scheme, load_scheme  # noqa: E402

SCHEME_FILE = ROOT / "include" / "schemes" / "expense_to_paybill.yaml"
BASEDATA_FILE = ROOT / "include" / "demo" / "kingdee_basedata.json"
STATE_DIR = ROOT / "var" / "airflow"
DINGTALK_APP = ("demo-app-key", "demo-app-secret")
KINGDEE_USER = ("demo", "demo-password")
KINGDEE_ACCT = "demo-acct"
HEALTH_TIMEOUT_S = 300
STOP_TIMEOUT_S = 30


@dataclass(frozen=True)
class StateFiles:
    """Where one `make airflow` world lives: all under one directory, so --fresh is one rmtree."""

    root: Path

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow_home"

    @property
    def seed(self) -> Path:
        return self.root / "dingtalk-seed.json"

    @property
    def late(self) -> Path:
        return self.root / "late-approvals.json"

    @property
    def kingdee_db(self) -> Path:
        return self.root / "kingdee.db"

    @property
    def staging_db(self) -> Path:
        return self.root / "staging.db"


class Stop(Exception):
    """SIGTERM (or SIGINT) arrived: leave the main loop and shut everything down."""


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


# ------------------------------------------------------------------------------------------ setup


def airflow_defaults(state: StateFiles) -> None:
    """What the Makefile exports, so the script also works when started directly; and this world's
    own Airflow home, whatever AIRFLOW_HOME was inherited (the Makefile's is the test suite's)."""
    os.environ["AIRFLOW_HOME"] = str(state.airflow_home)
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    # LocalExecutor starts one worker process per parallelism slot (32 by default); a laptop needs few.
    os.environ.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
    paths = [str(ROOT / "plugins"), str(ROOT)]
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + current)
    # `airflow standalone` starts its components as plain `airflow ...`: this venv's must come first.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])


def port_in_use(port: int, host: str = "0.0.0.0") -> bool:
    # SO_REUSEADDR: a port in TIME_WAIT is free for the server, but a listening socket is not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def require_free_ports(ports: dict[str, int]) -> None:
    taken = [(name, port) for name, port in ports.items() if port_in_use(port)]
    if taken:
        lines = [f"  port {port} ({name}) is already in use" for name, port in taken]
        raise SystemExit(
            "cannot start:\n" + "\n".join(lines) + "\n"
            "Stop whatever listens there (see: ss -ltnp | grep -E ':(" + "|".join(str(p) for _, p in taken)
            + ")\\b'), e.g. an earlier `make airflow` still running, or choose other ports "
            "(--dingtalk-port / --kingdee-port; AIRFLOW__API__PORT for Airflow)."
        )


def load_or_generate_claims(state: StateFiles, scheme: Scheme, count: int, days: int,
                            seed: int) -> tuple[list[dict], dict[str, str]]:
    """The claims to serve and their planned late approvals (instance id → ISO time).

    Kept in var/airflow/ so a restart serves the same claims that staging and Kingdee already know.
    """
    if state.seed.exists() and state.late.exists():
        return load_seed_file(state.seed), json.loads(state.late.read_text(encoding="utf-8"))
    now = datetime.now(UTC)
    claims = generate_claims(SeedConfig(count=count, start=now - timedelta(days=days),
                                        end=now - timedelta(minutes=5), seed=seed,
                                        process_code=scheme.source.process_code))
    late = {c.instance["process_instance_id"]: c.truth.late_approval_at.isoformat()
            for c in claims if c.truth.late_approval_at is not None}
    write_seed_file(state.seed, claims)
    state.late.write_text(json.dumps(late, indent=1), encoding="utf-8")
    return [c.instance for c in claims], late


def airflow_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["airflow", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"`airflow {' '.join(args[:3])} ...` failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def register_connections(conns: dict[str, tuple[str, dict]], state: StateFiles) -> None:
    """(Re)create each connection in the metadata DB, so it shows (and can be edited) in the UI.

    One `airflow connections import --overwrite` for all of them: each Airflow command costs seconds.
    """
    for conn_id in conns:
        if os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}"):
            print(f"  note: AIRFLOW_CONN_{conn_id.upper()} is set in the environment and wins over the "
                  "metadata DB; unset it to use the connection registered here")
    path = state.root / "connections.json"
    path.write_text(json.dumps({conn_id: {**{k: v for k, v in body.items() if k != "extra"},
                                          "extra_dejson": every_field(body)}
                                for conn_id, (_, body) in conns.items()}), encoding="utf-8")
    try:
        airflow_cli("connections", "import", str(path), "--overwrite")
    finally:
        path.unlink()
    for conn_id, (_, body) in conns.items():
        print(f"  connection {conn_id} ({body['conn_type']}) → {body['host']}")


def every_field(body: dict) -> dict:
    """The connection's extra with every field its type declares (null when unset), as the UI's Add
    form stores it: Airflow's Edit form shows only the extra fields the stored connection has."""
    declared = next((t["conn-fields"] for t in get_provider_info()["connection-types"]
                     if t["connection-type"] == body["conn_type"]), {})
    return {**dict.fromkeys(declared), **(body.get("extra") or {})}


# ------------------------------------------------------------------------------------------ running


class LateApprover(threading.Thread):
    """Approves a claim that was still running once its planned approval time has come.

    Approvals already due at start wait ``first_delay`` seconds, so the first run sees them running
    and a later run turns them into bills (what happens in real life when an approver is slow).
    """

    def __init__(self, dingtalk: DingTalkEmulator, state: StateFiles, late: dict[str, str],
                 first_delay: float, interval: float = 30.0) -> None:
        super().__init__(name="late-approvals", daemon=True)
        self.dingtalk = dingtalk
        self.state = state
        self.pending = {i: datetime.fromisoformat(t) for i, t in late.items()
                        if self.dingtalk.get_instance(i).get("status") == "RUNNING"}
        self.not_before = time.monotonic() + first_delay
        self.interval = interval
        self.stopped = threading.Event()
        self.approved = 0

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            if time.monotonic() < self.not_before:
                continue
            now = datetime.now(UTC)
            due = [i for i, at in self.pending.items() if at <= now]
            for instance_id in due:
                self.dingtalk.set_outcome(instance_id, "COMPLETED", "agree", finish_time=now)
                del self.pending[instance_id]
            if due:
                self.approved += len(due)
                save_claims(self.dingtalk, self.state)
                print(f"[late-approvals] {len(due)} claims approved in DingTalk just now; the next run "
                      f"makes their bills ({len(self.pending)} still planned)", flush=True)


def save_claims(dingtalk: DingTalkEmulator, state: StateFiles) -> None:
    """Keep approvals across restarts: rewrite the seed file from the emulator's current instances."""
    ids = [c["process_instance_id"] for c in load_seed_file(state.seed)]
    write_seed_file(state.seed, [dingtalk.get_instance(i) for i in ids])


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"airflow standalone exited early (code {proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                health = json.load(answer)
            if all(part.get("status") == "healthy" for key, part in health.items()
                   if key in ("metadatabase", "scheduler", "dag_processor", "triggerer")):
                return time.monotonic() - started
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(2)
    raise SystemExit(f"Airflow was not healthy at {url} within {timeout:.0f} s")


def stop_standalone(proc: subprocess.Popen) -> None:
    """SIGINT is what `airflow standalone` handles (it then terminates its components); the process
    group catches whatever is left (task supervisors, api-server workers)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT_S)
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
    proc.wait()


def print_guide(dag_id: str, api_url: str, conns: dict[str, tuple[str, dict]], staging_url: str,
                kingdee_url: str, state: StateFiles, took: float) -> None:
    print(f"""
================================================================================================
Airflow is up ({took:.0f} s): {api_url}   (no login: simple auth manager, everyone is admin)
DAG {dag_id} — it starts PAUSED; switch it on for the hourly schedule
(one run per hour of China time, for the hour that just ended; catchup off).

Try:
  * Trigger with the form (▶ Trigger, "Run with config"): dry_run, window_start / window_end,
    instance_ids, replay_rejected. A manual run on a paused DAG waits until the DAG is switched on
    (or tick "unpause" in the trigger dialog).
  * Backfill: DAG page → Backfill, or
      airflow backfill create --dag-id {dag_id} --from-date <ISO> --to-date <ISO>
    Claims already final in staging are not fetched again; no claim is billed twice.
  * Clear one task (e.g. load) of a finished run and watch it run again: nothing is sent twice.
  * The report task's log lists rejected claims with reasons; all rejects are in table dk_rejects:
      sqlite3 {state.staging_db} "select business_id, reason_code, reason from dk_rejects"
    (staging: {staging_url})
  * Kingdee bills: curl -s {kingdee_url.rstrip('/').removesuffix('/k3cloud')}/_emulator/bills | head -c 600
  * Late approvals: running claims get approved as their planned time comes (see [late-approvals]).
Connections: {', '.join(f'{cid} ({body["conn_type"]})' for cid, (_, body) in conns.items())} — Admin → Connections.
Ctrl-C stops Airflow and both emulators.
================================================================================================
""", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emulators-only", action="store_true",
                        help="serve the two emulators in the foreground, no Airflow")
    parser.add_argument("--fresh", action="store_true",
                        help="forget the state directory (claims, Kingdee bills, SQLite staging, Airflow's "
                             "metadata DB) and generate anew")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR,
                        help="where this world is kept, Airflow home included (default var/airflow)")
    parser.add_argument("--claims", type=int, default=300, help="claims to generate (default 300)")
    parser.add_argument("--days", type=int, default=5, help="claims are started over the last N days")
    parser.add_argument("--seed", type=int, default=20241128, help="random seed of the claim generator")
    parser.add_argument("--dingtalk-port", type=int, default=8801)
    parser.add_argument("--kingdee-port", type=int, default=8802)
    parser.add_argument("--late-approval-delay", type=float, default=120.0,
                        help="seconds before approvals that are already due are applied (default 120)")
    args = parser.parse_args(argv)

    state = StateFiles(args.state_dir.resolve())
    airflow_defaults(state)
    api_port = int(os.environ.get("AIRFLOW__API__PORT", "8080"))
    ports = {"DingTalk emulator": args.dingtalk_port, "Kingdee emulator": args.kingdee_port}
    if not args.emulators_only:
        ports["Airflow api-server"] = api_port
        ports["Airflow task-log server"] = int(os.environ.get("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "8793"))
        ports["Airflow triggerer-log server"] = int(os.environ.get("AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
                                                                   "8794"))
    require_free_ports(ports)

    if args.fresh:
        shutil.rmtree(state.root, ignore_errors=True)
    state.root.mkdir(parents=True, exist_ok=True)
    scheme = load_scheme(SCHEME_FILE)
    instances, late = load_or_generate_claims(state, scheme, args.claims, args.days, args.seed)

    dingtalk = DingTalkEmulator(*DINGTALK_APP, instances=instances, process_codes=[scheme.source.process_code],
                                port=args.dingtalk_port)
    kingdee = KingdeeEmulator(basedata=BASEDATA_FILE, db_path=str(state.kingdee_db), acct_id=KINGDEE_ACCT,
                              users=dict([KINGDEE_USER]), port=args.kingdee_port)
    # SIGINT too: a process started in the background of a script inherits SIGINT ignored.
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    standalone: subprocess.Popen | None = None
    approver: LateApprover | None = None
    try:
        dingtalk_url = dingtalk.start()
        kingdee_url = kingdee.start()
        conns = {scheme.source.dingtalk_conn_id: ("dingtalk", dingtalk.connection(qps=20)),
                 scheme.target.kingdee_conn_id: ("kingdee", kingdee.connection())}
        statuses = Counter(i["status"] for i in instances)
        print(f"DingTalk emulator: {dingtalk_url} — {len(instances)} claims of {scheme.source.process_code} "
              f"({dict(statuses)}), {len(late)} planned late approvals; admin: {dingtalk_url}/_emulator/state")
        print(f"Kingdee emulator:  {kingdee_url} — account set {KINGDEE_ACCT}, bills in {state.kingdee_db}; "
              f"admin: {kingdee_url.removesuffix('/k3cloud/')}/_emulator/bills")
        approver = LateApprover(dingtalk, state, late, args.late_approval_delay)
        approver.start()

        if args.emulators_only:
            print("\nConnections to use (e.g. export these, or paste into Admin → Connections):")
            for conn_id, (_, body) in conns.items():
                print(f"  AIRFLOW_CONN_{conn_id.upper()}='{json.dumps(body)}'")
            print("\nCtrl-C stops both emulators.", flush=True)
            while True:
                time.sleep(3600)

        staging_url = os.environ.get("STAGING_DATABASE_URL", "").strip() or f"sqlite:///{state.staging_db}"
        os.environ["STAGING_DATABASE_URL"] = staging_url
        os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
        # The connection form's Test button (off by default); local and single-user, so safe here.
        os.environ.setdefault("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
        # Task workers reach the api-server here; Airflow's default assumes port 8080.
        os.environ.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", f"http://127.0.0.1:{api_port}/execution/")
        print(f"Airflow home: {state.airflow_home} (metadata DB, logs; `make demo` and the tests use others)")
        print(f"Staging: {staging_url}")
        print("Registering connections in Airflow's metadata DB ...", flush=True)
        airflow_cli("db", "migrate")  # a no-op when current; needed when AIRFLOW_HOME is new
        register_connections(conns, state)

        print("Starting airflow standalone (api-server, scheduler, dag-processor, triggerer) ...", flush=True)
        # Own process group: Ctrl-C reaches this script only, which then stops Airflow in order.
        standalone = subprocess.Popen(["airflow", "standalone"], cwd=ROOT, start_new_session=True)
        api_url = f"http://127.0.0.1:{api_port}"
        took = wait_healthy(f"{api_url}/api/v2/monitor/health", standalone, HEALTH_TIMEOUT_S)
        print_guide(f"dingtalk_kingdee_{scheme.id}", api_url, conns, staging_url, kingdee_url, state, took)
        while standalone.poll() is None:
            time.sleep(1)
        print(f"airflow standalone exited (code {standalone.returncode})")
    except (KeyboardInterrupt, Stop):
        print("\nStopping ...", flush=True)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if standalone is not None:
            stop_standalone(standalone)
            print("Airflow stopped.")
        if approver is not None:
            approver.stopped.set()
        dingtalk.stop()
        kingdee.stop()
        save_claims(dingtalk, state)
        print("Emulators stopped.", flush=True)


if __name__ == "__main__":
    main()
