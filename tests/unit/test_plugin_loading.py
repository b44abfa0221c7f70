"""Airflow's plugin manager imports no product module as a top-level module.

Airflow executes every ``.py`` file under the plugins folder as a module named after the file's stem
(``hooks/dingtalk.py`` as ``dingtalk``, ``dag_factory.py`` as ``dag_factory``, ``__init__.py`` as
``__init__``), in the scheduler, the dag-processor, the API server and the workers.
``plugins/.airflowignore`` keeps the plugin manager out of the ``dingtalk_kingdee`` package, which is
imported as a package (installed, or from the plugins folder that Airflow puts on ``sys.path``).

Each test runs Airflow's own plugin loading (the core manager with each ignore-file syntax, and the task
SDK's manager, which always reads the ignore file as glob) in a subprocess with a fresh AIRFLOW_HOME, then
lists the modules loaded from the plugins folder under any name but ``dingtalk_kingdee[.*]``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"

LOAD_PLUGINS = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    from airflow import plugins_manager as core_manager
    from airflow import settings
    from airflow.sdk import plugins_manager as sdk_manager

    folder = Path(sys.argv[1]).resolve()
    assert Path(settings.PLUGINS_FOLDER).resolve() == folder, settings.PLUGINS_FOLDER
    errors = {}
    plugins = []
    for manager in (core_manager, sdk_manager):
        loaded, failed = manager._get_plugins()
        plugins += [p.name for p in loaded]
        errors.update(failed)

    def from_folder(module):
        file = getattr(module, "__file__", None)
        return bool(file) and Path(file).resolve().is_relative_to(folder)

    strays = sorted(name for name, module in list(sys.modules.items())
                    if from_folder(module) and name.split(".")[0] != "dingtalk_kingdee")
    print(json.dumps({"strays": strays, "errors": sorted(errors), "plugins": plugins,
                      "on_sys_path": str(folder) in sys.path}))
""")


def load_plugins(folder: Path, tmp_path: Path, ignore_file_syntax: str) -> dict:
    """Airflow's plugin loading over ``folder`` in a clean process; what it left in ``sys.modules``."""
    home = tmp_path / f"airflow_home_{ignore_file_syntax}"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(folder),
        "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "no_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX": ignore_file_syntax,
        # The product package resolves to this folder's copy, as it does when Airflow adds the folder.
        "PYTHONPATH": str(folder),
    }
    proc = subprocess.run([sys.executable, "-c", LOAD_PLUGINS, str(folder)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("ignore_file_syntax", ["glob", "regexp"])
def test_plugin_manager_imports_no_product_module_top_level(tmp_path, ignore_file_syntax):
    result = load_plugins(PLUGINS, tmp_path, ignore_file_syntax)
    assert result["strays"] == [], f"imported from plugins/ as top-level modules: {result['strays']}"
    assert result["errors"] == []
    assert result["on_sys_path"], "Airflow no longer puts the plugins folder on sys.path"


def test_the_check_sees_a_plugins_folder_without_the_ignore_file(tmp_path):
    """The same check over a copy of plugins/ without .airflowignore finds the top-level imports."""
    copy = tmp_path / "plugins"
    shutil.copytree(PLUGINS, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".airflowignore"))
    result = load_plugins(copy, tmp_path, "glob")
    assert {"__init__", "dag_factory", "dingtalk", "kingdee"} <= set(result["strays"]), result["strays"]
