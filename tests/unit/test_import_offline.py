"""Importing the package and building the DAGs never touches the network."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_package_and_dags_import_without_network():
    code = textwrap.dedent("""
        import socket
        attempts = []
        def refuse(self, address, *args, **kwargs):
            attempts.append(address)
            raise OSError(f"network touched: {address}")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = lambda address, *a, **k: refuse(None, address)
        import dingtalk_kingdee, dingtalk_kingdee.pipeline, dingtalk_kingdee.hooks.dingtalk
        import dingtalk_kingdee.hooks.kingdee, dingtalk_kingdee.transform, dingtalk_kingdee.staging
        from dingtalk_kingdee.dag_factory import build_all
        dags = build_all()
        assert dags, "no DAGs"
        assert not attempts, attempts
        print("offline ok", sorted(dags))
    """)
    # The schemes come from their default place, include/schemes beside the DAGs folder.
    env = {key: value for key, value in os.environ.items() if key != "DK_SCHEMES_DIR"}
    env.update(PYTHONPATH=str(ROOT / "plugins"), AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "offline ok" in proc.stdout
