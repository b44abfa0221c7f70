"""Table values → rows of cells → per-label columns: the one rule set for reading a DingTalk table.

A table component's value is JSON text: a list of ``{"rowNumber", "rowValue": [cell, ...]}`` rows,
each cell ``{"label", "key", "componentType", "value", "extendValue"}``. Well-formed text is decoded
by msgspec straight into ``Row`` / ``Cell`` structs (about a third faster than into dicts, and cheaper
to free); anything else (a value already decoded, a cell that is not an object, an item without a
``rowValue`` list, text that is not JSON) is decoded generically, and its well-formed cells are then
made into the same ``Cell`` structs. Either way ``write_row`` is the only code that turns cells into
column values, so both decodings give the same columns by construction (tests compare them on the
golden claims, the reject corpus and generated tables).
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pandas as pd

from dingtalk_kingdee.transform.limits import (
    MAX_JSON_DEPTH,
    MAX_VALUE_CHARS,
    TOO_DEEP,
    exceeds_depth,
    loads_strict,
    too_long,
)


# Field names are DingTalk's JSON keys.
class Cell(msgspec.Struct, gc=False):
    """A table cell as the well-formed table JSON has it; other keys are skipped while decoding."""
    label: Any = None
    key: Any = None
    componentType: Any = None
    value: Any = None
    extendValue: Any = None


class Row(msgspec.Struct, gc=False):
    rowValue: list[Cell]
    rowNumber: Any = None


decode_json = msgspec.json.decode
_decode_rows = msgspec.json.Decoder(list[Row]).decode
_EMPTY_TEXTS = ("", "null", "[]")


def _parse_json_list(value: Any) -> tuple[Any, str | None]:
    """The generic decoding: a list as it is, or JSON text of a list; else why not (not JSON, a
    repeated key, nested too deeply, too long)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return [], None
    if isinstance(value, list):
        return (None, TOO_DEEP) if exceeds_depth(value) else (value, None)
    text = str(value).strip()
    if text in _EMPTY_TEXTS:
        return [], None
    problem = too_long(text)
    if problem is not None:
        return None, problem
    parsed, problem = loads_strict(text)
    if problem is not None:
        return None, problem
    if parsed is None:
        return [], None
    if not isinstance(parsed, list):
        return None, f"is a JSON {type(parsed).__name__}, not a list of rows"
    return parsed, None


# The keys whose value decides what a row says (which rows, which column, which value, a table or
# not, a select's label); a repeated ``key`` or ``rowNumber`` changes nothing the bill carries.
_KEY_NAMES = ("rowValue", "label", "componentType", "value", "extendValue")
_KEY_TOKENS = tuple(f'"{name}"' for name in _KEY_NAMES)


