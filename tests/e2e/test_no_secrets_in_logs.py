"""No secret and no payee account in any log line at any level: a faulty sync run by Airflow at DEBUG.

The runs lose their DingTalk token and Kingdee session (so new ones are issued and registered with
the masker mid-run), meet dropped connections and 5xx answers; every line written to the
console, Python's logging and the task logs is searched for the app secrets, the Kingdee password,
every access token and session id the emulators issued, and the payees' bank accounts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from dk_emulators.dingtalk.auth import TokenIssuer
from dk_emulators.kingdee.auth import Authenticator

pytestmark = pytest.mark.e2e

DAG_ID = "dingtalk_kingdee_expense_to_paybill"


@pytest.fixture
def issued(monkeypatch) -> list[str]:
    """Every access token and session id the emulators hand out during the test."""
    values: list[str] = []
    issue, new_session = TokenIssuer.issue, Authenticator._new_session

    def recording_issue(self, app_key, ttl):
        token, seconds = issue(self, app_key, ttl)
        values.append(token)
        return token, seconds

    def recording_session(self, user):
        ids = new_session(self, user)
        values.extend(ids)
        return ids

    monkeypatch.setattr(TokenIssuer, "issue", recording_issue)
    monkeypatch.setattr(Authenticator, "_new_session", recording_session)
    return values


def _payee_accounts(world) -> set[str]:
    accounts = set()
    for claim in world.seed:
        for text in (str(c.get("value")) for c in claim.instance["form_component_values"]):
            accounts.update(word for word in text.replace('"', " ").split() if word.startswith("6222")
                            and len(word) >= 12)
    return accounts


def _dags_test(world, when: datetime) -> subprocess.CompletedProcess:
    """``airflow dags test`` of the scheme's DAG in a process of its own, with Airflow's logging at
    DEBUG from the start (the task runs in that process, under Airflow's in-process supervisor)."""
    conf = {"window_start": (world.now - timedelta(days=30)).isoformat(), "window_end": world.now.isoformat()}
    env = {**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG", "DK_TASK_RETRIES": "0"}
    return subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", DAG_ID, when.isoformat(), "--conf", json.dumps(conf)],
        env=env, capture_output=True, text=True, timeout=600, check=False)


def _texts(home: Path, world, *runs: subprocess.CompletedProcess) -> dict[str, str]:
    """Every log the runs wrote: their console output and the task log files."""
    texts = {f"run {i}": run.stdout + run.stderr for i, run in enumerate(runs, start=1)}
    for path in (home / "logs").rglob("*"):
        if path.is_file() and path.stat().st_mtime >= world.now.timestamp() - 600:
            texts[str(path)] = path.read_text(encoding="utf-8", errors="replace")
    assert all("[debug" in texts[f"run {i}"] for i in range(1, len(runs) + 1)), "Airflow did not log at DEBUG"
    return texts


def _lines_with(texts: dict[str, str], secrets: dict[str, str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for what, value in secrets.items():
        for text in texts.values():
            found.setdefault(what, []).extend(line for line in text.splitlines() if value in line)
    return {what: lines for what, lines in found.items() if lines}


# Airflow 3.3.2's in-process supervisor (dag.test(), `airflow dags test`) logs each message the task
# sends it at DEBUG, body included (InProcessSupervisorComms.send, "Sending request"): the MaskSecret
# that Airflow's own connection lookup sends for the connection's password (execution_time.context.
# _mask_connection_secrets) shows the password there. The real supervisor omits a MaskSecret's body.
AIRFLOW_IN_PROCESS_LINE = ("Sending request", "MaskSecret(value=")


@pytest.fixture
def home() -> Path:
    home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()
    if not (home / ".migrated").exists():
        pytest.skip("Airflow's metadata database is not migrated here: run the suite with `make test`")
    return home


def test_a_faulty_sync_at_debug_logs_no_token_session_or_payee_account(world, issued, home):
    world.dingtalk.inject("invalid_token", api="get", times=1)
    world.dingtalk.inject("expired_token", api="listids", times=1)
    world.dingtalk.inject("drop", api="get", times=2)
    world.kingdee.inject("session_lost", service="BatchSave", times=1)
    world.kingdee.inject("http_502", service="ExecuteBillQuery", times=1)
    hour = world.now.replace(minute=0, second=0)
    first = _dags_test(world, hour)
    world.kingdee.inject("session_lost", service="ExecuteBillQuery", times=1)
    world.dingtalk.inject("token_40001", times=1)
    second = _dags_test(world, hour + timedelta(hours=1))
    assert world.bills(), (first.stdout + first.stderr)[-3000:]

    runtime = {f"issued token or session id {i}": value for i, value in enumerate(issued)}
    runtime.update({f"payee account {a}": a for a in _payee_accounts(world)})
    assert len(issued) >= 4 and len(runtime) > 6, runtime
    texts = _texts(home, world, first, second)
    assert _lines_with(texts, runtime) == {}

    # The connections' own secrets: only on Airflow's in-process supervisor line (strict xfail below).
    connection = {"dingtalk app secret": world.dingtalk.connection()["password"],
                  "kingdee password": world.kingdee.connection()["password"]}
    for what, lines in _lines_with(texts, connection).items():
        assert all(all(part in line for part in AIRFLOW_IN_PROCESS_LINE) for line in lines), (what, lines)


@pytest.mark.xfail(strict=True, reason="Airflow 3.3.2's in-process supervisor logs the MaskSecret that Airflow's "
                   "own connection lookup sends, password included, at DEBUG (InProcessSupervisorComms.send); "
                   "the real supervisor omits its body. Not reached through the project's code.")
def test_at_debug_the_connection_secrets_appear_in_no_log_of_airflow_dags_test(world, home):
    run = _dags_test(world, world.now.replace(minute=0, second=0))
    connection = {"dingtalk app secret": world.dingtalk.connection()["password"],
                  "kingdee password": world.kingdee.connection()["password"]}
    assert _lines_with(_texts(home, world, run), connection) == {}
