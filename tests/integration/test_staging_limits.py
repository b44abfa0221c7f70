"""Staging under volume and hostile data: no claim's content and no chunk's size may stop the others
(PostgreSQL when DK_TEST_DATABASE_URL is set, as in CI; SQLite otherwise)."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from dingtalk_kingdee import staging
from dingtalk_kingdee.reasons import RejectReason
from dingtalk_kingdee.staging import BillRecord, RejectRecord, RowRecord, SchemeStaging

SCHEME = "s1"
NUL = "\x00"


def answer(instance_id: str, business_id: str | None = None, **extra) -> dict:
    return {"process_instance_id": instance_id, "business_id": business_id or f"B{instance_id}",
            "status": "COMPLETED", "result": "agree", "title": "t", **extra}


def bill(instance_id: str, amount: str = "10.50", business_id: str | None = None,
         payee: str = "张伟 6222020200001234567") -> BillRecord:
    business_id = business_id or f"B{instance_id}"
    return BillRecord(instance_id=instance_id, business_id=business_id, match_value=business_id,
                      amount=Decimal(amount), payee=payee, model={"FBillNo": business_id})


def six_rows(instance_id: str) -> list[RowRecord]:
    return [RowRecord(instance_id=instance_id, table_path="报销明细", row_key=f"{instance_id}/报销明细#{i}",
                      parent_row_key=None, row_index=i, cells={"金额": "10.50", "说明": "出差"}) for i in range(6)]


@pytest.fixture
def staged(engine):
    return SchemeStaging(engine, SCHEME)


def store(staged: SchemeStaging, answers: dict[str, dict]) -> None:
    staged.store_answers(answers, "r1")


def test_a_chunk_beyond_the_bind_parameter_limit_is_stored(staged):
    """12,000 rows x 7 columns is 84,000 values: more than PostgreSQL takes in one statement (65,535)."""
    ids = [f"c{n:05d}" for n in range(2000)]
    store(staged, {i: answer(i) for i in ids})
    saved = staged.save_transform(dict.fromkeys(ids, 1), [bill(i) for i in ids], [],
                                  [r for i in ids for r in six_rows(i)], "r1")
    assert saved.bills == 2000
    with staged.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM dk_rows")).scalar() == 12000


def test_id_lists_beyond_the_bind_parameter_limit_are_looked_up(staged):
    ids = [f"c{n:05d}" for n in range(70_000)]
    store(staged, {i: answer(i) for i in ids[:3]})
    assert staged.final_among(ids) == set(ids[:3])
    assert [c.instance_id for c in staged.claims_to_transform(10, instance_ids=ids)] == ids[:3]
    staged.save_transform(dict.fromkeys(ids[:3], 1), [bill(i) for i in ids[:3]], [], [], "r1")
    assert set(staged.bills(instance_ids=ids)) == set(ids[:3])
    assert len(staged.claim_for_sending(10, instance_ids=ids)) == 3
    assert len(staged.bills_in_doubt(timedelta(0), instance_ids=ids)) == 3


def test_long_ids_and_deeply_nested_row_keys_are_stored(staged):
    long_id, long_business_id = "i" * 200, "B" * 300
    store(staged, {long_id: answer(long_id, long_business_id)})
    nested = RowRecord(instance_id=long_id, table_path=".".join(["明细"] * 10), row_key="/".join(["明细#0"] * 60),
                       parent_row_key="/".join(["明细#0"] * 59), row_index=0, cells={})
    saved = staged.save_transform({long_id: 1}, [bill(long_id, business_id=long_business_id, payee="名" * 400)],
                                  [], [nested], "r1")
    assert saved.bills == 1
    assert staged.bills()[long_id].business_id == long_business_id


def test_nul_characters_in_an_answer_are_stored_and_read_back(staged):
    """PostgreSQL text refuses NUL: the payload keeps it JSON-escaped, the columns beside it escaped."""
    poisoned = answer("p", business_id=f"B{NUL}1", title=f"报销{NUL}", status=f"COMPLETED{NUL}")
    store(staged, {"p": poisoned, "q": answer("q")})
    with staged.engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT instance_id, business_id FROM dk_instances")).all())
    assert stored == {"p": "B\\u00001", "q": "Bq"}
    staged.save_transform({"p": 1}, [], [RejectRecord("p", f"B{NUL}1", f"标题{NUL}", "malformed_payload",
                                                      f"claim p: NUL in {NUL}")], [], "r1")
    assert staged.summary().rejected_by_reason == {"malformed_payload": 1}


def test_an_instance_id_with_nul_is_left_out_and_the_others_stored(staged, caplog):
    with caplog.at_level(logging.WARNING):
        assert staged.store_answers({f"x{NUL}": answer("x"), "y": answer("y")}, "r1") == 1
    assert "x\\x00" in caplog.text
    assert [c.instance_id for c in staged.claims_to_transform(10)] == ["y"]


def test_amounts_beyond_the_integer_range_are_refused_per_claim_never_wrapped(staged):
    huge = "99999999999999999.99"  # 10^19 cents: more than a 64-bit integer holds
    store(staged, {i: answer(i) for i in ("a", "b")})
    saved = staged.save_transform({"a": 1, "b": 1}, [bill("a", huge), bill("b")], [], [], "r1")
    assert saved.bills == 1
    rejected = staged.summary().rejected_claims
    assert [(r.instance_id, r.reason_code) for r in rejected] == [("a", RejectReason.AMOUNT_TOO_LARGE)]
    assert "a" in rejected[0].reason and huge in rejected[0].reason


def test_sums_over_many_large_bills_stay_exact(staged):
    """Three bills of 40,000,000,000,000,000.00: their sum is more than a 64-bit integer of cents holds."""
    ids = ["a", "b", "c"]
    store(staged, {i: answer(i) for i in ids})
    staged.save_transform(dict.fromkeys(ids, 1), [bill(i, "40000000000000000.00") for i in ids], [], [], "r1")
    assert staged.summary().money_by_state == {staging.BillState.PENDING: Decimal("120000000000000000.00")}


def test_a_database_error_names_no_values(staged):
    store(staged, {"a": answer("a")})
    with staged.engine.begin() as conn, pytest.raises(sa.exc.IntegrityError) as caught:
        conn.execute(sa.text("INSERT INTO dk_instances (scheme_id, instance_id, payload, is_final, payload_version,"
                             " transformed_version, first_seen_at, last_seen_at) VALUES (:s, :i, :p, false, 1, 0,"
                             " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                     {"s": SCHEME, "i": "a", "p": "张伟 6222020200001234567"})
    assert "6222020200001234567" not in str(caught.value)
    assert "parameters hidden" in str(caught.value)


def test_one_claim_the_database_refuses_does_not_stop_its_chunk(staged, caplog):
    """A bill whose match value another claim's bill already holds: only that claim is rejected."""
    store(staged, {"a": answer("a")})
    staged.save_transform({"a": 1}, [bill("a", business_id="DUP")], [], [], "r1")
    good = [f"g{n}" for n in range(20)]
    store(staged, {i: answer(i) for i in [*good, "poison"]})
    with caplog.at_level(logging.WARNING):
        saved = staged.save_transform(dict.fromkeys([*good, "poison"], 1),
                                      [*(bill(i) for i in good), bill("poison", business_id="DUP")], [],
                                      [r for i in good for r in six_rows(i)], "r1")
    assert saved.bills == 20 and saved.rejects == 1
    assert set(staged.bills()) == {"a", *good}
    rejected = staged.summary().rejected_claims
    assert [(r.instance_id, r.reason_code) for r in rejected] == [("poison", RejectReason.STAGING_REFUSED)]
    assert "poison" in rejected[0].reason
    assert staged.claims_to_transform(100) == []  # every claim of the chunk is marked transformed
    assert "6222020200001234567" not in caplog.text