def _count_keys(value: Any, seen: dict[str, int]) -> bool:
    """Add the keys of ``_KEY_NAMES`` in a decoded value (at any depth) to ``seen``; False when the
    value nests deeper than ``MAX_JSON_DEPTH`` (it sits in a cell, itself 3 levels down)."""
    stack = [(value, 4)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if item.__class__ is dict:
            for key, child in item.items():
                if key in seen:
                    seen[key] += 1
                if child.__class__ is dict or child.__class__ is list:
                    stack.append((child, depth + 1))
        else:
            stack.extend((c, depth + 1) for c in item if c.__class__ is dict or c.__class__ is list)
    return True


def _each_key_once(text: str, rows: list[Row]) -> bool:
    """Whether the struct decoding saw every key that matters exactly once, within the depth limit.

    msgspec keeps the last of a repeated key silently. Each row and cell field, and each key inside
    a decoded value, comes from one key of the text; a text in which each key name occurs exactly as
    often as the decoding holds it has no repeated key of those names (a key spelt with ``\\u``
    escapes is not counted, so such text is left to the exact check). False means: decode again with
    the exact (slower) check; a string equal to a key name only sends a text there.
    """
    if "\\u" in text:
        return False
    seen = dict.fromkeys(_KEY_NAMES, 0)
    labels = kinds = values = exts = 0
    for row in rows:
        for cell in row.rowValue:
            if cell.label is not None:
                labels += 1
            if cell.componentType is not None:
                kinds += 1
            value = cell.value
            if value is not None:
                values += 1
                if (value.__class__ is dict or value.__class__ is list) and not _count_keys(value, seen):
                    return False
            ext = cell.extendValue
            if ext is not None:
                exts += 1
                if (ext.__class__ is dict or ext.__class__ is list) and not _count_keys(ext, seen):
                    return False
    expected = (seen["rowValue"] + len(rows), seen["label"] + labels, seen["componentType"] + kinds,
                seen["value"] + values, seen["extendValue"] + exts)
    return all(text.count(token) == count for token, count in zip(_KEY_TOKENS, expected, strict=True))


def decode_table(value: Any, typed: bool = True) -> tuple[list | None, str | None]:
    """A table value → its items (``Row`` structs when well-formed text, else decoded JSON values),
    or None and what is wrong with it. ``typed=False`` skips the struct decoding (for tests)."""
    if typed and value.__class__ is str:
        text = value.strip()
        if text not in _EMPTY_TEXTS and len(text) <= MAX_VALUE_CHARS:
            try:
                rows = _decode_rows(text)
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                pass   # not well-formed: the generic decoding finds out exactly what is wrong
            else:
                if _each_key_once(text, rows):
                    return rows, None
    return _parse_json_list(value)


def read_item(item: Any) -> tuple[str, list[Cell] | None, Any, bool]:
    """One table item → (kind, cells, rowNumber, a cell is not an object); kind is ``row``, ``schema``
    (the empty-table quirk: the table's schema instead of rows = zero rows), ``odd`` or ``missing``."""
    if item.__class__ is Row:
        return "row", item.rowValue, item.rowNumber, False
    if item is None or (item.__class__ is float and item != item):
        return "missing", None, None, False
    if item.__class__ is dict:
        raw_cells = item.get("rowValue")
        if isinstance(raw_cells, list):
            cells = [Cell(label=c.get("label"), key=c.get("key"), componentType=c.get("componentType"),
                          value=c.get("value"), extendValue=c.get("extendValue"))
                     for c in raw_cells if c.__class__ is dict]
            return "row", cells, item.get("rowNumber"), len(cells) != len(raw_cells)
        if "componentName" in item or "props" in item:
            return "schema", None, None, False
    return "odd", None, None, False


class Columns:
    """Cell values written straight into per-label columns (row positions + values), in the order a
    list of ``{label: value}`` dicts would give: the first cell of a label in a row wins, a later
    ``.ext`` of the same label replaces the earlier one, and columns appear in first-seen order.

    Building the columns directly, instead of a dict per row handed to ``pd.DataFrame``, saves both
    the per-row dicts and pandas' dict-to-array pass (≈0.15 s of a 5,000-claim chunk).
    """

    def __init__(self) -> None:
        self.columns: dict[str, tuple[list[int], list[Any]]] = {}
        self.count = 0   # rows so far, over all levels

    def put(self, label: str, row: int, value: Any) -> None:
        column = self.columns.get(label)
        if column is None:
            self.columns[label] = ([row], [value])
        elif column[0][-1] == row:
            column[1][-1] = value
        else:
            column[0].append(row)
            column[1].append(value)

    def write_row(self, cells: list[Cell]) -> list[tuple[str, Any]] | None:
        """One row's cells → the next row of the columns: ``{label: value, "<label>.ext": extendValue}``;
        returns the row's table cells (label, value) for the next level, or None.

        A cell is named by its label, else its key; the first cell of a name in a row wins, and a later
        one's value goes to ``<label>.again`` (the checks of a field the scheme reads find the row
        ambiguous). A select cell's value is its extendValue label when present.
        """
        row = self.count
        self.count += 1
        nested: list[tuple[str, Any]] | None = None
        known = self.columns
        for cell in cells:
            label = cell.label or cell.key
            if label is None:
                continue
            if label.__class__ is not str:   # labels become column names; a malformed one may be any JSON value
                label = str(label)
            value = cell.value
            ext = cell.extendValue
            column = known.get(label)
            if column is not None and column[0][-1] == row:
                if cell.componentType != "TableField":
                    self.put(f"{label}.again", row, value)
                continue
            kind = cell.componentType
            if kind == "TableField":
                if nested is None:
                    nested = []
                nested.append((label, value))
                continue
            if ext is not None:
                self.put(f"{label}.ext", row, ext)
                if kind == "DDSelectField" and ext.__class__ is dict and ext.get("label") is not None:
                    value = ext["label"]
            if column is None:
                known[label] = ([row], [value])
            else:
                column[0].append(row)
                column[1].append(value)
        return nested

    def frame(self) -> pd.DataFrame:
        """The rows × labels frame, with the dtypes ``pd.DataFrame(list_of_dicts)`` infers (NaN = no cell)."""
        count = self.count
        index = pd.RangeIndex(count)
        data = {}
        for label, (rows, values) in self.columns.items():
            # fromiter keeps list values as single objects (np.array would make them dimensions).
            present = np.fromiter(values, dtype=object, count=len(values))
            if len(rows) == count:
                column = present
            else:
                column = np.full(count, np.nan, dtype=object)
                column[np.fromiter(rows, dtype=np.intp, count=len(rows))] = present
            # Series infers strings, infer_objects numbers and booleans: what the DataFrame
            # constructor infers from records, one column at a time (no 2-D object block).
            data[label] = pd.Series(column, index=index, copy=False).infer_objects()
        return pd.DataFrame(data, index=index, copy=False)
