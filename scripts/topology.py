"""Airflow's distributed topology as local processes: what docker-compose.yaml runs, without Docker.

api-server, scheduler, dag-processor, triggerer and N Celery workers, each its own process, with
Airflow's metadata and the project's staging on PostgreSQL, the Celery broker on Redis, and both
emulators on loopback (generated claims, in this process). Every Airflow setting that does not depend
on where the services run comes from docker/airflow.env, the file docker-compose.yaml loads too.
``--executor LocalExecutor`` runs the tasks in the scheduler's own worker processes instead (no Celery
worker); ``--events`` turns on the scheme's DingTalk Stream events (``events: {enabled: true}``).

    python scripts/topology.py                 # start, print the UI address and login; Ctrl-C stops
    python scripts/topology.py --workers 3 --claims 200
    python scripts/topology.py --executor LocalExecutor --events

Each start is fresh: it (re)creates its two databases (``dk_<name>_airflow``, ``dk_<name>_staging``)
and flushes its Redis database, so use a ``--name`` and ``--redis-db`` of its own. Ports are free ones
chosen at start, so it runs next to ``make airflow``. ``make test-topology`` drives it through the
REST API (tests/topology).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from dk_emulators.dingtalk import DingTalkEmulator  # noqa: E402
from dk_emulators.dingtalk.seed import SeedClaim, SeedConfig, generate_claims  # noqa: E402
from dk_emulators.kingdee import KingdeeEmulator  # noqa: E402

from dingtalk_kingdee.scheme import load_scheme  # noqa: E402

ENV_FILE = ROOT / "docker" / "airflow.env"
INIT_SCRIPT = ROOT / "docker" / "airflow-init.sh"
SCHEME_FILE = ROOT / "include" / "schemes" / "expense_to_paybill.yaml"
BASEDATA_FILE = ROOT / "include" / "demo" / "kingdee_basedata.json"

# Settings whose value depends on where the services run: docker-compose.yaml sets each of them in
# its common environment (from service names and required secrets), this runner from loopback
# addresses and fresh secrets. Everything else shared lives in docker/airflow.env.
PLACEMENT_KEYS = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__FERNET_KEY",
    "STAGING_DATABASE_URL",
    "DK_TASK_RETRIES",
    "DK_RETRY_DELAY_SECONDS",
    "DK_RATE_LIMIT_REDIS_URL",
    "AIRFLOW_CONN_DINGTALK_DEFAULT",
    "AIRFLOW_CONN_KINGDEE_DEFAULT",
)
# What only a set of processes on one machine needs (containers have their own filesystem and ports).
LOCAL_KEYS = (
    "AIRFLOW_HOME",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
    "AIRFLOW__OPERATORS__DEFAULT_QUEUE",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
    "DK_SCHEMES_DIR",
    "DK_VAR_DIR",
)
HEALTHY_COMPONENTS = ("metadatabase", "scheduler", "dag_processor", "triggerer")
EXECUTORS = ("CeleryExecutor", "LocalExecutor")
DINGTALK_QPS = 20  # DingTalk's real per-app limit; the emulator enforces it


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines as docker-compose's env_file reads them (comments and blank lines skipped;
    one pair of surrounding quotes removed)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@dataclass
class TopologyConfig:
    name: str = "topology"
    # CeleryExecutor (docker/airflow.env): `workers` Celery workers. LocalExecutor: no worker process,
    # the scheduler runs `parallelism` task processes itself (the single-machine deployment).
    executor: str = "CeleryExecutor"
    workers: int = 2
    worker_concurrency: int = 2  # Celery processes per worker; few, for a laptop or a 2-core CI box
    parallelism: int = 4  # LocalExecutor's task processes (Airflow's default, 32, is for big machines)
    events: bool = False  # the scheme's DAG also runs on DingTalk Stream approval events
    # Further Airflow settings on top of docker/airflow.env (AIRFLOW__SECTION__KEY: value), e.g. tuning.
    airflow_settings: dict[str, str] = field(default_factory=dict)
    claims: int = 40
    seed: int = 20241128
    days: int = 2  # claims are started over the last N days
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"  # an admin connection
    redis_url: str = "redis://127.0.0.1:6379"
    redis_db: int = 5
    task_retries: int = 0
    state_dir: Path = ROOT / "var" / "topology"
    admin_user: str = "admin"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))


class ApiClient:
    """Airflow's public REST API (/api/v2) with a JWT from /auth/token."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        answer = self.session.post(f"{self.base_url}/auth/token", json={"username": username, "password": password},
                                   timeout=30)
        answer.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.session.request(method, f"{self.base_url}/api/v2{path}", timeout=60, **kwargs)
        if answer.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:500]}")
        return answer.json() if answer.content else None

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def wait_dag_run(self, dag_id: str, run_id: str, timeout: float, states: tuple[str, ...] = ("success", "failed")
                     ) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in states or time.monotonic() > deadline:
                return run
            time.sleep(2)


