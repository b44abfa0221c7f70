"""Where the emulators look for the demo data: DK_DEMO_DIR first, else the checkout's include/demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dk_emulators import demo_data
from dk_emulators.dingtalk.seed import load_universe
from dk_emulators.kingdee.emulator import default_basedata

CHECKOUT_DEMO = Path(__file__).resolve().parents[2] / "include" / "demo"


def test_without_the_variable_the_checkout_demo_folder_is_used(monkeypatch, tmp_path):
    monkeypatch.delenv(demo_data.DEMO_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # not the repository root: the module's own location decides
    assert demo_data.demo_dir() == CHECKOUT_DEMO
    assert default_basedata() == CHECKOUT_DEMO / "kingdee_basedata.json"


def test_the_variable_names_the_folder(monkeypatch, tmp_path):
    (tmp_path / "universe.json").write_text(json.dumps({"employees": [], "departments": []}), encoding="utf-8")
    monkeypatch.setenv(demo_data.DEMO_DIR_ENV, str(tmp_path))
    assert demo_data.demo_dir() == tmp_path
    assert load_universe() == {"employees": [], "departments": []}
    with pytest.raises(FileNotFoundError, match=demo_data.DEMO_DIR_ENV):
        demo_data.read_demo_text(default_basedata())
