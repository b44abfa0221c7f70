"""A broken scheme file costs only its own DAG: the other schemes' DAGs stay, the error names the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from dingtalk_kingdee.errors import SchemeError
from dingtalk_kingdee.scheme import load_schemes, load_schemes_apart

ROOT = Path(__file__).resolve().parents[2]
SCHEMES = ROOT / "include" / "schemes"


@pytest.fixture
def schemes_dir(tmp_path: Path, monkeypatch) -> Path:
    """The shipped scheme (with its value maps), a second scheme file that is not YAML, and a third
    reusing the first one's id."""
    folder = tmp_path / "schemes"
    shutil.copytree(SCHEMES, folder)
    (folder / "broken.yaml").write_text("id: broken\ntitle: [unclosed\n", encoding="utf-8")
    text = (SCHEMES / "expense_to_paybill.yaml").read_text(encoding="utf-8")
    (folder / "zz_copy.yaml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("DK_SCHEMES_DIR", str(folder))
    return folder


def test_the_loader_keeps_the_good_schemes_and_names_each_broken_file(schemes_dir: Path) -> None:
    schemes, errors = load_schemes_apart(schemes_dir)
    assert [s.id for s in schemes] == ["expense_to_paybill"]
    assert sorted(Path(f).name for f in errors) == ["broken.yaml", "zz_copy.yaml"]
    assert "not valid YAML" in str(errors[str(schemes_dir / "broken.yaml")])
    assert "already used" in str(errors[str(schemes_dir / "zz_copy.yaml")])
    with pytest.raises(SchemeError, match=r"broken\.yaml"):
        load_schemes(schemes_dir)


def test_dagbag_keeps_the_good_dags_and_reports_the_broken_file(schemes_dir: Path, tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    shutil.copytree(ROOT / "dags", dags)
    bag = DagBag(dag_folder=str(dags))

    assert "dingtalk_kingdee_expense_to_paybill" in bag.dags
    assert "dingtalk_kingdee_valuemaps_expense_to_paybill" in bag.dags
    assert list(bag.import_errors) == [str(dags / "dingtalk_kingdee_scheme_errors.py")]
    error = next(iter(bag.import_errors.values()))
    assert "broken.yaml" in error and "not valid YAML" in error and "zz_copy.yaml" in error
    # The good DAGs come from a file without an import error: Airflow marks those of a failing file stale.
    assert {Path(d.fileloc).name for d in bag.dags.values()} == {"dingtalk_kingdee_sync.py",
                                                                  "dingtalk_kingdee_valuemaps.py"}


def test_without_broken_files_the_errors_file_is_quiet(monkeypatch) -> None:
    monkeypatch.setenv("DK_SCHEMES_DIR", str(SCHEMES))
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {} and "dingtalk_kingdee_expense_to_paybill" in bag.dags
