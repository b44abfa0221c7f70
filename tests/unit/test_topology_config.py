"""scripts/topology.py's choices, without starting anything: the executor and the events scheme."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts.topology import SCHEME_FILE, Topology, TopologyConfig


def environment(tmp_path: Path, **choices) -> tuple[Topology, dict[str, str]]:
    topology = Topology(TopologyConfig(state_dir=tmp_path, **choices))
    return topology, topology.environment()


def test_celery_is_the_default_with_its_workers(tmp_path):
    topology, env = environment(tmp_path)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert topology.celery_workers == 2
    assert "DK_SCHEMES_DIR" not in env


def test_local_executor_runs_no_celery_worker_and_few_task_processes(tmp_path):
    topology, env = environment(tmp_path, executor="LocalExecutor", parallelism=3,
                                airflow_settings={"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5"})
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "3"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] == "0.5"
    assert topology.celery_workers == 0


def test_an_unknown_executor_is_refused(tmp_path):
    with pytest.raises(ValueError, match="executor must be one of"):
        Topology(TopologyConfig(state_dir=tmp_path, executor="KubernetesExecutor"))


def test_events_give_the_scheme_events_enabled_beside_its_value_maps(tmp_path):
    topology, env = environment(tmp_path, events=True)
    folder = Path(env["DK_SCHEMES_DIR"])
    scheme = yaml.safe_load((folder / "expense_to_paybill.yaml").read_text(encoding="utf-8"))
    assert scheme["events"] == {"enabled": True}
    assert scheme["source"]["process_code"] == topology.scheme.source.process_code
    assert sorted(p.name for p in (folder / "expense_to_paybill").iterdir()) == sorted(
        p.name for p in (SCHEME_FILE.parent / "expense_to_paybill").iterdir())
