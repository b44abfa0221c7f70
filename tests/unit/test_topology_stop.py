"""scripts/topology.py stops every process it started, even when a second signal comes meanwhile:
`make topology` passes its SIGTERM on to the script, which a process-group kill has already signalled,
and an impatient second Ctrl-C is common. Cut short, the stop leaves Airflow processes running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, signal, subprocess, sys, threading
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from scripts.topology import Topology, TopologyConfig

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as main() does
topology = Topology(TopologyConfig(name="stoptest", claims=1, state_dir=Path(sys.argv[2])))
# A process that takes its time to stop (a Celery worker finishing its task).
child = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 60"], start_new_session=True)
topology.processes["slow"] = child
print(child.pid, flush=True)
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
topology.stop(grace=2)
print("stopped", flush=True)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_second_signal_does_not_cut_the_stop_short(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT), str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    pid = int(result.stdout.split()[0])
    try:
        assert "stopped" in result.stdout, result.stderr[-2000:]
        assert not alive(pid), "the slow process was left running"
    finally:
        if alive(pid):
            os.killpg(pid, 9)
