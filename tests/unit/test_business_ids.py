"""The business_id normal form: one rule for the bill and the duplicate check."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dingtalk_kingdee.scheme import Scheme, load_scheme
from dingtalk_kingdee.staging.repository import business_key
from dingtalk_kingdee.transform import transform_claims
from dingtalk_kingdee.transform.business_ids import MAX_CHARS, duplicate_key, lookup_ids, normal_form
from tests.fixtures.claims.builder import claim

SCHEME_FILE = Path(__file__).resolve().parents[2] / "include" / "schemes" / "expense_to_paybill.yaml"


@pytest.fixture(scope="module")
def scheme() -> Scheme:
    return load_scheme(SCHEME_FILE)


@pytest.mark.parametrize(("raw", "normal"), [
    ("TSP1", "TSP1"), ("TSP1 ", "TSP1"), ("\tTSP1\n", "TSP1"), (202403050001, "202403050001"),
    ("null", None), ("", None), (None, None), ("A" * MAX_CHARS, "A" * MAX_CHARS),
])
def test_normal_form(raw: object, normal: str | None) -> None:
    assert normal_form(raw) == (normal, None)


@pytest.mark.parametrize(("raw", "words"), [
    ("TSP\x001", "U+0000"), ("TSP\x1b1", "U+001B"), ("TSP１", "U+FF11"), ("A" * (MAX_CHARS + 1), "over the limit"),
    ("x" * 1_000_000, "1,000,000 characters"),
])
def test_what_is_not_a_business_id(raw: str, words: str) -> None:
    normal, problem = normal_form(raw)
    assert normal is None and words in problem
    assert len(problem) < 200   # never the whole value


def test_duplicates_compare_without_case() -> None:
    assert duplicate_key("tsp1") == duplicate_key("TSP1")
    assert lookup_ids([{"business_id": "TSP1 "}, {"business_id": "null"}, "junk"]) == ["TSP1"]


def _transform(scheme: Scheme, claims: list[dict], already_billed: dict[str, str] | None = None):
    raw = pd.DataFrame({"instance_id": [c["process_instance_id"] for c in claims], "payload": claims})
    return transform_claims(raw, scheme, already_billed)


@pytest.mark.parametrize("later", ["TSP1 ", " TSP1", "tsp1", "Tsp1\t"])
def test_a_later_claim_whose_business_id_differs_by_space_or_case_is_the_duplicate(scheme: Scheme, later: str) -> None:
    result = _transform(scheme, [claim("B", later), claim("C", "OTHER")], already_billed={"TSP1": "A"})
    assert list(result.bills["instance_id"]) == ["C"]
    assert result.rejects[["instance_id", "reason_code"]].values.tolist() == [["B", "duplicate_business_id"]]


def test_within_a_chunk_the_first_keeps_the_business_id_whatever_the_case_or_spaces(scheme: Scheme) -> None:
    result = _transform(scheme, [claim("A", "TSP1"), claim("B", "tsp1 ")])
    assert list(result.bills["instance_id"]) == ["A"]
    assert list(result.bills["match_value"]) == ["TSP1"]
    assert result.rejects[["instance_id", "reason_code"]].values.tolist() == [["B", "duplicate_business_id"]]


def test_the_bill_carries_the_normal_form(scheme: Scheme) -> None:
    result = _transform(scheme, [claim("A", "  TSP9 ")])
    bill = result.bills.iloc[0]
    assert bill["business_id"] == "TSP9" and bill["match_value"] == "TSP9"
    assert bill["model"]["FTHIRDBILLNO"] == "TSP9" and bill["model"]["FBillNo"] == "TSP9"


@pytest.mark.parametrize("bad", ["TSP\x001", "TSP\x07", "号码1", "9" * (MAX_CHARS + 1)])
def test_a_business_id_outside_the_normal_form_rejects_that_claim_only(scheme: Scheme, bad: str) -> None:
    result = _transform(scheme, [claim("A", bad), claim("C", "OTHER")])
    assert list(result.bills["instance_id"]) == ["C"]
    rejects = result.rejects
    assert rejects[["instance_id", "field", "reason_code"]].values.tolist() == [
        ["A", "business_id", "malformed_payload"]]
    assert "instance A" in rejects["reason"].iloc[0] and len(rejects["reason"].iloc[0]) < 250


@pytest.mark.parametrize("value", ["TSP1", "tsp1 ", "\ttsp1\n", " Tsp 1 ", 12345, "x" * 128, "\u3000tsp1\xa0"])
def test_staging_keys_a_business_id_as_the_duplicate_check_compares_it(value):
    """Claims sharing a duplicate key must share a staging key, or they are transformed apart."""
    normal, problem = normal_form(value)
    assert problem is None
    assert business_key(value) == duplicate_key(normal)
