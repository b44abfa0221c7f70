"""The Airflow UI of `make airflow` in headless Chromium (Debian's `chromium`, driven by Playwright).

Runs with `make test-ui` (DK_UI_TEST=1), not with `make test`. The same script as `make airflow`
(scripts/airflow_with_emulators.py) is started on free ports with its state in a temporary
directory; nothing is downloaded (Playwright drives the system browser). Screenshots are kept in
var/ui-artefacts/. While working on the tests, DK_UI_BASE_URL and DK_UI_STATE_DIR point them at a
`make airflow` already running instead (its `--state-dir`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.gates import skip_folder_unless

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "var" / "ui-artefacts"
CHROMIUM = os.environ.get("DK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DAG_ID = "dingtalk_kingdee_expense_to_paybill"
START_TIMEOUT_S = 600


def pytest_collection_modifyitems(config, items):
    skip_folder_unless(items, "tests/ui/", "DK_UI_TEST", "the browser test runs with `make test-ui` (DK_UI_TEST=1)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AirflowUI:
    """`make airflow`'s script, running: where to reach it and where it keeps its state."""

    base_url: str
    state_dir: Path
    inherited_home: Path | None  # None: not started here

    def api(self, path: str, body: dict | None = None, method: str | None = None) -> dict:
        request = urllib.request.Request(f"{self.base_url}/api/v2{path}", method=method or ("POST" if body else "GET"),
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.load(answer)

    def wait_for(self, what: str, check, timeout: float = 300, every: float = 3):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = check()
            except (TimeoutError, urllib.error.URLError):  # a busy api-server: ask again
                result = None
            if result:
                return result
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def airflow_ui() -> Iterator[AirflowUI]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    if os.environ.get("DK_UI_BASE_URL"):
        yield AirflowUI(os.environ["DK_UI_BASE_URL"], Path(os.environ["DK_UI_STATE_DIR"]), None)
        return
    work = Path(tempfile.mkdtemp(prefix="dk-ui-"))
    inherited_home = work / "inherited_airflow_home"  # what the Makefile exports: must stay untouched
    inherited_home.mkdir()
    port = free_port()
    env = dict(os.environ, AIRFLOW_HOME=str(inherited_home), AIRFLOW__API__PORT=str(port),
               AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
               AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("STAGING_DATABASE_URL", None)
    log_path = ARTEFACTS / "airflow.log"
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "airflow_with_emulators.py"), "--state-dir", str(work / "state"),
             "--claims", "80", "--dingtalk-port", str(free_port()), "--kingdee-port", str(free_port()),
             "--late-approval-delay", "3600"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    ui = AirflowUI(f"http://127.0.0.1:{port}", work / "state", inherited_home)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Airflow is up" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`make airflow`'s script did not come up; its log: {log_path}")
            time.sleep(2)
        yield ui
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def browser_page(airflow_ui):
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="dk-ui-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000}, locale="en-US")
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def screenshot(page, name: str) -> Path:
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

