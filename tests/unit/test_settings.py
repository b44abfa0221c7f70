"""Settings: the folders come from the environment and Airflow's configuration, never from where the
package lies."""

from __future__ import annotations

from pathlib import Path

import pytest

from dingtalk_kingdee.settings import get_settings


@pytest.fixture
def bare_env(monkeypatch, tmp_path):
    for name in ("DK_SCHEMES_DIR", "DK_VAR_DIR", "STAGING_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(tmp_path / "project" / "dags"))
    return tmp_path


def test_schemes_default_to_include_beside_the_dags_folder(bare_env):
    assert get_settings().schemes_dir == bare_env / "project" / "include" / "schemes"


def test_var_and_staging_default_under_airflow_home(bare_env):
    settings = get_settings()
    assert settings.var_dir == bare_env / "home" / "dingtalk_kingdee"
    assert settings.staging_database_url == f"sqlite:///{bare_env / 'home' / 'dingtalk_kingdee' / 'staging.db'}"


def test_environment_wins_over_the_defaults(bare_env, monkeypatch):
    monkeypatch.setenv("DK_SCHEMES_DIR", str(bare_env / "schemes"))
    monkeypatch.setenv("DK_VAR_DIR", str(bare_env / "var"))
    settings = get_settings()
    assert settings.schemes_dir == bare_env / "schemes"
    assert settings.var_dir == bare_env / "var"
    assert settings.staging_database_url == f"sqlite:///{bare_env / 'var' / 'staging.db'}"


def test_the_default_schemes_folder_of_this_project_holds_its_schemes(monkeypatch):
    """The project's own layout: dags/ and include/schemes/ side by side."""
    monkeypatch.delenv("DK_SCHEMES_DIR", raising=False)
    root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(root / "dags"))
    assert sorted(get_settings().schemes_dir.glob("*.yaml"))


def test_no_module_of_the_package_locates_files_by_its_own_path():
    package = Path(__file__).resolve().parents[2] / "plugins" / "dingtalk_kingdee"
    users = [str(p.relative_to(package)) for p in package.rglob("*.py") if "__file__" in p.read_text(encoding="utf-8")]
    assert users == []
