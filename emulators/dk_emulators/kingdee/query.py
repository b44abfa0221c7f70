"""ExecuteBillQuery and BillQuery: rows of bills (one per entry when an entry field is asked for) or
of base-data records, filtered by ``FilterString``, ordered by ``OrderString`` and paged."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from dk_emulators.kingdee import filter_string
from dk_emulators.kingdee.forms import BaseData, FieldSpec, FormSpec, find_form, resolve
from dk_emulators.kingdee.store import BillStore, StoredBill
from dk_emulators.kingdee.wire import (
    MSG_EXCEPTION,
    MSG_NOT_EXIST,
    MSG_PARAM,
    KingdeeError,
    decimal_or_none,
    dumps,
    field_list,
    get_key,
    int_or_none,
)

Row = Callable[[str], Any]  # field key -> typed value of one result row


def execute_bill_query(store: BillStore, basedata: BaseData, form_id: str | None, data: dict[str, Any],
                       as_dicts: bool = False) -> Any:
    """Rows as lists of values in ``FieldKeys`` order (as dicts by key when ``as_dicts``)."""
    form_id = form_id or get_key(data, "FormId")
    keys = field_list(get_key(data, "FieldKeys"))
    if not keys:
        raise KingdeeError("参数FieldKeys不能为空", MSG_PARAM, "FieldKeys")
    try:
        condition = filter_string.parse_filter(get_key(data, "FilterString"))
    except filter_string.FilterError as exc:
        raise KingdeeError(f"过滤条件FilterString语法错误：{exc}", MSG_EXCEPTION, "FilterString") from exc
    order = _parse_order(get_key(data, "OrderString"))
    rows_source: list[Row]
    if form_id and str(form_id) in basedata.forms:
        rows_source = _basedata_rows(basedata, str(form_id))
    else:
        spec = find_form(form_id)
        mentioned = set(keys) | filter_string.referenced_fields(condition) | {k for k, _ in order}
        for key in mentioned:
            bill_field(basedata, spec, None, None, key, check_only=True)
        per_entry = any(_is_entry_key(spec, k) for k in mentioned)
        rows_source = []
        for bill in store.all(spec.form_id):
            for entry in (bill.entries or [None]) if per_entry else [None]:
                rows_source.append(lambda key, b=bill, e=entry, s=spec: bill_field(basedata, s, b, e, key))
    try:
        rows = [r for r in rows_source if filter_string.evaluate(condition, r)]
        for key, descending in reversed(order):
            rows.sort(key=lambda r, k=key: _sort_key(r(k)), reverse=descending)
    except filter_string.FilterError as exc:
        raise KingdeeError(f"执行查询出错：{exc}", MSG_EXCEPTION, "FilterString") from exc
    start = int_or_none(get_key(data, "StartRow")) or 0
    limit = int_or_none(get_key(data, "Limit")) or 0
    top = int_or_none(get_key(data, "TopRowCount")) or 0
    rows = rows[start:]
    for cap in (limit, top):
        if cap > 0:
            rows = rows[:cap]
    out_rows = [[_output(row(key)) for key in keys] for row in rows]
    if as_dicts:
        return [dict(zip(keys, values, strict=True)) for values in out_rows]
    return out_rows


def bill_query(store: BillStore, basedata: BaseData, form_id: str | None, data: dict[str, Any]) -> Any:
    """BillQuery: ExecuteBillQuery's rows as dicts by field key."""
    return execute_bill_query(store, basedata, form_id, data, as_dicts=True)


# Base-data fields named differently from the record attribute they read: (form, FIELD) -> attribute.
# A reference to another base-data record (an employee's post department) is stored as its number.
_BASEDATA_ALIASES: dict[tuple[str, str], str] = {
    ("BD_Empinfo", "FSTAFFNUMBER"): "staff_number",
    ("BD_Empinfo", "FPOSTDEPT.FNUMBER"): "department",
}
_BASEDATA_REFERENCE_NAMES: dict[tuple[str, str], tuple[str, str]] = {
    ("BD_Empinfo", "FPOSTDEPT.FNAME"): ("department", "BD_Department"),
}


