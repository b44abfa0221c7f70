"""Raw approval-instance payloads → the claims frame, and table values → the rows frame.

The flattener knows DingTalk's payload shapes and nothing of schemes; the rest of the transform sees
only its two frames (and the problems it found):

- ``read_payloads(raw)``: one row per well-formed claim (``instance.<key>``, ``form.<label>`` and
  ``form.<label>.ext`` columns), the table components to flatten, and the payloads that are not
  approval instances at all;
- ``flatten_tables(tables)``: one row per table row at any depth (``ROW_META`` + one column per cell
  label) and the (instance_id, table, problem) of every table that cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dingtalk_kingdee.transform.cells import Columns, Row, decode_json, decode_table, read_item
from dingtalk_kingdee.transform.limits import MAX_PAYLOAD_CHARS, MAX_TABLE_LEVELS, loads_strict, too_long
from dingtalk_kingdee.transform.values import as_text, clean_text

ROW_META = ["instance_id", "table", "row_index", "row_key", "row_id", "parent_row_id", "parent_row_key"]
TABLE_COLUMNS = ["instance_id", "name", "value"]
PROBLEM_COLUMNS = ["instance_id", "table", "problem"]

# Lists on the instance that are not claim fields; kept out of the claims frame.
_INSTANCE_LISTS = frozenset({"form_component_values", "operation_records", "tasks", "cc_userids",
                             "attached_process_instance_ids"})


@dataclass
class Payloads:
    claims: pd.DataFrame              # one row per claim whose payload is an approval instance
    tables: pd.DataFrame              # TABLE_COLUMNS: the table components of those claims
    malformed: list[tuple[str, str]]  # (instance_id, what is wrong) of payloads that are not instances
    form_problems: dict[str, str]     # instance_id → what is wrong with its form_component_values


def empty_frame(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


# ---------------------------------------------------------------------------------------------- payloads

def _form_problem(payload: dict) -> str | None:
    values = payload.get("form_component_values")
    if values is None:
        return "payload has no form_component_values"
    if not isinstance(values, list):
        return f"form_component_values is a {type(values).__name__}, not a list"
    for position, item in enumerate(values, start=1):
        if not isinstance(item, dict):
            return f"form_component_values item {position} is a {type(item).__name__}, not an object"
    return None


def _coerce_payload(payload: Any) -> tuple[dict | None, str | None]:
    """The instance dict, or why the payload is not one. A JSON text or a whole detail answer is accepted."""
    if isinstance(payload, str | bytes):
        problem = too_long(payload, MAX_PAYLOAD_CHARS)
        if problem is None:
            payload, problem = loads_strict(payload)
        if problem is not None:
            return None, f"payload {problem}"
    if isinstance(payload, dict) and "form_component_values" not in payload \
            and isinstance(payload.get("process_instance"), dict):
        payload = payload["process_instance"]
    if not isinstance(payload, dict):
        return None, f"payload is a {type(payload).__name__}, not an approval instance object"
    if isinstance(payload.get("form_component_values"), str):
        text = payload["form_component_values"]
        problem = too_long(text, MAX_PAYLOAD_CHARS)
        if problem is None:
            values, problem = loads_strict(text)
        if problem is not None:
            return payload, f"form_component_values {problem}"
        payload = {**payload, "form_component_values": values}
    return payload, None


def read_payloads(raw: pd.DataFrame) -> Payloads:
    """Raw claims (columns instance_id, payload; a repeated instance_id is one claim, the last payload
    wins) → the claims frame, their table components and what could not be read."""
    raw = raw[["instance_id", "payload"]].copy()
    raw["instance_id"] = raw["instance_id"].astype(str)
    raw = raw.drop_duplicates("instance_id", keep="last").reset_index(drop=True)

    good_ids, payloads, form_problems, malformed = [], [], {}, []
    for instance_id, payload in zip(raw["instance_id"].tolist(), raw["payload"].tolist(), strict=True):
        payload, problem = _coerce_payload(payload)
        if payload is None:
            malformed.append((instance_id, f"instance {instance_id}: {problem}"))
            continue
        good_ids.append(instance_id)
        payloads.append(payload)
        form_problems[instance_id] = problem or _form_problem(payload)

    if payloads:
        broken = {i for i, problem in form_problems.items() if problem}
        claims, tables, ext_problems = _claims_frame(payloads, good_ids, broken)
        for instance_id, problem in ext_problems.items():
            form_problems[instance_id] = form_problems.get(instance_id) or problem
    else:
        claims, tables = empty_frame(["instance_id", "business_id"]), empty_frame(TABLE_COLUMNS)
    for key in ("status", "result"):
        if f"instance.{key}" not in claims:
            claims[f"instance.{key}"] = None
    return Payloads(claims=claims, tables=tables, malformed=malformed,
                    form_problems={i: p for i, p in form_problems.items() if p})


def _claims_frame(payloads: list[dict], instance_ids: list[str],
                  broken_forms: set[str]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """One row per claim: ``instance.<key>`` scalar fields and ``form.<label>`` (+ ``.ext``) columns,
    and the table components (instance_id, name, value)."""
    inst = pd.DataFrame([{k: v for k, v in p.items() if k not in _INSTANCE_LISTS and not isinstance(v, list | dict)}
                         for p in payloads])
    inst = inst.rename(columns=lambda c: f"instance.{c}")
    inst.insert(0, "instance_id", instance_ids)
    for key in ("status", "result", "business_id", "originator_userid"):
        column = f"instance.{key}"
        inst[column] = as_text(inst[column]) if column in inst else None
    inst["business_id"] = inst["instance.business_id"]

    components = pd.Series([[] if i in broken_forms else p.get("form_component_values") or []
                            for i, p in zip(instance_ids, payloads, strict=True)], index=instance_ids)
    components = components.explode().dropna()
    if components.empty:
        return inst, pd.DataFrame(columns=TABLE_COLUMNS), {}
    comp = pd.DataFrame(components.tolist(), index=components.index)
    for column in ("name", "value", "ext_value", "component_type", "id"):
        if column not in comp:
            comp[column] = None
    # Labels become column names: always text (a malformed name may be any JSON value).
    comp["name"] = as_text(comp["name"].where(comp["name"].notna(), comp["id"]))
    comp = comp[comp["name"].notna()]
    comp["instance_id"] = comp.index
    comp = comp.reset_index(drop=True).drop_duplicates(["instance_id", "name"])
    comp["is_table"] = comp["component_type"] == "TableField"

    ext = comp["ext_value"]
    looks_json = as_text(ext).astype("string").str.match(r"^[\[{]").fillna(False).astype(bool) & ~comp["is_table"]
    parsed_ext = pd.Series(None, index=comp.index, dtype=object)
    parsed_ext[looks_json] = [_loads_or_none(v) for v in ext[looks_json]]
    ext_problems = _repeated_ext_keys(comp[looks_json], parsed_ext[looks_json])
    ext_label = parsed_ext.str.get("label")
    is_select = (comp["component_type"] == "DDSelectField") & ext_label.notna()
    comp["value"] = comp["value"].astype(object).where(~is_select, ext_label)
    comp["ext"] = parsed_ext

    wide = comp.pivot(index="instance_id", columns="name", values="value").add_prefix("form.")
    has_ext = comp[comp["ext"].notna()]
    if not has_ext.empty:
        ext_wide = has_ext.pivot(index="instance_id", columns="name", values="ext")
        wide = wide.join(ext_wide.rename(columns=lambda c: f"form.{c}.ext"))
    claims = inst.join(wide, on="instance_id")
    return claims, comp.loc[comp["is_table"], TABLE_COLUMNS], ext_problems


def _repeated_ext_keys(components: pd.DataFrame, parsed: pd.Series) -> dict[str, str]:
    """instance_id → what is wrong, for an ext_value text with a key repeated in one object (a select's
    ``{"label": "差旅费", "label": "团建费"}``: msgspec would keep the last label silently).

    Only a text with more ``"label"`` / ``"key"`` tokens than its decoded objects hold is decoded
    again, exactly (Python's ``json`` with a per-object hook)."""
    problems: dict[str, str] = {}
    for instance_id, name, text, value in zip(components["instance_id"].tolist(), components["name"].tolist(),
                                              components["ext_value"].tolist(), parsed.tolist(), strict=True):
        if not isinstance(text, str) or value is None:
            continue
        seen = {"label": 0, "key": 0}
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                seen["label"] += "label" in item
                seen["key"] += "key" in item
                stack.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                stack.extend(v for v in item if isinstance(v, dict | list))
        if text.count('"label"') == seen["label"] and text.count('"key"') == seen["key"] and "\\u" not in text:
            continue
        _, problem = loads_strict(text)
        if problem is not None:
            problems.setdefault(instance_id, f"{name} ext_value {problem}")
    return problems


def _loads_or_none(value: Any) -> Any:
    """An ext value: DingTalk sends JSON text, but an already decoded object is taken as it is."""
    if isinstance(value, dict | list):
        return value
    try:
        return decode_json(value)
    except (ValueError, TypeError, RecursionError):
        return None


# ---------------------------------------------------------------------------------------------- tables

def flatten_tables(tables: pd.DataFrame, typed: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table components (``TABLE_COLUMNS``) → one frame of rows at every depth, plus PROBLEM_COLUMNS rows.

    Each level is one Python pass over its tables (decode, walk the rows, write the cells into
    columns); table cells found inside rows become the next level. ``typed=False`` decodes every
    table the generic way (the tests compare both decodings).
    """
    tables = pd.DataFrame({
        "instance_id": tables["instance_id"], "table": tables["name"],
        "parent_row_id": pd.Series(None, index=tables.index, dtype=object),
        "parent_row_key": None, "value": tables["value"]})
    levels: list[pd.DataFrame] = []            # row metadata per level
    columns = Columns()                        # cell values of every row, in the order of levels
    problems: list[tuple[Any, Any, str]] = []
    level = 0
    while not tables.empty:
        level += 1
        tables = tables.reset_index(drop=True)
        if level > MAX_TABLE_LEVELS:
            problems += [(i, t, f"is a table in more than {MAX_TABLE_LEVELS} table levels")
                         for i, t in zip(tables["instance_id"].tolist(), tables["table"].tolist(), strict=True)]
            break
        instance_ids = tables["instance_id"].tolist()
        names = tables["table"].tolist()
        parent_ids = tables["parent_row_id"].tolist()
        json_problems: list[tuple[Any, Any, str]] = []
        odd_problems: list[tuple[Any, Any, str]] = []
        broken_problems: list[tuple[Any, Any, str]] = []
        positions: list[int] = []          # the table each row comes from
        row_indexes: list[int] = []
        row_keys: list[str | None] = []
        row_ids: list[str] = []
        nested_pos: list[int] = []         # for each nested table cell: its row (within this level)
        nested_labels: list[str] = []
        nested_values: list[Any] = []
        item_total = 0
        for position, value in enumerate(tables["value"].tolist()):
            items, error = decode_table(value, typed)
            if error is not None:
                json_problems.append((instance_ids[position], names[position], "value " + error))
                continue
            prefix = parent_ids[position]
            if prefix is None or prefix != prefix:
                prefix = instance_ids[position]
            prefix = f"{prefix}/{names[position]}#"
            row_index = 0
            item_no = 0
            for item in items:
                if item.__class__ is Row:   # the well-formed case, without a call
                    cells, key, broken = item.rowValue, item.rowNumber, False
                else:
                    kind, cells, key, broken = read_item(item)
                    if kind == "missing":
                        continue
                    if kind != "row":
                        item_no += 1
                        item_total += 1
                        if kind == "odd":
                            odd_problems.append((instance_ids[position], names[position],
                                                 f"item {item_no} is not a row (no rowValue list)"))
                        continue
                item_no += 1
                item_total += 1
                level_row = len(positions)
                nested = columns.write_row(cells)
                if broken:
                    broken_problems.append((instance_ids[position], names[position],
                                            f"row {row_index + 1} has a cell that is not an object"))
                if nested:
                    for label, nested_value in nested:
                        nested_pos.append(level_row)
                        nested_labels.append(label)
                        nested_values.append(nested_value)
                positions.append(position)
                row_indexes.append(row_index)
                row_keys.append(clean_text(key))
                row_ids.append(f"{prefix}{row_index}")
                row_index += 1
        problems += json_problems
        problems += odd_problems
        problems += broken_problems
        if not item_total:
            break
        rows = tables.drop(columns="value").take(positions).reset_index(drop=True)
        rows["row_index"] = pd.Series(row_indexes, index=rows.index, dtype="int64")
        rows["row_key"] = row_keys
        rows["row_id"] = row_ids
        parent = rows.iloc[nested_pos]
        tables = pd.DataFrame({"instance_id": parent["instance_id"].to_numpy(),
                               "table": (parent["table"] + "." + np.array(nested_labels, dtype=object)).to_numpy(),
                               "parent_row_id": parent["row_id"].to_numpy(),
                               "parent_row_key": parent["row_key"].to_numpy(),
                               "value": np.fromiter(nested_values, dtype=object, count=len(nested_values))})
        levels.append(rows[ROW_META])

    if levels:
        # One frame for all levels at once: the union of labels comes from the columns, no concat of
        # differently shaped wide frames.
        meta = pd.concat(levels, ignore_index=True)
        wide = columns.frame()
        rows_frame = pd.concat([meta, wide.drop(columns=[c for c in wide.columns if c in ROW_META])], axis=1)
    else:
        rows_frame = empty_frame(ROW_META)
    problem_frame = (pd.DataFrame(problems, columns=PROBLEM_COLUMNS) if problems
                     else pd.DataFrame(columns=PROBLEM_COLUMNS))
    return rows_frame, problem_frame
