"""transform: every final claim whose latest answer is not yet transformed becomes a pending bill or
rejects, chunk by chunk (the transform itself is pure; this step reads and writes staging)."""

from __future__ import annotations

import hashlib
import json
import logging
from decimal import Decimal

import pandas as pd
from sqlalchemy.engine import Engine

from dingtalk_kingdee.pipeline.run import Run
from dingtalk_kingdee.reasons import MAPPING_REASONS, RejectReason
from dingtalk_kingdee.scheme import Scheme
from dingtalk_kingdee.staging import BillRecord, ClaimToTransform, RejectRecord, RowRecord, SchemeStaging
from dingtalk_kingdee.transform import transform_claims
from dingtalk_kingdee.transform.business_ids import duplicate_key, lookup_ids, normal_form
from dingtalk_kingdee.transform.limits import shorten

log = logging.getLogger(__name__)

# Claims per transform call and per staging transaction: bounds memory, keeps transactions short.
TRANSFORM_CHUNK = 2000
# The transform's row columns that describe a row rather than hold one of its cells.
_ROW_META = frozenset({"instance_id", "table", "row_index", "row_key", "row_id", "parent_row_id", "parent_row_key"})


def transform(scheme: Scheme, engine: Engine, run: Run) -> dict:
    """Turn every final claim whose latest answer is not yet transformed into a pending bill or rejects."""
    staged = SchemeStaging(engine, scheme.id)
    fingerprint = scheme_fingerprint(scheme)
    after = ""
    totals = {"claims": 0, "bills": 0, "rejected": 0, "kept_sent": 0}
    while True:
        batch = staged.claims_to_transform(TRANSFORM_CHUNK, after=after, instance_ids=run.instance_ids,
                                           include_rejected=run.replay_rejected, fingerprint=fingerprint,
                                           fingerprinted_codes=MAPPING_REASONS)
        if not batch:
            break
        after = batch[-1].instance_id
        batch += _sharing_business_ids(staged, batch, run, fingerprint)
        unreadable = _with_nul(batch)
        clean = [c for c in batch if c.instance_id not in unreadable]
        ids = [c.instance_id for c in clean]
        raw = pd.DataFrame({"instance_id": ids, "payload": [c.payload for c in clean]})
        business_ids = lookup_ids([c.payload for c in clean])   # the transform's normal form
        result = transform_claims(raw, scheme, staged.billed_business_ids(business_ids, exclude=ids))
        saved = staged.save_transform(
            {c.instance_id: c.version for c in batch}, _bill_records(result.bills),
            [*_reject_records(result.rejects), *unreadable.values()], _row_records(result.rows), run.run_id,
        )
        staged.stamp_rejects([c.instance_id for c in batch], fingerprint)
        totals["claims"] += len(batch)
        totals["bills"] += saved.bills
        totals["rejected"] += saved.rejects
        totals["kept_sent"] += saved.kept_sent
        log.info("transform: %d claims so far → %d bills, %d rejected", totals["claims"], totals["bills"],
                 totals["rejected"])
    return totals


def scheme_fingerprint(scheme: Scheme) -> str:
    """A digest of what a value-map reject depends on: the field mappings, the payee, the value maps'
    declarations and contents. A reject stored under another digest may map now."""
    parts = {"mapping": scheme.mapping.model_dump(mode="json"), "payee": scheme.payee.model_dump(mode="json"),
             "value_maps": {name: spec.model_dump(mode="json") for name, spec in scheme.value_maps.items()},
             "maps": scheme.maps}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _sharing_business_ids(staged: SchemeStaging, batch: list[ClaimToTransform], run: Run,
                          fingerprint: str) -> list[ClaimToTransform]:
    """Claims due for transform outside this chunk whose business_id one of the chunk's claims has.

    Which of the claims sharing a business_id may become the bill (the one created first) is decided
    among the claims of one transform call; chunks are cut in instance-id order, so without this a
    later copy with a smaller id would be billed in an earlier chunk and the original rejected.
    """
    # Keyed as the duplicate check compares: "TSP1" and "tsp1 " are one approval number.
    keys = {duplicate_key(business_id) for business_id in lookup_ids([c.payload for c in batch])}
    if not keys:
        return []
    in_batch = {c.instance_id for c in batch}
    due = staged.claims_to_transform(None, instance_ids=run.instance_ids, include_rejected=run.replay_rejected,
                                     fingerprint=fingerprint, fingerprinted_codes=MAPPING_REASONS,
                                     business_keys=keys)
    return [c for c in due if c.instance_id not in in_batch]


