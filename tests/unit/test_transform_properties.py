"""Properties over generated batches: money in == money out, and one outcome per claim."""

from __future__ import annotations

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
