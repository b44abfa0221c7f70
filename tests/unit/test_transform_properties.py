"""Properties over generated batches: money in == money out, and one outcome per claim."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dingtalk_kingdee.scheme import load_scheme
from dingtalk_kingdee.transform import transform_claims
from tests.fixtures.claims.builder import claim, expense_row, nested_row

SCHEME = load_scheme(Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml")
USERS = ["manager4500", "016400079191", "manager4503", "newhire9001"]
STATUSES = [("COMPLETED", "agree")] * 6 + [("RUNNING", ""), ("NEW", ""), ("TERMINATED", ""), ("CANCELED", ""),
                                           ("COMPLETED", "refuse")]


def _spell(cents: int, style: int) -> str:
    """The same amount as DingTalk users type it: 580, 580.5, 1,280.50, ¥1,280.50, 580元."""
    whole, frac = divmod(cents, 100)
    grouped = f"{whole:,}"
    text = [f"{whole}.{frac:02d}", f"{grouped}.{frac:02d}", f"¥{grouped}.{frac:02d}", f"{whole}.{frac:02d}元"][style]
    if frac == 0 and style == 0:
        return str(whole)
    if frac % 10 == 0 and style == 0:
        return f"{whole}.{frac // 10}"
    return text


row_strategy = st.fixed_dictionaries({
    "cents": st.integers(min_value=-500, max_value=10_000_000),
    "style": st.integers(min_value=0, max_value=3),
    "split": st.integers(min_value=0, max_value=3),          # nested rows sharing the amount (0 = none)
    "garbage": st.sampled_from([None] * 8 + ["abc", "1,28", "null"]),
})
claim_strategy = st.fixed_dictionaries({
    "rows": st.lists(row_strategy, min_size=0, max_size=5),
    "user": st.sampled_from(USERS),
    "status": st.sampled_from(STATUSES),
    "business_id": st.integers(min_value=0, max_value=30),     # small range: duplicates happen
})


def _build(index: int, spec: dict) -> tuple[dict, int]:
    rows, total = [], 0
    for r, row in enumerate(spec["rows"]):
        cents = row["cents"]
        if row["garbage"]:
            amount = row["garbage"]
        elif cents < 0:
            amount = f"-{-cents // 100}.{-cents % 100:02d}"
        else:
            amount = _spell(cents, row["style"])
        nested = []
        if row["split"] and not row["garbage"] and cents > 0:
            share = cents // row["split"]
            parts = [share] * (row["split"] - 1) + [cents - share * (row["split"] - 1)]
            nested = [nested_row(f"{p // 100}.{p % 100:02d}", row_number=f"n{r}-{k}") for k, p in enumerate(parts)]
        rows.append(expense_row(amount, nested=nested, row_number=f"r{r}"))
        total += cents
    status, result = spec["status"]
    instance_id = f"inst-{index:03d}"
    payload = claim(instance_id, f"BIZ{spec['business_id']:04d}", rows=rows, userid=spec["user"],
                    status=status, result=result)
    return payload, total


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(claim_strategy, min_size=1, max_size=25))
def test_money_in_equals_money_out_and_each_claim_has_one_outcome(specs: list[dict]) -> None:
    built = [_build(i, spec) for i, spec in enumerate(specs)]
    raw = pd.DataFrame({"instance_id": [p["process_instance_id"] for p, _ in built],
                        "payload": [p for p, _ in built]})
    result = transform_claims(raw, SCHEME)

    billed = set(result.bills["instance_id"])
    rejected = set(result.rejects["instance_id"])
    waiting = set(result.waiting["instance_id"])
    assert not billed & rejected and not billed & waiting and not rejected & waiting
    assert billed | rejected | waiting == set(raw["instance_id"])
    assert len(billed) == len(result.bills)

    totals = {p["process_instance_id"]: cents for p, cents in built}
    for bill in result.bills.itertuples():
        expected = Decimal(totals[bill.instance_id]).scaleb(-2)
        assert bill.amount == expected
        entries = bill.model["FPAYBILLENTRY"]
        assert sum(Decimal(e["FPAYTOTALAMOUNTFOR"]) for e in entries) == expected
        assert all(Decimal(e["FPAYTOTALAMOUNTFOR"]) > 0 for e in entries)

    by_id = {p["process_instance_id"]: p for p, _ in built}
    for instance_id in billed:
        assert (by_id[instance_id]["status"], by_id[instance_id]["result"]) == ("COMPLETED", "agree")
    for instance_id in waiting:
        assert by_id[instance_id]["status"] in ("RUNNING", "NEW")
    # Within the batch a business_id becomes at most one bill.
    assert result.bills["business_id"].is_unique


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from(["null", "[]", "{", "580"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6)


def _mutate(node: object, path: list[int], replacement: object) -> object:
    """Replace one node of a JSON tree (walking dicts by sorted key position, lists by index)."""
    if not path:
        return replacement
    if isinstance(node, dict) and node:
        keys = sorted(node, key=str)
        key = keys[path[0] % len(keys)]
        return {**node, key: _mutate(node[key], path[1:], replacement)}
    if isinstance(node, list) and node:
        i = path[0] % len(node)
        return [*node[:i], _mutate(node[i], path[1:], replacement), *node[i + 1:]]
    return replacement


def _decoded(payload: dict) -> dict:
    """The payload with its table JSON texts decoded, so mutations can reach rows and cells."""
    form = []
    for component in payload["form_component_values"]:
        if component.get("component_type") == "TableField":
            rows = json.loads(component["value"])
            for row in rows:
                for cell in row["rowValue"]:
                    if cell["componentType"] == "TableField":
                        cell["value"] = json.loads(cell["value"])
            component = {**component, "value": rows}
        form.append(component)
    return {**payload, "form_component_values": form}


def _encoded(payload: object) -> object:
    """Back to DingTalk's shape: table values as JSON text (wherever they still are lists)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("form_component_values"), list):
        return payload
    form = []
    for component in payload["form_component_values"]:
        if isinstance(component, dict) and isinstance(component.get("value"), list):
            rows = component["value"]
            for row in rows:
                for cell in (row.get("rowValue") or []) if isinstance(row, dict) else []:
                    if isinstance(cell, dict) and isinstance(cell.get("value"), list):
                        cell["value"] = json.dumps(cell["value"], ensure_ascii=False)
            component = {**component, "value": json.dumps(rows, ensure_ascii=False)}
        form.append(component)
    return {**payload, "form_component_values": form}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=7), JSON_VALUES),
                min_size=1, max_size=6))
def test_mutated_payloads_never_raise_and_good_claims_still_map(mutations: list) -> None:
    payloads = []
    for i, (path, replacement) in enumerate(mutations):
        base = _decoded(claim(f"m-{i}", f"MUT{i}", rows=[expense_row("580"), expense_row("20", row_number="r2")]))
        payloads.append(_encoded(_mutate(base, path, replacement)))
    good = claim("zz-good", "GOOD")
    raw = pd.DataFrame({"instance_id": [f"m-{i}" for i in range(len(payloads))] + ["zz-good"],
                        "payload": [*payloads, good]})
    result = transform_claims(raw, SCHEME)
    outcomes = [set(result.bills["instance_id"]), set(result.rejects["instance_id"]),
                set(result.waiting["instance_id"])]
    assert sum(len(o) for o in outcomes) == len(raw)
    assert set().union(*outcomes) == set(raw["instance_id"])
    assert "zz-good" in outcomes[0]
    for bill in result.bills.itertuples():
        assert sum(Decimal(e["FPAYTOTALAMOUNTFOR"]) for e in bill.model["FPAYBILLENTRY"]) == bill.amount > 0
