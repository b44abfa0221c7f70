"""One chunk of raw claims → bills, rejects and waiting claims: every claim ends in exactly one outcome.

Pure: no network, no database, no file reads; the scheme (with its value maps already loaded) is
passed in. The caller hands over one chunk of claims at a time.

Duplicates: rows of ``raw`` with the same instance_id are one claim (the last payload wins). Among
approved claims sharing a business_id, the one created first (then finished first, then the smallest
instance_id) is the candidate and every other one is rejected ``duplicate_business_id``; a
business_id found in ``already_billed`` under another instance_id is rejected too (under the same
instance_id it is the same claim again and maps to the same bill, which the load step recognises by
its match field).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd

from dingtalk_kingdee.money import sum_cents
from dingtalk_kingdee.reasons import RejectReason
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.transform.business_ids import normal_forms
from dingtalk_kingdee.transform.checks import amount_checks, claim_total_checks, duplicate_checks
from dingtalk_kingdee.transform.flatten import ROW_META, empty_frame, flatten_tables, read_payloads
from dingtalk_kingdee.transform.mapping import broadcast, build_bills, nested_columns, resolve
from dingtalk_kingdee.transform.rejects import REJECT_COLUMNS, claim_label, quote, reject_frame

WAITING_COLUMNS = ["instance_id", "status"]


@dataclass
class TransformResult:
    bills: pd.DataFrame      # BILL_COLUMNS
    rejects: pd.DataFrame    # REJECT_COLUMNS
    waiting: pd.DataFrame    # WAITING_COLUMNS
    claims: pd.DataFrame     # one row per well-formed claim: instance.* and form.* columns, outcome
    rows: pd.DataFrame       # one row per table row at any depth: ROW_META + one column per cell label


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: parsing builds millions of small acyclic objects, and each generation-2
    pass over the chunk's payloads nearly doubled the transform's time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def transform_claims(raw: pd.DataFrame, scheme: Scheme,
                     already_billed: Mapping[str, str] | None = None) -> TransformResult:
    """Map one chunk of raw claims (columns instance_id, payload) to bills, rejects and waiting."""
    with _gc_paused():
        return _transform(raw, scheme, already_billed or {})


def _transform(raw: pd.DataFrame, scheme: Scheme, already_billed: Mapping[str, str]) -> TransformResult:
    read = read_payloads(raw)
    claims, form_problems = read.claims, read.form_problems
    rejects: list[pd.DataFrame] = []
    if read.malformed:
        ids, reasons = zip(*read.malformed, strict=True)
        rejects.append(reject_frame(list(ids), None, "payload", RejectReason.MALFORMED_PAYLOAD, list(reasons)))

    status, result = claims["instance.status"], claims["instance.result"]
    waiting_mask = status.isin(scheme.source.pending_statuses).astype(bool)
    final = status.isin([*scheme.source.final_statuses, *scheme.source.approved.status]).astype(bool)
    approved = (final & status.isin(scheme.source.approved.status)
                & result.isin(scheme.source.approved.result)).astype(bool)
    label = claim_label(claims["business_id"], claims["instance_id"])
    # Staging takes a claim with an undocumented status as final only after several reads.
    unknown = ~waiting_mask & ~final
    if unknown.any():
        c = claims[unknown]
        shown = quote(c["instance.status"].where(c["instance.status"].notna(), ""))
        rejects.append(reject_frame(
            c["instance_id"], c["business_id"], "status", RejectReason.UNKNOWN_STATUS,
            label[unknown] + ": status " + shown + " is none DingTalk documents ("
            + ", ".join([*scheme.source.pending_statuses, *scheme.source.final_statuses])
            + "); it is never paid"))
    refused = final & ~approved
    if refused.any():
        c = claims[refused]
        rejects.append(reject_frame(
            c["instance_id"], c["business_id"], "status", RejectReason.NOT_APPROVED,
            label[refused] + ": status " + c["instance.status"].astype(str) + " / result "
            + c["instance.result"].fillna("(none)").astype(str)
            + " is final but not approved; it must never be paid"))

    form_problem = claims["instance_id"].map(form_problems)
    broken_form = approved & form_problem.notna()
    if broken_form.any():
        c = claims[broken_form]
        rejects.append(reject_frame(c["instance_id"], c["business_id"], "form_component_values",
                                    RejectReason.MALFORMED_PAYLOAD,
                                    label[broken_form] + ": " + form_problem[broken_form]))
    # One normal form of the business_id for the bill and the duplicate check (``business_ids``).
    normal, id_problem = normal_forms(claims["business_id"])
    claims["business_id"] = claims["instance.business_id"] = normal
    bad_id = approved & ~broken_form & id_problem.notna()
    if bad_id.any():
        c = claims[bad_id]
        rejects.append(reject_frame(c["instance_id"], None, "business_id", RejectReason.MALFORMED_PAYLOAD,
                                    claim_label(pd.Series(None, index=c.index, dtype=object), c["instance_id"])
                                    + ": business_id " + id_problem[bad_id]))
    work = claims[approved & ~broken_form & ~bad_id].copy()

    # Tables of approved claims only: an unfinished claim is re-read later anyway.
    rows, problems = flatten_tables(read.tables[read.tables["instance_id"].isin(work["instance_id"])])
    if not problems.empty:
        bid = problems["instance_id"].map(work.set_index("instance_id")["business_id"])
        rejects.append(reject_frame(problems["instance_id"], bid, problems["table"], RejectReason.MALFORMED_PAYLOAD,
                                    claim_label(bid, problems["instance_id"]) + ": " + problems["table"]
                                    + " " + problems["problem"]))

    # A claim with an unreadable table is rejected as malformed; checking the rest would only add noise.
    work = work[~work["instance_id"].isin(problems["instance_id"])]
    entries = rows[(rows["table"] == scheme.rows.table) & rows["parent_row_id"].isna()]
    meta = ["instance_id", "table", "row_index", "row_key", "row_id"]
    entries = entries[meta].join(entries.drop(columns=ROW_META).add_prefix("row."))
    # Entry fields that read only claim-level values are resolved once per claim (below), so the
    # entries carry only the claim columns that row-level fields combine with row values.
    per_claim = {t: m for t, m in scheme.mapping.entry.items()
                 if all(p.namespace in ("instance", "form") for p in m.paths)}
    per_row = {t: m for t, m in scheme.mapping.entry.items() if t not in per_claim}
    claim_columns = {"business_id"} | {
        f"{p.column}.ext" if p.ext else p.column for m in per_row.values() for p in m.paths
        if p.namespace in ("instance", "form")}
    entries = entries.merge(work[["instance_id", *sorted(c for c in claim_columns if c in work)]],
                            on="instance_id", how="inner").reset_index(drop=True)
    entries["row_no"] = entries["row_index"].astype("int64") + 1

    without_rows = ~work["instance_id"].isin(entries["instance_id"])
    if without_rows.any():
        c = work[without_rows]
        rejects.append(reject_frame(c["instance_id"], c["business_id"], scheme.rows.table, RejectReason.NO_ROWS,
                                    claim_label(c["business_id"], c["instance_id"])
                                    + f": {scheme.rows.table} has no rows; a bill needs at least one entry"))

    rejects += amount_checks(scheme, entries, rows)
    totals = sum_cents(entries["instance_id"], entries["cents"])   # exact: no 64-bit overflow
    rejects += claim_total_checks(scheme, work, totals)
    rejects += duplicate_checks(work, already_billed)

    all_mappings = [*scheme.mapping.header.values(), *scheme.mapping.entry.values(),
                    *(m for m in (scheme.payee.name, scheme.payee.account) if m is not None)]
    nested_columns(scheme, rows, entries, work, all_mappings)
    checked = {f"row.{scheme.rows.amount}": entries["cents"]}
    header = {t: resolve(work, t, m, scheme, {}) for t, m in scheme.mapping.header.items()}
    claim_entry = {t: resolve(work, t, m, scheme, {}) for t, m in per_claim.items()}
    formatted: dict[tuple[str, int], pd.Series] = {}
    row_entry = {t: resolve(entries, t, m, scheme, checked, formatted) for t, m in per_row.items()}
    for resolved in (*header.values(), *claim_entry.values(), *row_entry.values()):
        rejects += resolved.rejects
    entry = {t: row_entry[t] if t in row_entry else broadcast(claim_entry[t], work, entries)
             for t in scheme.mapping.entry}

    found = [f for f in rejects if not f.empty]
    all_rejects = pd.concat(found, ignore_index=True) if found else empty_frame(REJECT_COLUMNS)
    all_rejects = all_rejects.astype(object).drop_duplicates(["instance_id", "reason_code", "reason"])
    rejected = set(all_rejects["instance_id"])

    bills = build_bills(scheme, work, entries, header, entry, rejected)
    waiting = claims.loc[waiting_mask, ["instance_id", "instance.status"]].rename(
        columns={"instance.status": "status"}).reset_index(drop=True)

    claims = claims.copy()
    claims["outcome"] = "reject"
    claims.loc[waiting_mask, "outcome"] = "waiting"
    claims.loc[claims["instance_id"].isin(bills["instance_id"]), "outcome"] = "bill"
    return TransformResult(bills=bills, rejects=all_rejects.reset_index(drop=True), waiting=waiting,
                           claims=claims, rows=rows)
