"""Claim-level checks that reject: row and nested amounts, claim totals, duplicate business ids."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from dingtalk_kingdee.money import format_cents, parse_money_cents, sum_cents, to_cents
from dingtalk_kingdee.reasons import RejectReason
from dingtalk_kingdee.scheme import Scheme, SourcePath
from dingtalk_kingdee.transform.business_ids import duplicate_key
from dingtalk_kingdee.transform.mapping import path_values
from dingtalk_kingdee.transform.rejects import claim_label, quote, reject_frame, where
from dingtalk_kingdee.transform.values import as_text, parse_china_datetimes

_SUB_CENT = " is finer than a cent; Kingdee holds cents and an amount is never rounded"


def amount_checks(scheme: Scheme, entries: pd.DataFrame, rows: pd.DataFrame) -> list[pd.DataFrame]:
    rules = scheme.rejects
    label = scheme.rows.amount
    column = f"row.{label}"
    raw = entries[column] if column in entries else pd.Series(None, index=entries.index, dtype=object)
    text = as_text(raw)
    cents, bad, sub_cent = parse_money_cents(text)
    entries["cents"] = cents
    field = f"{scheme.rows.table}.{label}"
    out: list[pd.DataFrame] = []
    again_column = f"{column}.again"
    if again_column in entries:
        # Two amount cells in one row: which one the approver meant is unknown; never pick one.
        again = entries[again_column].notna().astype(bool)
        if again.any():
            c = entries[again]
            out.append(reject_frame(c["instance_id"], c["business_id"], field, RejectReason.MALFORMED_PAYLOAD,
                                    where(c) + f": {label} is in the row more than once (" + quote(text[again])
                                    + " and " + quote(as_text(c[again_column])) + "); which one is meant is unknown"))
    not_positive = cents.le(0).fillna(False).astype(bool) & rules.amount_positive
    for mask, code, says in ((text.isna(), RejectReason.AMOUNT_MISSING, None),
                             (bad, RejectReason.AMOUNT_UNPARSEABLE, " is not an amount"),
                             (sub_cent, RejectReason.AMOUNT_PRECISION, _SUB_CENT),
                             (not_positive, RejectReason.AMOUNT_NOT_POSITIVE, " must be more than 0")):
        if mask.any():
            c = entries[mask]
            message = where(c) + f": {label}" + (" is empty" if says is None else " " + quote(text[mask]) + says)
            out.append(reject_frame(c["instance_id"], c["business_id"], field, code, message))

    for nested in scheme.rows.nested:
        if not (rules.nested_total_check and nested.amount):
            continue
        table = f"{scheme.rows.table}.{nested.table}"
        sub = rows[rows["table"] == table]
        if nested.amount not in sub or sub.empty:
            continue
        sub = sub[sub["parent_row_id"].isin(entries["row_id"])]
        sub_text = as_text(sub[nested.amount])
        sub_cents, sub_bad, sub_fine = parse_money_cents(sub_text)
        for mask, code, says in ((sub_bad, RejectReason.AMOUNT_UNPARSEABLE, " is not an amount"),
                                 (sub_fine, RejectReason.AMOUNT_PRECISION, _SUB_CENT)):
            if mask.any():
                p = entries.set_index("row_id").loc[sub.loc[mask, "parent_row_id"]]
                out.append(reject_frame(
                    p["instance_id"], p["business_id"], f"{table}.{nested.amount}", code,
                    (where(p) + f" / {nested.table} row " + (sub["row_index"][mask] + 1).astype(str).to_numpy()
                     + f": {nested.amount} " + quote(sub_text[mask]).to_numpy() + says)))
        sub_bad = sub_bad | sub_fine
        sums = pd.DataFrame({"row_id": sub["parent_row_id"], "cents": sub_cents, "bad": sub_bad})
        totals = sums.groupby("row_id").agg(counted=("cents", "count"), bad=("bad", "any"))
        totals["total"] = sum_cents(sums["row_id"], sums["cents"])
        checked = entries.join(totals, on="row_id", how="inner")
        mismatch = ((checked["counted"] > 0) & ~checked["bad"] & checked["cents"].notna()
                    & (checked["total"] != checked["cents"])).fillna(False).astype(bool)
        if mismatch.any():
            c = checked[mismatch]
            out.append(reject_frame(
                c["instance_id"], c["business_id"], f"{table}.{nested.amount}", RejectReason.TOTAL_MISMATCH,
                where(c) + f": {nested.table} {nested.amount} adds up to "
                + format_cents(c["total"]).astype(str) + f" but {label} is " + format_cents(c["cents"]).astype(str)))
    return out


def claim_total_checks(scheme: Scheme, claims: pd.DataFrame, totals: pd.Series) -> list[pd.DataFrame]:
    out: list[pd.DataFrame] = []
    rules = scheme.rejects
    where = claim_label(claims["business_id"], claims["instance_id"])
    total = claims["instance_id"].map(totals)
    if rules.form_total:
        text = path_values(claims, SourcePath(namespace="form", label=rules.form_total))
        cents, bad, sub_cent = parse_money_cents(text)
        field = f"form.{rules.form_total}"
        for mask, code, says in ((bad, RejectReason.AMOUNT_UNPARSEABLE, " is not an amount"),
                                 (sub_cent, RejectReason.AMOUNT_PRECISION, _SUB_CENT)):
            if mask.any():
                c = claims[mask]
                out.append(reject_frame(c["instance_id"], c["business_id"], field, code,
                                        where[mask] + f": {rules.form_total} " + quote(text[mask]) + says))
        differs = (cents.notna() & total.notna() & (cents != total)).fillna(False).astype(bool)
        if differs.any():
            c = claims[differs]
            out.append(reject_frame(
                c["instance_id"], c["business_id"], field, RejectReason.TOTAL_MISMATCH,
                where[differs] + f": {rules.form_total} is " + format_cents(cents[differs]).astype(str)
                + f" but the {scheme.rows.table} rows add up to " + format_cents(total[differs]).astype(str)))
    if rules.max_amount_per_claim is not None:
        limit = to_cents(rules.max_amount_per_claim)
        over = pd.Series([t is not None and t is not pd.NA and t > limit for t in total.tolist()],
                         index=total.index, dtype=bool)
        if over.any():
            c = claims[over]
            out.append(reject_frame(
                c["instance_id"], c["business_id"], f"{scheme.rows.table}.{scheme.rows.amount}",
                RejectReason.AMOUNT_TOO_LARGE,
                where[over] + ": total " + format_cents(total[over]).astype(str)
                + f" is over the scheme limit of {rules.max_amount_per_claim} per claim"))
    return out


def duplicate_checks(claims: pd.DataFrame, already_billed: Mapping[str, str]) -> list[pd.DataFrame]:
    """Per business_id the claim created first keeps it (then the earlier finished, then the smaller
    instance id); a later claim reusing an approval number is the copy. Business ids are in their
    normal form (``business_ids``) and compared by ``duplicate_key`` (without case)."""
    out: list[pd.DataFrame] = []
    keyed = claims[claims["business_id"].notna()]
    order = pd.DataFrame({
        key: (parse_china_datetimes(keyed[f"instance.{key}"])[0] if f"instance.{key}" in keyed
              else pd.Series(pd.NaT, index=keyed.index, dtype="datetime64[ns]"))
        for key in ("create_time", "finish_time")}).assign(instance_id=keyed["instance_id"])
    keyed = keyed.loc[order.sort_values(["create_time", "finish_time", "instance_id"], na_position="last").index]
    key = keyed["business_id"].map(duplicate_key)
    first = pd.Series(keyed["instance_id"].to_numpy(), index=key.to_numpy())
    first = first[~first.index.duplicated(keep="first")]
    again = key.duplicated(keep="first")
    if again.any():
        c = keyed[again]
        out.append(reject_frame(
            c["instance_id"], c["business_id"], "business_id", RejectReason.DUPLICATE_BUSINESS_ID,
            "claim " + c["business_id"] + ": business_id also belongs to instance "
            + key[again].map(first) + " in this batch; only that one becomes a bill"))
    if already_billed:
        billed = {duplicate_key(b): i for b, i in already_billed.items()}
        earlier = key.map(billed)
        clash = (earlier.notna() & (earlier != keyed["instance_id"])).astype(bool)
        if clash.any():
            c = keyed[clash]
            out.append(reject_frame(
                c["instance_id"], c["business_id"], "business_id", RejectReason.DUPLICATE_BUSINESS_ID,
                "claim " + c["business_id"] + ": a bill was already made for this business_id from instance "
                + earlier[clash].astype(str)))
    return out
