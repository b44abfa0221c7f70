"""Upgrading a staging database written by an earlier version (PostgreSQL when DK_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from dingtalk_kingdee import staging
from dingtalk_kingdee.reasons import RejectReason
from dingtalk_kingdee.staging import BillState, SchemeStaging, tables
from dingtalk_kingdee.staging.tables import SCHEMA_VERSION
from dingtalk_kingdee.staging.upgrades import SchemaError
from tests.fixtures import staging_v1 as v1

SCHEME = "s1"
LONG_ID = "i" * 300


@pytest.fixture
def v1_engine(staging_url):
    """A version-1 staging database holding one claim, its rows, a loaded bill, a reject and a ledger line."""
    engine = staging.create_engine(staging_url)
    stamp = datetime.now(UTC)
    payload = {"process_instance_id": "a", "business_id": "BA", "status": "COMPLETED", "result": "agree"}
    with engine.begin() as conn:
        v1.metadata.create_all(conn)
        conn.execute(v1.schema_version.insert().values(version=1, applied_at=stamp))
        conn.execute(v1.instances.insert(), [
            dict(scheme_id=SCHEME, instance_id=i, business_id=f"B{i}", status="COMPLETED", result="agree",
                 is_final=True, payload=json.dumps(payload), payload_version=1, transformed_version=1,
                 first_seen_at=stamp, last_seen_at=stamp, last_seen_run="r1")
            for i in ("a", "b")])
        conn.execute(v1.rows.insert().values(scheme_id=SCHEME, instance_id="a", table_path="t", row_key="a/t#0",
                                             row_index=0, cells='{"x": 1}'))
        conn.execute(v1.bills.insert().values(
            scheme_id=SCHEME, instance_id="a", business_id="BA", match_value="BA", amount_cents=128050,
            payee="张伟", model='{"FBillNo": "BA"}', state="loaded", attempts=1, kingdee_id="7",
            bill_number="BA", doc_status="C", created_at=stamp, updated_at=stamp, loaded_at=stamp, last_run="r1"))
        conn.execute(v1.rejects.insert().values(scheme_id=SCHEME, instance_id="b", business_id="BB", field="f",
                                                reason_code="no_rows", reason="no rows", created_at=stamp))
        conn.execute(v1.writeback.insert().values(
            scheme_id=SCHEME, instance_id="a", business_id="BA", kingdee_id="7", bill_number="BA", payee="张伟",
            amount_cents=128050, recorded_at=stamp, comment_state="done"))
    yield engine
    engine.dispose()
    staging.get_engine.cache_clear()


def versions(engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT version FROM dk_schema_version ORDER BY version")).scalars())


def test_a_version_1_database_is_upgraded_with_its_data_kept(v1_engine):
    staging.ensure_schema(v1_engine)
    assert versions(v1_engine) == list(range(1, SCHEMA_VERSION + 1))
    staged = SchemeStaging(v1_engine, SCHEME)
    bill = staged.bills()["a"]
    assert (bill.state, bill.amount, bill.payee, bill.bill_number) == (BillState.LOADED, Decimal("1280.50"), "张伟",
                                                                       "BA")
    summary = staged.summary()
    assert summary.claims_seen == 2
    assert summary.rejected_by_reason == {"no_rows": 1}
    with v1_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT cells FROM dk_rows")).scalar() == '{"x": 1}'
        assert conn.execute(sa.text("SELECT comment_state FROM dk_writeback")).scalar() == "done"
    # Running it again changes nothing.
    staging.ensure_schema(v1_engine)
    assert versions(v1_engine) == list(range(1, SCHEMA_VERSION + 1))


def test_the_upgrade_keys_stored_business_ids_as_the_duplicate_check_compares_them(v1_engine):
    with v1_engine.begin() as conn:
        conn.execute(sa.text("UPDATE dk_instances SET business_id = ' tsp1\t' WHERE instance_id = 'b'"))
    staging.ensure_schema(v1_engine)
    with v1_engine.connect() as conn:
        keys = dict(conn.execute(sa.text("SELECT instance_id, business_key FROM dk_instances")).all())
    assert keys == {"a": "BA", "b": "TSP1"}


def test_the_upgrade_renames_stored_amount_over_limit_rejects_and_alerts_amount_too_large(v1_engine):
    stamp = datetime.now(UTC)
    with v1_engine.begin() as conn:
        conn.execute(sa.text("UPDATE dk_rejects SET reason_code = 'amount_over_limit' WHERE instance_id = 'b'"))
        tables.alerts.create(conn)   # the alert ledger, as a database of that time may hold it
        conn.execute(tables.alerts.insert(), [
            dict(scheme_id=SCHEME, instance_id="b", reason_code=code, fingerprint="f", alerted_at=stamp)
            for code in ("amount_over_limit", "no_rows")])
    staging.ensure_schema(v1_engine)
    assert SchemeStaging(v1_engine, SCHEME).summary().rejected_by_reason == {RejectReason.AMOUNT_TOO_LARGE: 1}
    with v1_engine.connect() as conn:
        alerted = set(conn.execute(sa.text("SELECT reason_code, fingerprint FROM dk_alerts")).all())
    assert alerted == {("amount_too_large", "f"), ("no_rows", "f")}


def test_the_upgrade_lets_ids_longer_than_version_1_allowed_in(v1_engine):
    staging.ensure_schema(v1_engine)
    staged = SchemeStaging(v1_engine, SCHEME)
    answer = {"process_instance_id": LONG_ID, "business_id": "B" * 200, "status": "COMPLETED", "result": "agree"}
    assert staged.store_answers({LONG_ID: answer}, "r2") == 1
    assert [c.instance_id for c in staged.claims_to_transform(10)] == [LONG_ID]


def test_missing_tables_and_nullable_columns_are_added_with_the_data_kept(v1_engine):
    with v1_engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE dk_writeback")
        conn.exec_driver_sql("ALTER TABLE dk_bills DROP COLUMN last_error")
        conn.exec_driver_sql("DROP INDEX ix_dk_rejects_claim")
    staging.ensure_schema(v1_engine)
    inspector = sa.inspect(v1_engine)
    assert "last_error" in {c["name"] for c in inspector.get_columns("dk_bills")}
    assert "ix_dk_rejects_claim" in {i["name"] for i in inspector.get_indexes("dk_rejects")}
    staged = SchemeStaging(v1_engine, SCHEME)
    assert staged.bills()["a"].last_error is None
    assert staged.record_ledger(comments_enabled=False) == 1


def test_a_missing_column_that_old_rows_cannot_take_is_refused_by_name(v1_engine):
    with v1_engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE dk_bills DROP COLUMN attempts")
    with pytest.raises(SchemaError, match=r"dk_bills\.attempts"):
        staging.ensure_schema(v1_engine)


def test_a_database_newer_than_the_code_is_refused(v1_engine):
    staging.ensure_schema(v1_engine)
    with v1_engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO dk_schema_version (version, applied_at) VALUES (:v, :t)"),
                     {"v": SCHEMA_VERSION + 1, "t": datetime.now(UTC)})
    with pytest.raises(SchemaError, match="newer than this code"):
        staging.ensure_schema(v1_engine)
