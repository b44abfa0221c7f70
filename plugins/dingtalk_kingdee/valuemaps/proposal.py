"""The proposal file beside a value map, and applying its unambiguous lines to the map.

``<map>.proposal.csv`` (UTF-8 with BOM, so spreadsheet programs open it right) has one row per
suggestion: ``status,key,value,label,basis,evidence,candidates``. ``proposed`` rows are lines ready to
add (``key,value`` are the map's two columns); every other status is for a person to decide (see
``Status``). Applying appends the ``proposed`` lines to the map and nothing else: existing lines are
never rewritten, reordered or removed, and a key a person added meanwhile is left alone.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

from dingtalk_kingdee.valuemaps.model import MapSuggestion, Row, Status

PROPOSAL_COLUMNS = ("status", "key", "value", "label", "basis", "evidence", "candidates")
MAP_HEADER = ("key", "value")


def proposal_path(map_file: Path) -> Path:
    """``employees.csv`` -> ``employees.proposal.csv`` in the same folder."""
    return map_file.with_name(f"{map_file.stem}.proposal.csv")


def render_proposal(suggestion: MapSuggestion) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PROPOSAL_COLUMNS)
    for row in suggestion.rows:
        writer.writerow([row.status.value, row.key, row.value, row.label, row.basis.value if row.basis else "",
                         row.evidence, " | ".join(row.candidates)])
    return buffer.getvalue()


def write_proposal(path: Path, suggestion: MapSuggestion) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_proposal(suggestion), encoding="utf-8-sig")
    return path


def read_proposal(path: Path) -> list[dict[str, str]]:
    """The rows of a proposal file as dicts by column (for tests and tools)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _keys_in_map(map_file: Path) -> set[str]:
    if not map_file.exists():
        return set()
    with map_file.open(encoding="utf-8-sig", newline="") as handle:
        return {row[0].strip() for row in list(csv.reader(handle))[1:] if row and row[0].strip()}


def apply_proposal(map_file: Path, suggestion: MapSuggestion) -> list[Row]:
    """Append the proposed lines whose key the map does not hold yet; returns the lines added and
    marks them ``applied`` in ``suggestion``."""
    present = _keys_in_map(map_file)
    added = [row for row in suggestion.proposed if row.key not in present]
    if not added:
        return []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if not map_file.exists():
        writer.writerow(MAP_HEADER)
    else:
        text = map_file.read_text(encoding="utf-8-sig")
        if text and not text.endswith("\n"):
            buffer.write("\n")
    for row in added:
        writer.writerow([row.key, row.value])
    with map_file.open("a", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())
    applied_keys = {row.key for row in added}
    suggestion.rows = [replace(row, status=Status.APPLIED) if row.status is Status.PROPOSED
                       and row.key in applied_keys else row for row in suggestion.rows]
    return added