def _with_nul(batch: list[ClaimToTransform]) -> dict[str, RejectRecord]:
    """A ``malformed_payload`` reject for each claim with a NUL character anywhere in its answer.

    No valid DingTalk text holds one; PostgreSQL cannot store it in a text column and Kingdee's
    FilterString refuses it, so such a claim could only fail later, and for its whole chunk.
    """
    found: dict[str, RejectRecord] = {}
    for claim in batch:
        where = _nul_at(claim.payload)
        if where is not None:
            # The business id in its normal form or none (one holding the NUL has none): never 1 MB of it.
            business_id = normal_form(claim.payload.get("business_id"))[0] if isinstance(claim.payload, dict) else None
            found[claim.instance_id] = RejectRecord(
                instance_id=claim.instance_id, business_id=business_id, field=shorten(where),
                reason_code=RejectReason.MALFORMED_PAYLOAD,
                reason=f"claim {shorten(claim.instance_id)}: the answer holds a NUL character in {shorten(where)!r}")
    return found


def _nul_at(payload: object) -> str | None:
    """Where (a dotted path) the first string holding a NUL is, keys included; None if nowhere.
    Iterative: a deeply nested answer must not hit the recursion limit."""
    stack: list[tuple[str, object]] = [("", payload)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path or "(answer)"
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in str(key):
                    return f"{path}.{key}".lstrip(".")
                stack.append((f"{path}.{key}".lstrip("."), item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def _bill_records(bills_frame: pd.DataFrame) -> list[BillRecord]:
    return [
        BillRecord(instance_id=str(r["instance_id"]), business_id=str(r["business_id"]),
                   match_value=str(r["match_value"]), amount=Decimal(r["amount"]), payee=r.get("payee"),
                   model=r["model"])
        for r in bills_frame.to_dict("records")
    ]


def _reject_records(rejects_frame: pd.DataFrame) -> list[RejectRecord]:
    return [
        RejectRecord(instance_id=str(r["instance_id"]), business_id=r.get("business_id"), field=r.get("field"),
                     reason_code=str(r["reason_code"]), reason=str(r["reason"]))
        for r in rejects_frame.to_dict("records")
    ]


def _row_records(rows_frame: pd.DataFrame | None) -> list[RowRecord]:
    """The transform's flattened table rows (any depth) in the staging shape.

    ``row_id`` (a path such as ``<instance>/报销明细#0/报销明细.项目费用明细#1``) is the key: DingTalk's own
    rowNumber is kept among the cells but is not guaranteed unique.
    """
    if rows_frame is None or rows_frame.empty:
        return []
    cell_columns = [c for c in rows_frame.columns if c not in _ROW_META]
    records: list[RowRecord] = []
    for rec in rows_frame.to_dict("records"):
        cells = {c: rec[c] for c in cell_columns if _present(rec[c])}
        if _present(rec.get("row_key")):
            cells["rowNumber"] = rec["row_key"]
        records.append(RowRecord(
            instance_id=str(rec["instance_id"]), table_path=str(rec["table"]), row_key=str(rec["row_id"]),
            parent_row_key=str(rec["parent_row_id"]) if _present(rec.get("parent_row_id")) else None,
            row_index=int(rec["row_index"]), cells=cells,
        ))
    return records


def _present(value: object) -> bool:
    if value is None:
        return False
    try:
        return not bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and dicts are values, not missing markers
        return True
