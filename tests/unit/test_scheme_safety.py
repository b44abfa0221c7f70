"""Scheme files that could mislead: value maps outside the scheme's folder, a key given twice."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dingtalk_kingdee.errors import SchemeError
from dingtalk_kingdee.scheme import load_scheme

SCHEMES = Path(__file__).resolve().parents[2] / "include" / "schemes"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copytree(SCHEMES, tmp_path / "schemes")
    (tmp_path / "outside.csv").write_text("key,value\nmanager4500,EMP9999\n", encoding="utf-8")
    return tmp_path / "schemes"


def _with(folder: Path, old: str, new: str) -> Path:
    file = folder / "expense_to_paybill.yaml"
    text = file.read_text(encoding="utf-8")
    assert old in text
    file.write_text(text.replace(old, new, 1), encoding="utf-8")
    return file


EMPLOYEES = "file: employees.csv"


@pytest.mark.parametrize("target", ["../../outside.csv", "../outside.csv", "{outside}"])
def test_a_value_map_file_outside_the_schemes_folder_is_refused(folder: Path, target: str) -> None:
    target = target.format(outside=folder.parent / "outside.csv")
    file = _with(folder, EMPLOYEES, f"file: {target}")
    with pytest.raises(SchemeError, match="must stay inside"):
        load_scheme(file)


def test_a_value_map_file_in_a_subfolder_of_the_schemes_folder_is_fine(folder: Path) -> None:
    (folder / "expense_to_paybill" / "sub").mkdir()
    shutil.copy(folder / "expense_to_paybill" / "employees.csv", folder / "expense_to_paybill" / "sub")
    scheme = load_scheme(_with(folder, EMPLOYEES, "file: sub/employees.csv"))
    assert scheme.maps


def test_a_key_given_twice_is_refused_with_the_key_and_its_line(folder: Path) -> None:
    file = folder / "expense_to_paybill.yaml"
    lines = file.read_text(encoding="utf-8").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  max_amount_per_claim:"))
    lines.insert(at + 1, "  max_amount_per_claim: 99999999")
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SchemeError, match=f'key "max_amount_per_claim" .*line {at + 2}'):
        load_scheme(file)
