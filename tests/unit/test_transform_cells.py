"""Table decoding: the struct decoding of well-formed JSON and the generic decoding give the same
rows, columns and problems (one rule set, ``Columns.write_row``), on every corpus we have."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dingtalk_kingdee.transform.cells import Columns, decode_table
from dingtalk_kingdee.transform.flatten import flatten_tables, read_payloads
from tests.fixtures.claims.builder import claim, expense_row, nested_row
from tests.unit.test_transform_rejects import GOOD, WAITING, bad_corpus

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claims"


def _tables(payloads: list[object], ids: list[str]) -> pd.DataFrame:
    return read_payloads(pd.DataFrame({"instance_id": ids, "payload": payloads})).tables


def _assert_both_decodings_agree(tables: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    typed_rows, typed_problems = flatten_tables(tables)
    generic_rows, generic_problems = flatten_tables(tables, typed=False)
    pd.testing.assert_frame_equal(typed_rows, generic_rows, check_exact=True)
    pd.testing.assert_frame_equal(typed_problems, generic_problems, check_exact=True)
    return typed_rows, typed_problems


def test_golden_claims_decode_the_same_both_ways() -> None:
    claims = json.loads((FIXTURES / "golden_claims.json").read_text(encoding="utf-8"))
    rows, problems = _assert_both_decodings_agree(_tables(claims, [c["process_instance_id"] for c in claims]))
    assert len(rows) > 10 and problems.empty


def test_reject_corpus_decodes_the_same_both_ways() -> None:
    corpus = bad_corpus()
    payloads = [c[1] for c in corpus] + GOOD + WAITING
    ids = [c[0] for c in corpus] + [g["process_instance_id"] for g in GOOD + WAITING]
    rows, problems = _assert_both_decodings_agree(_tables(payloads, ids))
    assert len(rows) > 20 and len(problems) >= 5


def test_tables_given_as_decoded_lists_read_like_their_json_text() -> None:
    rows = [expense_row("580"), expense_row("1,280.50", row_number="r2",
                                             nested=[nested_row("1000"), nested_row("280.50", row_number="n2")])]
    text = claim("t", "T1", rows=rows)
    listed = {**text, "form_component_values": [
        {**c, "value": json.loads(c["value"])} if c.get("component_type") == "TableField" else c
        for c in text["form_component_values"]]}
    from_text, _ = flatten_tables(_tables([text], ["t"]))
    from_list, _ = flatten_tables(_tables([listed], ["t"]))
    pd.testing.assert_frame_equal(from_text, from_list, check_exact=True)


# Generated tables: well-formed ones (which the struct decoding takes) and every kind of oddity.
_LABELS = st.sampled_from(["金额", "日期", "说明", "明细", "", 5, None])
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                     st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=6))
_EXT = st.one_of(st.none(), st.text(max_size=4), st.lists(_SCALARS, max_size=2),
                 st.fixed_dictionaries({}, optional={"label": st.one_of(st.none(), st.text(max_size=4)),
                                                     "key": st.text(max_size=3)}))
_LEAF = st.fixed_dictionaries({}, optional={
    "label": _LABELS, "key": _LABELS, "value": st.one_of(_SCALARS, st.lists(_SCALARS, max_size=2)),
    "componentType": st.sampled_from(["TextField", "MoneyField", "DDSelectField", None]), "extendValue": _EXT,
    "props": st.just({})})
_ODD = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.just({"componentName": "TableField", "props": {}}),
                 st.just({"rowValue": "not a list"}), st.lists(st.integers(), max_size=2))


def _row(cell: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries({"rowValue": st.lists(cell, max_size=5)},
                                 optional={"rowNumber": st.one_of(st.text(max_size=4), st.integers(), st.none())})


def _table_text(item: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.lists(item, max_size=4).map(json.dumps), st.sampled_from(["[]", "null", "", " ", "{bad", "{}"]))


_INNER = _table_text(st.one_of(_row(_LEAF), _row(_LEAF), _ODD))
_TABLE_CELL = st.fixed_dictionaries({"label": _LABELS, "componentType": st.just("TableField"), "value": _INNER})
_CELL = st.one_of(_LEAF, _LEAF, _TABLE_CELL, st.integers(), st.text(max_size=3), st.none())
_WELL_FORMED = st.lists(_row(st.one_of(_LEAF, _TABLE_CELL)), max_size=4).map(json.dumps)
_TABLE = st.one_of(_WELL_FORMED, _WELL_FORMED, _table_text(st.one_of(_row(_CELL), _ODD)),
                   st.lists(st.one_of(_row(_CELL), _ODD), max_size=3))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["i1", "i2", "i3"]), st.sampled_from(["报销明细", "其他"]), _TABLE),
                min_size=1, max_size=6, unique_by=lambda t: (t[0], t[1])))
def test_generated_tables_decode_the_same_both_ways(tables: list[tuple[str, str, object]]) -> None:
    frame = pd.DataFrame(tables, columns=["instance_id", "name", "value"])
    _assert_both_decodings_agree(frame)


def test_well_formed_text_takes_the_struct_decoding_and_anything_else_the_generic() -> None:
    good = json.dumps([{"rowNumber": "r1", "rowValue": [{"label": "a", "value": "1"}]}])
    items, error = decode_table(good)
    assert error is None and type(items[0]).__name__ == "Row"
    items, error = decode_table(json.dumps([{"rowValue": [{"label": "a"}, "text"]}]))
    assert error is None and items == [{"rowValue": [{"label": "a"}, "text"]}]
    assert decode_table("{bad")[0] is None
    assert decode_table('{"rowValue": []}')[1] == "is a JSON dict, not a list of rows"


_RECORD_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=2),
                           st.dictionaries(st.text(max_size=2), _SCALARS, max_size=2))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), _RECORD_VALUES, max_size=4), min_size=1,
                max_size=6))
def test_columns_frame_has_the_dtypes_records_give(records: list[dict]) -> None:
    """The columns frame is what ``pd.DataFrame(records)`` gives, without building the records."""
    columns = Columns()
    for record in records:
        row = columns.count
        columns.count += 1
        for label, value in record.items():
            columns.put(label, row, value)
    built = columns.frame()
    expected = pd.DataFrame(records)
    if not len(expected.columns):
        assert built.empty and len(built) == len(records)
        return
    pd.testing.assert_frame_equal(built, expected, check_exact=True, check_column_type=False)


@pytest.mark.parametrize("cells", [
    [{"label": "a", "value": 1}, {"label": "a", "value": 2}],                   # first of a label wins
    [{"key": "k", "value": 1}, {"label": "k", "value": 2}],                     # keyed like labelled
    [{"label": "s", "componentType": "DDSelectField", "value": "x", "extendValue": {"label": "选"}}],
])
def test_row_rules(cells: list[dict]) -> None:
    table = json.dumps([{"rowValue": cells}])
    rows, problems = _assert_both_decodings_agree(pd.DataFrame({"instance_id": ["i"], "name": ["t"], "value": [table]}))
    first = rows.iloc[0]
    label = cells[0].get("label") or cells[0].get("key")
    expected = cells[0]["extendValue"]["label"] if "extendValue" in cells[0] else cells[0]["value"]
    assert first[label] == expected and problems.empty