def _basedata_rows(basedata: BaseData, form_id: str) -> list[Row]:
    def resolver(record: dict[str, Any]) -> Row:
        def resolve_key(key: str) -> Any:
            upper = key.upper()
            if upper in {"FID", "FMASTERID", f"F{form_id.split('_')[-1].upper()}ID"}:
                return record["id"]
            if upper == "FNUMBER":
                return record["number"]
            if upper == "FNAME":
                return record.get("name")
            if upper == "FDOCUMENTSTATUS":
                return record.get("document_status", "C")
            if upper == "FFORBIDSTATUS":
                return "A" if record.get("enabled", True) else "B"
            if (form_id, upper) in _BASEDATA_ALIASES:
                return record.get(_BASEDATA_ALIASES[form_id, upper])
            if (form_id, upper) in _BASEDATA_REFERENCE_NAMES:
                attribute, target_form = _BASEDATA_REFERENCE_NAMES[form_id, upper]
                target = basedata.find(target_form, number=record.get(attribute)) if record.get(attribute) else None
                return target.get("name") if target else None
            attribute = key[1:].lower() if key[:1].upper() == "F" else key.lower()
            if attribute in record:
                return record[attribute]
            raise KingdeeError(f"元数据中标识为{key}的字段不存在", MSG_NOT_EXIST, key)
        return resolve_key
    return [resolver(record) for record in basedata.forms[form_id]]


def _is_entry_key(spec: FormSpec, key: str) -> bool:
    upper = key.upper().split(".", 1)[0]
    prefix = spec.entry_key.upper() + "_"
    return upper.startswith(prefix) or upper == "FENTRYID" or upper in spec.entry


def bill_field(basedata: BaseData, spec: FormSpec, bill: StoredBill | None, entry: dict[str, Any] | None,
               key: str, check_only: bool = False) -> Any:
    """The typed value of ``key`` for one (bill, entry) row; raises for unknown fields."""
    upper = key.upper()
    base, _, prop = upper.partition(".")
    prefix = spec.entry_key.upper() + "_"
    entry_prefixed = base.startswith(prefix)
    if entry_prefixed:
        base = base[len(prefix):]
    header_specials = {"FID", "FBILLNO", "FDOCUMENTSTATUS", "FCREATEDATE"}
    known_entry = base in spec.entry or base in {"FENTRYID", "FSEQ"}
    known_header = not entry_prefixed and (base in spec.header or base in header_specials)
    if not (known_entry or known_header) or (prop and prop not in {"FNUMBER", "FNAME", "FID"}):
        raise KingdeeError(f"元数据中标识为{key}的字段不存在", MSG_NOT_EXIST, key)
    if prop and (spec.entry.get(base) or spec.header.get(base) or FieldSpec("", "")).kind != "ref":
        raise KingdeeError(f"元数据中标识为{key}的字段不存在", MSG_NOT_EXIST, key)
    if check_only or bill is None:
        return None
    if known_header and base in header_specials:
        if base == "FID":
            return bill.fid
        if base == "FBILLNO":
            return bill.bill_no
        if base == "FDOCUMENTSTATUS":
            return bill.status
        return filter_string.parse_datetime(bill.created)
    if known_header:
        field_spec, values = spec.header[base], bill.header
    else:
        if entry is None:
            return None
        if base == "FENTRYID":
            return int_or_none(get_key(entry, "FEntryID"))
        if base == "FSEQ":
            return bill.entries.index(entry) + 1
        field_spec, values = spec.entry[base], entry
    raw = get_key(values, field_spec.key)
    if field_spec.kind == "ref":
        record = resolve(basedata, field_spec, raw, bill.header)
        if prop == "FNUMBER":
            return record["number"] if record else None
        if prop == "FNAME":
            return record.get("name") if record else None
        return record["id"] if record else 0
    if raw is None or raw == "":
        return None
    if field_spec.kind == "date":
        try:
            return filter_string.parse_datetime(str(raw))
        except ValueError:
            return None
    if field_spec.kind == "decimal":
        return decimal_or_none(raw)
    return raw if isinstance(raw, str | int | Decimal) else dumps(raw)


def _parse_order(value: Any) -> list[tuple[str, bool]]:
    order: list[tuple[str, bool]] = []
    for part in field_list(value):
        words = part.split()
        if len(words) > 2 or (len(words) == 2 and words[1].upper() not in {"ASC", "DESC"}):
            raise KingdeeError(f"排序条件OrderString语法错误：{part}", MSG_EXCEPTION, "OrderString")
        order.append((words[0], len(words) == 2 and words[1].upper() == "DESC"))
    return order


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, str):
        return (1, value.casefold())
    return (1, value)


def _output(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    return value
