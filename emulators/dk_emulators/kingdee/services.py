"""The DynamicFormService calls that change or read single bills: Save / BatchSave, the state
operations (Submit, Audit, UnAudit, Delete) and View. Queries are in ``query``.

Each call runs in one store transaction: a batch either stores every valid model and reports the
invalid ones by ``DIndex``, or (on an unexpected error) stores nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from dk_emulators.kingdee.forms import (
    STATUS_NAMES,
    BaseData,
    FieldSpec,
    FormSpec,
    ModelError,
    SaveOptions,
    find_form,
    resolve,
    validate,
)
from dk_emulators.kingdee.query import bill_query, execute_bill_query
from dk_emulators.kingdee.store import BillStore, DuplicateNumber, StoredBill
from dk_emulators.kingdee.wire import (
    MSG_INVALID,
    MSG_NO_DATA,
    MSG_NOT_EXIST,
    MSG_OK,
    MSG_PARAM,
    KingdeeError,
    field_list,
    get_key,
    int_or_none,
    parse_bool,
    response_status,
    set_key,
)

# operation -> (statuses it is allowed from, status it leads to (None = deleted), verb in messages)
OPERATION_RULES: dict[str, tuple[set[str], str | None, str]] = {
    "Submit": ({"A", "D", "Z"}, "B", "提交"),
    "Audit": ({"B"}, "C", "审核"),
    "UnAudit": ({"C"}, "A", "反审核"),
    "Delete": ({"A", "Z", "D"}, None, "删除"),
}


class FormServices:
    """The services over one bill store and one set of base data."""

    def __init__(self, store: BillStore, basedata: BaseData) -> None:
        self.store = store
        self.basedata = basedata
        self.handlers: dict[str, Callable[[str | None, dict[str, Any]], Any]] = {
            "Save": lambda form_id, data: self.save(form_id, data, batch=False),
            "BatchSave": lambda form_id, data: self.save(form_id, data, batch=True),
            **{name: (lambda form_id, data, op=name: self.operation(form_id, data, op)) for name in OPERATION_RULES},
            "View": self.view,
            "ExecuteBillQuery": lambda form_id, data: execute_bill_query(self.store, self.basedata, form_id, data),
            "BillQuery": lambda form_id, data: bill_query(self.store, self.basedata, form_id, data),
        }

    # ----------------------------------------------------------------------------------- save
    def save(self, form_id: str | None, data: dict[str, Any], batch: bool = True) -> dict[str, Any]:
        spec = find_form(form_id)
        models = get_key(data, "Model")
        if isinstance(models, dict):
            models = [models]
        if not isinstance(models, list) or not models:
            raise KingdeeError("参数Model不能为空", MSG_PARAM, "Model")
        options = SaveOptions(
            verify_base_data=parse_bool(get_key(data, "IsVerifyBaseDataField"), False),
            auto_submit_audit=parse_bool(get_key(data, "IsAutoSubmitAndAudit"), False),
            delete_entry=parse_bool(get_key(data, "IsDeleteEntry"), True),
            need_return_fields=field_list(get_key(data, "NeedReturnFields")),
        )
        errors: list[dict[str, Any]] = []
        successes: list[dict[str, Any]] = []
        returned: list[dict[str, Any]] = []
        first_code = MSG_OK
        with self.store.lock:
            self.store.begin()
            try:
                for index, model in enumerate(models):
                    outcome = self._save_model(spec, model, options)
                    if isinstance(outcome, StoredBill):
                        successes.append({"Id": outcome.fid, "Number": outcome.bill_no, "DIndex": index})
                        returned.append(_need_return(outcome, spec, options.need_return_fields))
                    else:
                        first_code = first_code or outcome[0].msg_code
                        errors.extend({"FieldName": e.field, "Message": e.message, "DIndex": index}
                                      for e in outcome)
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise
        result: dict[str, Any] = {"ResponseStatus": response_status(errors, successes, first_code)}
        if not batch and successes:
            result["Id"], result["Number"] = successes[0]["Id"], successes[0]["Number"]
        result["NeedReturnData"] = returned
        return {"Result": result}

    def _save_model(self, spec: FormSpec, model: Any, options: SaveOptions) -> StoredBill | list[ModelError]:
        if not isinstance(model, dict):
            return [ModelError(None, "Model的格式不正确，应为JSON对象", MSG_PARAM)]
        header = {k: v for k, v in model.items() if k.upper() != spec.entry_key.upper()}
        entries_raw = get_key(model, spec.entry_key)
        entries_given = entries_raw is not None
        entries = [dict(e) if isinstance(e, dict) else e for e in (entries_raw or [])]
        fid = int_or_none(get_key(header, "FID"))
        existing: StoredBill | None = None
        if fid:
            existing = self.store.by_id(spec.form_id, fid)
            if existing is None:
                return [ModelError("FID", f"单据内码“{fid}”对应的{spec.name}不存在或已被删除", MSG_NOT_EXIST)]
            if existing.status not in {"Z", "A", "D"}:
                return [ModelError(None, f"单据编号为“{existing.bill_no}”的{spec.name}当前状态为"
                                         f"“{STATUS_NAMES[existing.status]}”，不允许修改", MSG_INVALID)]
            upper_sent = {k.upper() for k in header}
            merged = {k: v for k, v in existing.header.items() if k.upper() not in upper_sent}
            merged.update(header)
            header = merged
            entries = _merge_entries(existing.entries, entries, entries_given, options.delete_entry)
        errors = validate(self.basedata, spec, header, entries, options)
        if errors:
            return errors
        bill_no = str(get_key(header, "FBillNo") or "").strip()
        if existing is not None and not bill_no:
            bill_no = existing.bill_no
        if bill_no and self.store.number_taken(spec.form_id, bill_no, existing.fid if existing else None):
            return [ModelError("FBillNo", f"违反字段唯一性要求：编码唯一。[{bill_no}]在当前系统中已经被使用。",
                               MSG_INVALID)]
        if not bill_no:
            while True:
                bill_no = f"{spec.number_prefix}{self.store.next_value('number:' + spec.form_id, 1):08d}"
                if not self.store.number_taken(spec.form_id, bill_no):
                    break
        for entry in entries:
            if not int_or_none(get_key(entry, "FEntryID")):
                set_key(entry, "FEntryID", self.store.next_value("entry:" + spec.form_id, 100001))
        status = "C" if options.auto_submit_audit else (existing.status if existing else "A")
        header = {k: v for k, v in header.items() if k.upper() not in {"FID", "FBILLNO"}}
        if existing is not None:
            bill = StoredBill(existing.fid, spec.form_id, bill_no, status, existing.created, header, entries)
            self.store.update(bill)
        else:
            bill = StoredBill(self.store.next_value("fid", 100001), spec.form_id, bill_no, status,
                              datetime.now().strftime("%Y-%m-%dT%H:%M:%S"), header, entries)
            try:
                self.store.insert(bill)
            except DuplicateNumber:
                return [ModelError("FBillNo", f"违反字段唯一性要求：编码唯一。[{bill_no}]在当前系统中已经被使用。")]
        return bill

    # ----------------------------------------------------------------------------- operations
    def _bills_by_request(self, spec: FormSpec, data: dict[str, Any]) -> list[tuple[str, StoredBill | None]]:
        numbers = get_key(data, "Numbers")
        ids = get_key(data, "Ids")
        wanted: list[tuple[str, StoredBill | None]] = []
        if isinstance(numbers, str):
            numbers = [n for n in numbers.split(",") if n.strip()]
        for number in numbers or []:
            wanted.append((str(number), self.store.by_number(spec.form_id, str(number))))
        if isinstance(ids, str):
            ids = [i for i in ids.split(",") if i.strip()]
        for raw_id in ids or []:
            fid = int_or_none(raw_id)
            wanted.append((str(raw_id), self.store.by_id(spec.form_id, fid) if fid else None))
        if not wanted:
            raise KingdeeError("参数Numbers和Ids不能同时为空", MSG_PARAM)
        return wanted

    def operation(self, form_id: str | None, data: dict[str, Any], operation: str) -> dict[str, Any]:
        """Submit, Audit, UnAudit or Delete the bills named by ``Numbers`` / ``Ids``."""
        spec = find_form(form_id)
        allowed, target, verb = OPERATION_RULES[operation]
        errors: list[dict[str, Any]] = []
        successes: list[dict[str, Any]] = []
        first_code = MSG_OK
        with self.store.lock:
            self.store.begin()
            try:
                for index, (key, bill) in enumerate(self._bills_by_request(spec, data)):
                    if bill is None:
                        first_code = first_code or MSG_NO_DATA
                        errors.append({"FieldName": None, "DIndex": index,
                                       "Message": f"单据“{key}”不存在或已被删除，不能{verb}"})
                        continue
                    if bill.status not in allowed:
                        first_code = first_code or MSG_INVALID
                        if operation == "Audit" and bill.status == "C":
                            message = f"单据编号为“{bill.bill_no}”的{spec.name}已经审核，不能重复审核"
                        else:
                            message = (f"单据编号为“{bill.bill_no}”的{spec.name}，单据状态为"
                                       f"“{STATUS_NAMES[bill.status]}”，不能{verb}")
                        errors.append({"FieldName": None, "DIndex": index, "Message": message})
                        continue
                    if target is None:
                        self.store.delete(bill.fid)
                    else:
                        bill.status = target
                        self.store.update(bill)
                    successes.append({"Id": bill.fid, "Number": bill.bill_no, "DIndex": index})
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise
        return {"Result": {"ResponseStatus": response_status(errors, successes, first_code)}}

    # ----------------------------------------------------------------------------------- view
    def view(self, form_id: str | None, data: dict[str, Any]) -> dict[str, Any]:
        spec = find_form(form_id)
        number = get_key(data, "Number")
        fid = int_or_none(get_key(data, "Id"))
        bill = None
        if number:
            bill = self.store.by_number(spec.form_id, str(number))
        elif fid:
            bill = self.store.by_id(spec.form_id, fid)
        if bill is None:
            raise KingdeeError("单据不存在或已被删除", MSG_NO_DATA)
        view: dict[str, Any] = {"Id": bill.fid, "BillNo": bill.bill_no, "DocumentStatus": bill.status,
                                "CreateDate": bill.created}
        for key, value in bill.header.items():
            field_spec = spec.header.get(key.upper())
            view[key] = self._view_value(field_spec, value, bill.header)
        view[spec.entry_key] = [
            {k: self._view_value(spec.entry.get(k.upper()), v, bill.header) for k, v in e.items()}
            for e in bill.entries]
        return {"Result": {"ResponseStatus": None, "Result": view}}

    def _view_value(self, spec: FieldSpec | None, value: Any, header: dict[str, Any]) -> Any:
        if spec is None or spec.kind != "ref":
            return value
        record = resolve(self.basedata, spec, value, header)
        if record is None:
            return None
        return {"Id": record["id"], "Number": record["number"],
                "Name": [{"Key": 2052, "Value": record.get("name")}]}


def _merge_entries(old: list[dict[str, Any]], sent: list[Any], sent_given: bool, delete_entry: bool) -> list[Any]:
    """The entries of an updated bill: sent rows with a known FEntryID update that row; old rows not
    sent are dropped unless ``IsDeleteEntry`` is false."""
    if not sent_given:
        return [dict(e) for e in old]
    by_id = {int(e["FEntryID"]): e for e in old if int_or_none(e.get("FEntryID"))}
    merged: list[Any] = []
    for row in sent:
        entry_id = int_or_none(get_key(row, "FEntryID")) if isinstance(row, dict) else None
        if entry_id and entry_id in by_id:
            base = dict(by_id.pop(entry_id))
            base.update(row)
            merged.append(base)
        else:
            merged.append(row)
    if not delete_entry:
        merged = [*by_id.values(), *merged]
    return merged


def _need_return(bill: StoredBill, spec: FormSpec, fields: list[str]) -> dict[str, Any]:
    returned: dict[str, Any] = {}
    for name in fields:
        upper = name.upper()
        if upper == "FBILLNO":
            returned[name] = bill.bill_no
        elif upper == "FID":
            returned[name] = bill.fid
        elif upper == "FDOCUMENTSTATUS":
            returned[name] = bill.status
        elif upper in {spec.entry_key.upper(), f"{spec.entry_key.upper()}.FENTRYID"}:
            returned[spec.entry_key] = [{"FEntryID": get_key(e, "FEntryID")} for e in bill.entries]
        else:
            value = get_key(bill.header, name)
            if value is not None:
                returned[name] = value
    return returned
