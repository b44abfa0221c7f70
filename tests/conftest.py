"""Shared test fixtures: a real staging database (PostgreSQL when configured) and emulator plugins."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import settings

pytest_plugins = ["tests.fixtures.dingtalk", "tests.fixtures.kingdee"]

# No per-example deadline: on a busy 2-core CI machine a pandas call can take longer than Hypothesis'
# default 200 ms once and not again, which it reports as a flaky failure unrelated to the property.
settings.register_profile("project", deadline=None)
settings.load_profile("project")

# CI points this at PostgreSQL (.ci/run); locally the default is a per-test SQLite file.
TEST_DATABASE_URL = os.environ.get("DK_TEST_DATABASE_URL", "")


@pytest.fixture
def staging_url(tmp_path) -> str:
    """A fresh, empty staging database for one test: a new PostgreSQL database or a SQLite file."""
    if not TEST_DATABASE_URL:
        yield f"sqlite:///{tmp_path / 'staging.db'}"
        return
    name = f"dk_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(TEST_DATABASE_URL).set(database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def engine(staging_url):
    """The staging engine on ``staging_url``, its tables created."""
    from dingtalk_kingdee import staging

    engine = staging.connect(staging_url)
    yield engine
    engine.dispose()
    staging.get_engine.cache_clear()
