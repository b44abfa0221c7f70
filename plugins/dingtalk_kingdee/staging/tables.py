"""The staging tables (SQLAlchemy Core), shared by PostgreSQL and SQLite.

Money is stored as integer cents: exact on both databases (SQLite would turn a NUMERIC into a
float). Table and column names are the stored contract: a change needs a ``SCHEMA_VERSION`` bump and
an upgrade step in ``upgrades.STEPS``; a new table, or a new nullable (or server-defaulted) column,
is added to existing databases by itself (``upgrades.upgrade``).

Ids, names and keys that come from DingTalk are ``Text``: a valid answer must never be refused for
its length (PostgreSQL enforces ``varchar(n)``).
"""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 4

metadata = sa.MetaData()

schema_version = sa.Table(
    "dk_schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

# One row per claim (approval instance) ever listed: the raw detail answer and where it stands.
instances = sa.Table(
    "dk_instances", metadata,
    sa.Column("scheme_id", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.Text, primary_key=True),
    sa.Column("business_id", sa.Text, index=True),
    # The business_id as the duplicate check compares it (``repository.business_key``): claims that
    # share it are transformed together, whatever their spacing or case.
    sa.Column("business_key", sa.Text, index=True),
    sa.Column("status", sa.Text),
    sa.Column("result", sa.Text),
    sa.Column("is_final", sa.Boolean, nullable=False, default=False),
    sa.Column("payload", sa.Text),
    # Bumped whenever the answer changes; transform works on claims whose version it has not seen.
    sa.Column("payload_version", sa.Integer, nullable=False, default=0),
    sa.Column("transformed_version", sa.Integer, nullable=False, default=0),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_fetched_at", sa.DateTime(timezone=True)),
    sa.Column("last_seen_run", sa.String(250)),
    # Consecutive reads with a status DingTalk does not document (states.UNKNOWN_STATUS_READS).
    sa.Column("unknown_status_reads", sa.Integer, nullable=False, server_default="0"),
)

# Flattened detail-table rows (any depth), replaced whenever the claim is transformed again.
rows = sa.Table(
    "dk_rows", metadata,
    sa.Column("scheme_id", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.Text, primary_key=True),
    sa.Column("table_path", sa.Text, primary_key=True),
    sa.Column("row_key", sa.Text, primary_key=True),
    sa.Column("parent_row_key", sa.Text),
    sa.Column("row_index", sa.Integer),
    sa.Column("cells", sa.Text, nullable=False),
)

bills = sa.Table(
    "dk_bills", metadata,
    sa.Column("scheme_id", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.Text, primary_key=True),
    sa.Column("business_id", sa.Text, nullable=False),
    # The value of the scheme's match field (e.g. FTHIRDBILLNO) that finds the bill again in Kingdee.
    sa.Column("match_value", sa.Text, nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("payee", sa.Text),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # states.BillState
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("claim_token", sa.String(64)),
    sa.Column("kingdee_id", sa.String(64)),
    sa.Column("bill_number", sa.String(128)),
    sa.Column("doc_status", sa.String(8)),  # states.DocumentStatus
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Column("loaded_at", sa.DateTime(timezone=True)),
    sa.Column("last_run", sa.String(250)),
    # Two claims can never both become bills under the same match value (business_id).
    sa.UniqueConstraint("scheme_id", "match_value", name="uq_dk_bills_match"),
)
sa.Index("ix_dk_bills_state", bills.c.scheme_id, bills.c.state)

rejects = sa.Table(
    "dk_rejects", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scheme_id", sa.String(64), nullable=False),
    sa.Column("instance_id", sa.Text, nullable=False),
    sa.Column("business_id", sa.Text),
    sa.Column("field", sa.Text),
    sa.Column("reason_code", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(250)),
    # The scheme's mapping fingerprint when the reject was made: a mapping reject made under another
    # one is transformed again by the next run (a value map or the mapping changed since).
    sa.Column("scheme_fingerprint", sa.String(64)),
)
sa.Index("ix_dk_rejects_claim", rejects.c.scheme_id, rejects.c.instance_id)

# The callBackStrategy ledger: which approval became which bill, and whether DingTalk was told.
writeback = sa.Table(
    "dk_writeback", metadata,
    sa.Column("scheme_id", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.Text, primary_key=True),
    sa.Column("business_id", sa.Text, nullable=False),
    sa.Column("kingdee_id", sa.String(64)),
    sa.Column("bill_number", sa.String(128)),
    sa.Column("payee", sa.Text),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("loaded_at", sa.DateTime(timezone=True)),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("comment_state", sa.String(16), nullable=False),  # states.CommentState
    sa.Column("comment_error", sa.Text),
    sa.Column("commented_at", sa.DateTime(timezone=True)),
)

# The alert ledger: a claim's problem (a reject or bill-problem code) is alerted once until it changes
# (``fingerprint`` is a digest of what the alert said about it).
alerts = sa.Table(
    "dk_alerts", metadata,
    sa.Column("scheme_id", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.Text, primary_key=True),
    sa.Column("reason_code", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("alerted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(250)),
)

# DingTalk call economy (docs/operating.md, "DingTalk call budget").
# Where a scheme's hourly listing stands: claims started before ``listed_until`` have been listed by a
# successful listing; the next hourly run lists from there (minus an overlap). ``swept_at``: the last
# daily sweep of the whole look-back window; ``recent_swept_at``: with events on, the last nightly sweep
# of the recent days only (``events.sweep_window_days``).
listing_watermarks = sa.Table(
    "dk_listing_watermarks", metadata,
    sa.Column("scheme_id", sa.String(64), primary_key=True),
    sa.Column("listed_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("swept_at", sa.DateTime(timezone=True)),
    sa.Column("recent_swept_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(250)),
)

# When each claim known to be unfinished is next read (hourly runs). The interval doubles after each
# read that finds the claim still running, up to the scheme's cap; a final claim leaves the table.
read_schedule = sa.Table(
    "dk_read_schedule", metadata,
    sa.Column("scheme_id", sa.String(64), primary_key=True),
    sa.Column("instance_id", sa.Text, primary_key=True),
    sa.Column("next_read_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("interval_s", sa.Integer, nullable=False),
    sa.Column("reads", sa.Integer, nullable=False),
    sa.Column("listed_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_dk_read_schedule_due", read_schedule.c.scheme_id, read_schedule.c.next_read_at)

# Every DingTalk HTTP call, per run, step and API, in the calendar month (China time) it was made in.
# DingTalk's monthly quota is the organisation's: the month's total is summed over every scheme.
call_ledger = sa.Table(
    "dk_call_ledger", metadata,
    sa.Column("scheme_id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("step", sa.String(32), primary_key=True),
    sa.Column("api", sa.String(64), primary_key=True),
    sa.Column("month", sa.String(7), nullable=False),  # YYYY-MM, China time
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("metered", sa.Boolean, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_dk_call_ledger_month", call_ledger.c.month)

# Budget and quota events of a month (near the budget, budget reached, quota exhausted), kept once
# per month and kind: alerts are sent once, and later runs know to probe with a single call.
call_events = sa.Table(
    "dk_call_events", metadata,
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("scheme_id", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(250)),
    sa.Column("detail", sa.Text),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("cleared_at", sa.DateTime(timezone=True)),
)
