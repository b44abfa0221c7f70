"""Golden claims (every payload quirk of the reference) → exactly the expected Models, as whole dicts."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from dingtalk_kingdee.scheme import Scheme, load_scheme
from dingtalk_kingdee.transform import ROW_META, transform_claims

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "claims"


@pytest.fixture(scope="module")
def scheme() -> Scheme:
    return load_scheme(ROOT / "include" / "schemes" / "expense_to_paybill.yaml")


@pytest.fixture(scope="module")
def claims() -> list[dict]:
    return json.loads((FIXTURES / "golden_claims.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((FIXTURES / "golden_models.json").read_text(encoding="utf-8"))


def _raw(claims: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({"instance_id": [c["process_instance_id"] for c in claims], "payload": claims})


def test_golden_models(scheme: Scheme, claims: list[dict], expected: dict) -> None:
    result = transform_claims(_raw(claims), scheme)
    assert result.rejects.empty, result.rejects.to_dict("records")
    assert list(result.waiting["instance_id"]) == expected["waiting"]
    bills = result.bills.set_index("instance_id")
    assert sorted(bills.index) == sorted(expected["bills"])
    for instance_id, want in expected["bills"].items():
        bill = bills.loc[instance_id]
        assert bill["model"] == want["model"], instance_id
        assert bill["amount"] == Decimal(want["amount"]) and isinstance(bill["amount"], Decimal)
        assert bill["payee"] == want["payee"]
        assert bill["match_value"] == bill["business_id"] == want["model"]["FTHIRDBILLNO"]
        # JSON-ready exactly as BatchSave will receive it.
        assert json.loads(json.dumps(bill["model"], ensure_ascii=False)) == want["model"]


def test_result_is_independent_of_claim_order(scheme: Scheme, claims: list[dict]) -> None:
    forward = transform_claims(_raw(claims), scheme).bills.set_index("instance_id")["model"].to_dict()
    backward = transform_claims(_raw(claims[::-1]), scheme).bills.set_index("instance_id")["model"].to_dict()
    assert forward == backward


def test_rows_frame_keeps_every_table_level(scheme: Scheme, claims: list[dict]) -> None:
    result = transform_claims(_raw(claims), scheme)
    rows = result.rows
    assert list(rows.columns[: len(ROW_META)]) == ROW_META
    g1 = rows[rows["instance_id"] == "golden-1"]
    top = g1[g1["table"] == "报销明细"]
    nested = g1[g1["table"] == "报销明细.项目费用明细"]
    assert list(top["row_key"]) == ["TableField_K404KZ5IATS0_1A", "TableField_K404KZ5IATS0_2A"]
    assert list(top["row_index"]) == [0, 1] and top["parent_row_id"].isna().all()
    assert list(nested["row_key"]) == ["TableField_NEST_1A", "TableField_NEST_2A", "TableField_NEST_2B"]
    assert list(nested["parent_row_key"]) == ["TableField_K404KZ5IATS0_1A"] + ["TableField_K404KZ5IATS0_2A"] * 2
    assert list(nested["总金额"]) == ["580", "280.50", "1000"]
    # The select cell reads its extendValue label; its ext object is kept beside it.
    assert set(nested["公司帐号付款(如需公司帐号付款请选择)"]) == {"否"}
    # The empty-table schema quirk and "[]" are zero rows, not data.
    assert rows[(rows["instance_id"] == "golden-3") & (rows["table"] == "报销明细.项目费用明细")].empty
    assert rows[(rows["instance_id"] == "golden-4") & (rows["table"] == "报销明细.项目费用明细")].empty
    # An older template keyed by label, with a select cell read from its extendValue.
    g5 = rows[(rows["instance_id"] == "golden-5") & (rows["table"] == "报销明细")]
    assert g5["费用类型"].iloc[0] == "办公用品" and g5["费用类型.ext"].iloc[0]["key"] == "option_2"
    # Waiting claims are not flattened into rows (they are re-read once final).
    assert "golden-7" not in set(rows["instance_id"])


def test_claims_frame_has_instance_and_form_fields(scheme: Scheme, claims: list[dict]) -> None:
    frame = transform_claims(_raw(claims), scheme).claims.set_index("instance_id")
    assert frame.loc["golden-2", "instance.originator_userid"] == "016400316764"
    assert frame.loc["golden-2", "form.项目报销类型"] == "项目外包费"
    assert frame.loc["golden-5", "form.报销类别"] == "行政报销"          # ext label over the value text
    assert frame.loc["golden-5", "form.报销类别.ext"] == {"label": "行政报销", "key": "option_c"}
    assert frame.loc["golden-1", "form.TextNote_7L0ZKXODKW40"] == "请按实际发生金额填写"  # no name: keyed by id
    assert dict(frame["outcome"]) == {**{f"golden-{i}": "bill" for i in range(1, 7)}, "golden-7": "waiting"}
