"""The slow tests (fault matrix, volume) run with `make test-reliability` (DK_RELIABILITY=1), not with `make test`."""

from __future__ import annotations

from tests.e2e.conftest import world_factory  # noqa: F401  (the e2e world: both emulators, staging)
from tests.fixtures.gates import skip_folder_unless


def pytest_collection_modifyitems(config, items):
    skip_folder_unless(items, "tests/reliability/", "DK_RELIABILITY",
                       "the slow tests (fault matrix, volume) run with `make test-reliability` (DK_RELIABILITY=1)")
