"""`make demo` and `make airflow` each keep their own Airflow home, apart from the one they inherit.

The demo's `airflow dags test` runs once landed in the Airflow home `make airflow` uses; their logical
dates (one an hour ahead) then blocked the hourly schedule ("run already exists"). Both scripts now
keep their metadata DB under their own state directory, whatever AIRFLOW_HOME they were started with.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_demo_migrates_and_runs_airflow_in_its_own_home(tmp_path, monkeypatch):
    operator_home = tmp_path / "operator_airflow_home"  # what `make airflow` (or anyone) inherits
    operator_home.mkdir()
    monkeypatch.setenv("AIRFLOW_HOME", str(operator_home))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    demo = load_script("demo")
    demo_dir = tmp_path / "demo"
    conn = {"conn_type": "dingtalk", "host": "http://127.0.0.1:1", "login": "k", "password": "s"}

    env = demo.airflow_env(demo_dir, f"sqlite:///{demo_dir / 'staging.db'}", {"dingtalk_default": conn})
    demo.migrate_airflow_home(env)

    assert Path(env["AIRFLOW_HOME"]) == demo_dir / "airflow_home"
    with sqlite3.connect(demo_dir / "airflow_home" / "airflow.db") as db:
        assert db.execute("select count(*) from dag_run").fetchone() == (0,)
    assert list(operator_home.iterdir()) == []
    assert env["STAGING_DATABASE_URL"].endswith(str(demo_dir / "staging.db"))


def test_make_airflow_uses_the_airflow_home_of_its_state_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(ROOT / "airflow_home"))  # what the Makefile exports
    for name in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER", "AIRFLOW__CORE__LOAD_EXAMPLES",
                 "AIRFLOW__CORE__PARALLELISM", "PYTHONPATH", "PATH"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test
    script = load_script("airflow_with_emulators")
    state = script.StateFiles(tmp_path / "airflow")

    script.airflow_defaults(state)

    assert os.environ["AIRFLOW_HOME"] == str(tmp_path / "airflow" / "airflow_home")
    assert state.staging_db.parent == state.kingdee_db.parent == state.airflow_home.parent == tmp_path / "airflow"
    assert script.STATE_DIR != load_script("demo").DEMO_DIR
