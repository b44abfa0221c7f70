"""The emulator's FilterString parser and evaluator (pure logic)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from dk_emulators.kingdee.filter_string import (
    FilterError,
    evaluate,
    parse_filter,
    referenced_fields,
    tokenize,
)
from hypothesis import given
from hypothesis import strategies as st

ROW = {
    "FBILLNO": "FKD00000001",
    "FTHIRDBILLNO": "202403051012000123456",
    "FDOCUMENTSTATUS": "A",
    "FID": 100001,
    "FPAYTOTALAMOUNTFOR": Decimal("123.45"),
    "FDATE": datetime(2024, 3, 5),
    "FCONTACTUNIT.FNUMBER": "EMP1001",
    "FREMARK": None,
}


def resolve(name: str) -> object:
    return ROW[name.upper()]


def matches(text: str) -> bool:
    return evaluate(parse_filter(text), resolve)


@pytest.mark.parametrize("text, expected", [
    ("FBillNo='FKD00000001'", True),
    ("FBillNo='FKD00000002'", False),
    ("FBillNo='fkd00000001'", True),  # case-insensitive collation
    ("FDOCUMENTSTATUS<>'C'", True),
    ("FDOCUMENTSTATUS!='A'", False),
    ("FID=100001", True),
    ("FID>100000 AND FID<=100001", True),
    ("FID>=100002", False),
    ("FID='100001'", True),  # a literal compared with a number is converted
    ("FPAYTOTALAMOUNTFOR>100", True),
    ("FPAYTOTALAMOUNTFOR=123.450", True),
    ("FPAYTOTALAMOUNTFOR<-1", False),
    ("FDATE>='2024-03-01' AND FDATE<'2024-04-01'", True),
    ("FDATE='2024-03-05T00:00:00'", True),
    ("FDOCUMENTSTATUS IN ('A','B')", True),
    ("FDOCUMENTSTATUS NOT IN ('A','B')", False),
    ("FDOCUMENTSTATUS IN ('C')", False),
    ("FBillNo LIKE 'FKD%'", True),
    ("FBillNo LIKE 'FKD_000001'", False),  # _ is exactly one character
    ("FBillNo LIKE 'FKD0000000_'", True),
    ("FBillNo NOT LIKE '%001'", False),
    ("FBillNo LIKE 'F.D%'", False),  # regex metacharacters are literal
    ("NOT FDOCUMENTSTATUS='C'", True),
    ("NOT (FDOCUMENTSTATUS='A' OR FID=1)", False),
    ("FDOCUMENTSTATUS='C' OR FID=100001 AND FBillNo='x'", False),  # AND binds tighter than OR
    ("(FDOCUMENTSTATUS='C' OR FID=100001) AND FBillNo='FKD00000001'", True),
    ("FCONTACTUNIT.FNumber='EMP1001'", True),
    ("fcontactunit.fnumber = N'EMP1001'", True),
    ("FREMARK IS NULL", True),
    ("FREMARK IS NOT NULL", False),
    ("FREMARK='x'", False),
    ("NOT FREMARK='x'", False),  # NOT unknown is unknown
    ("FREMARK='x' OR FID=100001", True),
    ("1=1", True),
    ("  ", True),
])
def test_filter_semantics(text: str, expected: bool) -> None:
    assert matches(text) is expected


def test_quotes_in_values_are_data_not_syntax() -> None:
    row = {"FTHIRDBILLNO": "x' OR 1=1 --"}
    node = parse_filter("FTHIRDBILLNO='x'' OR 1=1 --'")
    assert evaluate(node, lambda name: row[name.upper()])
    assert not evaluate(node, lambda name: {"FTHIRDBILLNO": "x"}[name.upper()])
    assert referenced_fields(node) == {"FTHIRDBILLNO"}


def test_tokenizer_decodes_doubled_quotes() -> None:
    tokens = tokenize("F='it''s'")
    assert [t.kind for t in tokens] == ["IDENT", "OP", "STRING", "END"]
    assert tokens[2].value == "it's"


@pytest.mark.parametrize("text", [
    "FBillNo='abc",
    "FBillNo=",
    "FBillNo 'x'",
    "FBillNo IN ()",
    "FBillNo IN ('a',)",
    "(FBillNo='a'",
    "FBillNo='a')",
    "FBillNo='a' AND",
    "FBillNo=='a'",
    "FBillNo;DROP TABLE x",
    "FBillNo IS 'x'",
    "FID=1.2.3",
    "F..X=1",
    "FBillNo='a' OR 1=1 --'",
])
def test_syntax_errors(text: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(text)


def test_conversion_error_is_reported() -> None:
    with pytest.raises(FilterError):
        matches("FID='abc'")
    with pytest.raises(FilterError):
        matches("FDATE>'not a date'")


def test_referenced_fields() -> None:
    node = parse_filter("A=1 AND (B IN (1,2) OR NOT C LIKE 'x%') AND D.FNumber IS NULL")
    assert referenced_fields(node) == {"A", "B", "C", "D.FNumber"}


@given(st.text(max_size=40))
def test_any_value_escaped_by_doubling_round_trips(value: str) -> None:
    node = parse_filter("FTHIRDBILLNO='" + value.replace("'", "''") + "'")
    assert referenced_fields(node) == {"FTHIRDBILLNO"}
    assert evaluate(node, lambda _name: value)
    assert not evaluate(node, lambda _name: value + "~")