class Topology:
    """Start with ``with Topology(config) as topology:``; the emulators and seed stay reachable."""

    def __init__(self, config: TopologyConfig) -> None:
        if config.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, not {config.executor!r}")
        self.config = config
        self.scheme = load_scheme(SCHEME_FILE)
        self.dag_id = f"dingtalk_kingdee_{self.scheme.id}"
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.log_dir = config.state_dir / "logs"
        self.processes: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        now = datetime.now(UTC).replace(microsecond=0)
        self.seed: list[SeedClaim] = generate_claims(SeedConfig(
            count=config.claims, seed=config.seed, start=now - timedelta(days=config.days),
            end=now - timedelta(minutes=5), process_code=self.scheme.source.process_code))
        self.dingtalk = DingTalkEmulator(instances=[c.instance for c in self.seed], qps=DINGTALK_QPS,
                                         process_codes=[self.scheme.source.process_code])
        config.state_dir.mkdir(parents=True, exist_ok=True)
        (config.state_dir / "kingdee.db").unlink(missing_ok=True)
        self.kingdee = KingdeeEmulator(basedata=BASEDATA_FILE, db_path=str(config.state_dir / "kingdee.db"))
        self.env: dict[str, str] = {}

    # ------------------------------------------------------------------ configuration

    def database_url(self, role: str, driver: str) -> str:
        url = sa.make_url(self.config.postgres_url).set(drivername=driver, database=f"dk_{self.config.name}_{role}")
        return url.render_as_string(hide_password=False)

    def environment(self) -> dict[str, str]:
        """The environment of every Airflow process: docker/airflow.env + placement + local keys."""
        config = self.config
        placement = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url("airflow", "postgresql+psycopg2"),
            "AIRFLOW__CELERY__BROKER_URL": f"{config.redis_url.rstrip('/')}/{config.redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.database_url("airflow", "postgresql+psycopg2"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__FERNET_KEY": fernet_key(),
            "STAGING_DATABASE_URL": self.database_url("staging", "postgresql+psycopg"),
            "DK_TASK_RETRIES": str(config.task_retries),
            "DK_RETRY_DELAY_SECONDS": "10",
            # The broker's database: its keys are apart (dk:dingtalk:pace:...) and it is flushed at start.
            "DK_RATE_LIMIT_REDIS_URL": f"{config.redis_url.rstrip('/')}/{config.redis_db}",
            "AIRFLOW_CONN_DINGTALK_DEFAULT": json.dumps(self.dingtalk.connection(qps=DINGTALK_QPS)),
            "AIRFLOW_CONN_KINGDEE_DEFAULT": json.dumps(self.kingdee.connection()),
        }
        local = {
            "AIRFLOW_HOME": str(config.state_dir / "airflow_home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.log_dir / "tasks"),
            # Celery routes tasks by queue: one of its own keeps another topology's workers away.
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"dk_{config.name}",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # The run reports ($DK_VAR_DIR/reports) beside the rest of this topology's state.
            "DK_VAR_DIR": str(config.state_dir),
        }
        assert set(placement) == set(PLACEMENT_KEYS) and set(local) <= set(LOCAL_KEYS) | {
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"}
        chosen = dict(config.airflow_settings)
        if config.executor == "LocalExecutor":
            chosen = {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": str(config.parallelism),
                      # LocalExecutor's task processes serve their logs as the Celery workers do
                      "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()), **chosen}
        if config.events:
            local["DK_SCHEMES_DIR"] = str(self.write_event_schemes())
        # Nothing of the calling shell's Airflow configuration leaks in: the file is the configuration.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
        paths = [str(ROOT / "plugins"), str(ROOT / "emulators"), str(ROOT)]
        current = [p for p in inherited.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
        inherited["PYTHONPATH"] = os.pathsep.join(paths + current)
        inherited["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), inherited.get("PATH", "")])
        return {**inherited, **read_env_file(ENV_FILE), **placement, **local, **chosen}

    def write_event_schemes(self) -> Path:
        """A schemes folder of its own: the scheme with ``events: {enabled: true}`` and its value maps."""
        folder = self.config.state_dir / "schemes"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(SCHEME_FILE.parent / self.scheme.id, folder / self.scheme.id)
        text = SCHEME_FILE.read_text(encoding="utf-8")
        (folder / SCHEME_FILE.name).write_text(
            text + "\n# scripts/topology.py --events: the DAG runs on approval events too.\nevents:\n  enabled: true\n",
            encoding="utf-8")
        return folder

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Topology:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 300.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for old_log in self.log_dir.glob("*.log"):  # a restarted service appends to its log: start afresh
            old_log.unlink()
        self.recreate_databases()
        self.flush_broker()
        self.dingtalk.start()
        self.kingdee.start()
        self.env = self.environment()
        self.env["_AIRFLOW_WWW_USER_USERNAME"] = self.config.admin_user
        self.env["_AIRFLOW_WWW_USER_PASSWORD"] = self.config.admin_password
        self.initialise()
        self.spawn("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port),
                                  "--workers", "1"])
        self.spawn("scheduler", ["scheduler"])
        self.spawn("dag-processor", ["dag-processor"])
        self.spawn("triggerer", ["triggerer"])
        for number in range(1, self.celery_workers + 1):
            self.spawn(f"worker-{number}", [
                "celery", "worker", "--celery-hostname", f"{self.config.name}-worker-{number}@%h",
                "--concurrency", str(self.config.worker_concurrency)],
                AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()))
        self.wait_ready(timeout)

    @property
    def celery_workers(self) -> int:
        return self.config.workers if self.config.executor == "CeleryExecutor" else 0

    def _databases(self, *, create: bool) -> None:
        admin = sa.create_engine(sa.make_url(self.config.postgres_url).set(drivername="postgresql+psycopg"),
                                 isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for role in ("airflow", "staging"):
                name = f"dk_{self.config.name}_{role}"
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                if create:
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()

    def recreate_databases(self) -> None:
        self._databases(create=True)

    def drop_databases(self) -> None:
        self._databases(create=False)

    def flush_broker(self) -> None:
        import redis

        client = redis.Redis.from_url(self.config.redis_url, db=self.config.redis_db)
        client.flushdb()
        client.close()

    def initialise(self) -> None:
        """docker/airflow-init.sh, as compose's airflow-init runs it: migrate, admin user, staging."""
        with open(self.log_dir / "init.log", "w") as log:
            proc = subprocess.run(["bash", str(INIT_SCRIPT)], env=self.env, cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            tail = (self.log_dir / "init.log").read_text(encoding="utf-8")[-3000:]
            raise RuntimeError(f"airflow-init failed (exit {proc.returncode}):\n{tail}")

    def spawn(self, name: str, args: list[str], **extra_env: str) -> None:
        self.commands[name] = (args, extra_env)
        log = open(self.log_dir / f"{name}.log", "a")  # noqa: SIM115 - the process writes it until stopped
        self.processes[name] = subprocess.Popen(["airflow", *args], env={**self.env, **extra_env}, cwd=ROOT,
                                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to one service's process group and wait for it to end (a crash, with SIGKILL)."""
        proc = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(60)

    def respawn(self, name: str) -> None:
        """Start a stopped service again with the command it was started with (its log goes on)."""
        args, extra_env = self.commands[name]
        self.spawn(name, args, **extra_env)

    def wait_ready(self, timeout: float) -> None:
        """Healthy components (scheduler, dag-processor, triggerer heartbeats), ready workers, DAG parsed."""
        deadline = time.monotonic() + timeout
        workers = [n for n in self.processes if n.startswith("worker-")]
        missing: list[str] = list(HEALTHY_COMPONENTS)
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited (code {proc.returncode}):\n{self.log_tail(name)}")
            with contextlib.suppress(requests.RequestException, ValueError):
                health = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
                missing = [c for c in HEALTHY_COMPONENTS if health.get(c, {}).get("status") != "healthy"]
            missing += [w for w in workers if " ready." not in self.log_tail(w, 20000)]
            if not missing and self.dag_parsed():
                return
            time.sleep(2)
        raise RuntimeError(f"not ready within {timeout:.0f} s: {missing or ['DAG ' + self.dag_id]}")

    def dag_parsed(self) -> bool:
        with contextlib.suppress(requests.RequestException, RuntimeError):
            self.api().call("GET", f"/dags/{self.dag_id}")
            return True
        return False

    def api(self) -> ApiClient:
        return ApiClient(self.api_url, self.config.admin_user, self.config.admin_password)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace")[-chars:] if path.exists() else ""

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to each process group (warm shutdown for Celery), SIGKILL for what is left after
        ``grace`` seconds. Deaf to Ctrl-C and SIGTERM meanwhile: `make` passes its SIGTERM on to this
        process, which a process-group kill has signalled already, and a second signal cutting the
        stop short would leave the processes running."""
        with stop_signals_ignored():
            for proc in self.processes.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            for proc in self.processes.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.1, deadline - time.monotonic()))
            for proc in self.processes.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self.processes.clear()
            self.dingtalk.stop()
            with contextlib.suppress(Exception):  # never started when the databases could not be created
                self.kingdee.stop()


@contextlib.contextmanager
def stop_signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored inside (only the main thread may change signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in kept.items():
            signal.signal(number, handler)


def banner(topology: Topology) -> str:
    """What the operator needs once everything runs: where to log in, and how to see a run's outcome
    (docs/operating.md, "Trying it on one machine")."""
    config = topology.config
    staging_url = topology.database_url("staging", "postgresql+psycopg")
    kingdee_root = topology.kingdee.base_url.removesuffix("/k3cloud/")
    python = os.path.relpath(sys.executable, Path.cwd()) if sys.executable.startswith(str(ROOT)) else sys.executable
    # With --events the DAG reads the scheme from a folder of the topology's own (DK_SCHEMES_DIR).
    schemes_dir = topology.env.get("DK_SCHEMES_DIR")
    scheme_file = Path(schemes_dir) / SCHEME_FILE.name if schemes_dir else SCHEME_FILE
    scheme = scheme_file.relative_to(ROOT) if scheme_file.is_relative_to(ROOT) else scheme_file
    events = (f"\nEvents:    curl {topology.dingtalk.base_url}/_emulator/stream   (the scheme runs on approval events)"
              if config.events else "")
    return f"""
Airflow:   {topology.api_url}   user {config.admin_user}, password {config.admin_password}
DAG:       {topology.dag_id} (paused: switch it on; it runs the current hour at once)
Emulators: DingTalk {topology.dingtalk.base_url} ({len(topology.seed)} claims), Kingdee {topology.kingdee.base_url}
Bills:     curl {kingdee_root}/_emulator/health{events}
Staging:   {staging_url}
Reports:   {config.state_dir}/reports/{topology.scheme.id}/<run id>.txt, or from staging:
           STAGING_DATABASE_URL={staging_url} {python} -m dingtalk_kingdee.reports --scheme {scheme} --run '<run id>'
Logs:      {topology.log_dir} (task logs under tasks/)
Ctrl-C stops everything; the databases stay until the next start."""


def main(argv: list[str] | None = None) -> None:
    defaults = TopologyConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default=defaults.name, help="database and queue names: dk_<name>_...")
    parser.add_argument("--executor", choices=EXECUTORS, default=defaults.executor)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="Celery workers (CeleryExecutor)")
    parser.add_argument("--worker-concurrency", type=int, default=defaults.worker_concurrency)
    parser.add_argument("--claims", type=int, default=defaults.claims)
    parser.add_argument("--postgres", default=defaults.postgres_url, help="an admin URL of the PostgreSQL server")
    parser.add_argument("--redis", default=defaults.redis_url, help="the Redis server (without a db number)")
    parser.add_argument("--redis-db", type=int, default=defaults.redis_db)
    parser.add_argument("--events", action="store_true", help="the scheme runs on DingTalk Stream events too")
    args = parser.parse_args(argv)
    config = TopologyConfig(name=args.name, executor=args.executor, events=args.events, workers=args.workers,
                            worker_concurrency=args.worker_concurrency,
                            claims=args.claims, postgres_url=args.postgres, redis_url=args.redis,
                            redis_db=args.redis_db, state_dir=ROOT / "var" / args.name)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    workers = f"{config.workers} Celery workers" if config.executor == "CeleryExecutor" else "no worker (LocalExecutor)"
    print(f"Starting api-server, scheduler, dag-processor, triggerer and {workers} ...", flush=True)
    with Topology(config) as topology:
        print(banner(topology), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while all(p.poll() is None for p in topology.processes.values()):
                time.sleep(1)
        print("Stopping ...", flush=True)


if __name__ == "__main__":
    main()
