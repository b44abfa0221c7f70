"""Variants of the shipped scheme for the exactly-once tests and the fault matrix."""

from __future__ import annotations

import shutil
from pathlib import Path

from dingtalk_kingdee.scheme import Scheme, load_scheme

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "include" / "schemes" / "expense_to_paybill.yaml"


def scheme_variant(directory: Path, drop_fields: tuple[str, ...] = (), replace: dict[str, str] | None = None) -> Path:
    """The shipped scheme file (and its value maps) copied into ``directory`` without the header
    mappings of ``drop_fields`` and with those of ``replace`` (field → mapping text); returns its path."""
    replace = replace or {}
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(SHIPPED.with_suffix(""), directory / SHIPPED.stem, dirs_exist_ok=True)
    lines = SHIPPED.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        name = line.strip().partition(":")[0]
        if not line.startswith("    ") or line.startswith("     "):
            kept.append(line)
        elif name in drop_fields:
            continue
        elif name in replace:
            kept.append(f"    {name}: {replace[name]}\n")
        else:
            kept.append(line)
    assert len(lines) - len(kept) == len(drop_fields), "every dropped field is mapped in the shipped scheme"
    path = directory / SHIPPED.name
    path.write_text("".join(kept), encoding="utf-8")
    return path


def scheme_without_bill_no(directory: Path) -> Scheme:
    """The shipped scheme with FBillNo unmapped (a valid configuration: Kingdee numbers the bill)."""
    return load_scheme(scheme_variant(directory, ("FBillNo",)))
