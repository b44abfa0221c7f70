"""Where the emulators find the demo data (``universe.json``, ``kingdee_basedata.json``).

Every emulator entry point takes its files as explicit parameters; this module gives their
defaults. The demo folder is, in order:

1. ``$DK_DEMO_DIR`` when set (an installed emulator, a container mounting the data elsewhere);
2. ``include/demo`` of the source checkout this package runs from (``emulators/dk_emulators`` sits
   two levels below the repository root);
3. ``include/demo`` under the current directory (an installed package run from a checkout's root).

When none exists the first candidate is returned anyway, so the error names a path to fix.
"""

from __future__ import annotations

import os
from pathlib import Path

DEMO_DIR_ENV = "DK_DEMO_DIR"
UNIVERSE_FILE = "universe.json"
BASEDATA_FILE = "kingdee_basedata.json"


def demo_dir() -> Path:
    """The demo data folder, resolved now (see the module docstring)."""
    configured = os.environ.get(DEMO_DIR_ENV, "").strip()
    if configured:
        return Path(configured)
    candidates = [Path(__file__).resolve().parents[2] / "include" / "demo", Path.cwd() / "include" / "demo"]
    return next((path for path in candidates if path.is_dir()), candidates[0])


def demo_file(name: str) -> Path:
    """A file of the demo folder; ``FileNotFoundError`` at reading time says to set ``DK_DEMO_DIR``."""
    return demo_dir() / name


def read_demo_text(path: Path) -> str:
    """The text of a demo data file, with a hint at ``DK_DEMO_DIR`` when it is missing."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"demo data file {path} not found; pass its path explicitly or set {DEMO_DIR_ENV} "
            "to the folder holding universe.json and kingdee_basedata.json") from error
