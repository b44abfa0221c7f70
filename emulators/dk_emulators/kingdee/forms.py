"""Form metadata and validation: the business form the emulator serves (AP_PAYBILL), the base data
its reference fields point at, and the checks a Save runs on a model before storing it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dk_emulators.demo_data import read_demo_text
from dk_emulators.kingdee import filter_string
from dk_emulators.kingdee.wire import (
    MSG_INVALID,
    MSG_NOT_EXIST,
    MSG_PARAM,
    KingdeeError,
    decimal_or_none,
    dumps,
    get_key,
)

# ------------------------------------------------------------------------------------- base data

class BaseData:
    """Base-data records by form id, looked up by number (case-insensitive) or internal id."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.forms: dict[str, list[dict[str, Any]]] = {
            form_id: list(records) for form_id, records in document.get("forms", {}).items()
        }
        self._by_number = {
            form_id: {str(r["number"]).upper(): r for r in records} for form_id, records in self.forms.items()
        }
        self._by_id = {form_id: {int(r["id"]): r for r in records} for form_id, records in self.forms.items()}

    @classmethod
    def load(cls, source: str | Path | dict[str, Any]) -> BaseData:
        if isinstance(source, dict):
            return cls(source)
        return cls(json.loads(read_demo_text(Path(source))))

    def find(self, form_id: str, number: str | None = None, record_id: int | None = None
             ) -> dict[str, Any] | None:
        if number is not None:
            return self._by_number.get(form_id, {}).get(str(number).upper())
        if record_id is not None:
            return self._by_id.get(form_id, {}).get(int(record_id))
        return None


def usable(record: dict[str, Any]) -> bool:
    """Whether a bill may reference the record: not forbidden (FForbidStatus A) and audited
    (FDocumentStatus C)."""
    return bool(record.get("enabled", True)) and record.get("document_status", "C") == "C"


def reference_key(value: Any) -> tuple[str | None, int | None]:
    """(number, id) a base-data field value points at: ``{"FNumber": ..}`` (any case) or ``{"FID": n}``."""
    if not isinstance(value, dict):
        return None, None
    lowered = {str(k).lower(): v for k, v in value.items()}
    number = lowered.get("fnumber")
    if number not in (None, ""):
        return str(number), None
    for key in ("fid", "fmasterid", "id"):
        raw = lowered.get(key)
        if raw not in (None, "", 0, "0"):
            try:
                return None, int(raw)
            except (TypeError, ValueError):
                return None, None
    return None, None


# ------------------------------------------------------------------------------ form definitions

@dataclass(frozen=True)
class FieldSpec:
    key: str
    label: str
    kind: str = "text"  # text | date | decimal | ref | unit_type
    ref_form: str | None = None  # base-data form, or for a dynamic ref the key of its type field
    dynamic: bool = False  # ref_form names the sibling field holding the form id
    required: bool = False


UNIT_TYPES = ("BD_Supplier", "BD_Customer", "BD_Department", "BD_Empinfo", "FIN_OTHERS", "BD_BANK")


@dataclass(frozen=True)
class FormSpec:
    form_id: str
    name: str
    number_prefix: str
    entry_key: str
    entry_label: str
    header: dict[str, FieldSpec]
    entry: dict[str, FieldSpec]


def _fields(*specs: FieldSpec) -> dict[str, FieldSpec]:
    return {spec.key.upper(): spec for spec in specs}


AP_PAYBILL = FormSpec(
    form_id="AP_PAYBILL", name="付款单", number_prefix="FKD", entry_key="FPAYBILLENTRY",
    entry_label="付款单明细",
    header=_fields(
        FieldSpec("FBillTypeID", "单据类型", "ref", "BOS_BillType", required=True),
        FieldSpec("FDATE", "业务日期", "date", required=True),
        FieldSpec("FCONTACTUNITTYPE", "往来单位类型", "unit_type", required=True),
        FieldSpec("FCONTACTUNIT", "往来单位", "ref", "FCONTACTUNITTYPE", dynamic=True, required=True),
        FieldSpec("FRECTUNITTYPE", "收款单位类型", "unit_type", required=True),
        FieldSpec("FRECTUNIT", "收款单位", "ref", "FRECTUNITTYPE", dynamic=True, required=True),
        FieldSpec("FCURRENCYID", "币别", "ref", "BD_Currency", required=True),
        FieldSpec("FSETTLECUR", "结算币别", "ref", "BD_Currency"),
        FieldSpec("FPAYORGID", "付款组织", "ref", "ORG_Organizations", required=True),
        FieldSpec("FSETTLEORGID", "结算组织", "ref", "ORG_Organizations", required=True),
        FieldSpec("FPURCHASEORGID", "采购组织", "ref", "ORG_Organizations"),
        FieldSpec("FDepartment", "部门", "ref", "BD_Department"),
        FieldSpec("FPURCHASEDEPTID", "采购部门", "ref", "BD_Department"),
        FieldSpec("FREMARK", "备注"),
        FieldSpec("FTHIRDBILLNO", "第三方单据编号"),
        FieldSpec("FEXCHANGERATE", "汇率", "decimal"),
        FieldSpec("FBUSINESSTYPE", "业务类型"),
    ),
    entry=_fields(
        FieldSpec("FSETTLETYPEID", "结算方式", "ref", "BD_SETTLETYPE", required=True),
        FieldSpec("FPURPOSEID", "付款用途", "ref", "CN_RECPAYPURPOSE", required=True),
        FieldSpec("FPAYTOTALAMOUNTFOR", "应付金额", "decimal", required=True),
        FieldSpec("FCOSTID", "费用项目", "ref", "BD_Expense"),
        FieldSpec("FEXPENSEDEPTID_E", "费用承担部门", "ref", "BD_Department"),
        FieldSpec("FMATERIALID", "物料编码", "ref", "BD_MATERIAL"),
        FieldSpec("FCOMMENT", "备注"),
        FieldSpec("FOPPOSITEBANKACCOUNT", "对方银行账号"),
        FieldSpec("FOPPOSITECCOUNTNAME", "对方账户名称"),
        FieldSpec("FOPPOSITEBANKNAME", "对方开户行"),
        FieldSpec("FPRICE", "含税单价", "decimal"),
        FieldSpec("FQTY", "数量", "decimal"),
        FieldSpec("FPOSTDATE", "登账日期", "date"),
    ),
)
FORMS: dict[str, FormSpec] = {AP_PAYBILL.form_id: AP_PAYBILL}

STATUS_NAMES = {"Z": "暂存", "A": "创建", "B": "审核中", "C": "已审核", "D": "重新审核"}


def find_form(form_id: str | None) -> FormSpec:
    """The form a call names (case-insensitive), or the whole-call error K/3Cloud gives."""
    if not form_id:
        raise KingdeeError("参数FormId不能为空", MSG_PARAM)
    spec = FORMS.get(str(form_id)) or next(
        (f for f in FORMS.values() if f.form_id.upper() == str(form_id).upper()), None)
    if spec is None:
        raise KingdeeError(f"业务对象“{form_id}”不存在或未发布", MSG_NOT_EXIST)
    return spec


# -------------------------------------------------------------------------------------- validation

@dataclass
class ModelError:
    field: str | None
    message: str
    msg_code: int = MSG_INVALID


@dataclass
class SaveOptions:
    verify_base_data: bool = False
    auto_submit_audit: bool = False
    delete_entry: bool = True
    need_return_fields: list[str] = field(default_factory=list)


def ref_form(spec: FieldSpec, values: dict[str, Any], header: dict[str, Any] | None) -> str | None:
    """The base-data form a reference field points at (a dynamic one: what its type field says)."""
    if not spec.dynamic:
        return spec.ref_form
    holder = header if header is not None else values
    unit_type = get_key(holder, spec.ref_form or "")
    return str(unit_type) if unit_type in UNIT_TYPES else None


def resolve(basedata: BaseData, spec: FieldSpec, value: Any, header: dict[str, Any]) -> dict[str, Any] | None:
    """The base-data record a reference field value of a bill points at, if any."""
    form_id = ref_form(spec, header, header)
    if form_id is None:
        return None
    number, record_id = reference_key(value)
    return basedata.find(form_id, number=number, record_id=record_id)


def validate(basedata: BaseData, spec: FormSpec, header: dict[str, Any], entries: list[Any],
             options: SaveOptions) -> list[ModelError]:
    """Every error of one model, header then entries, in K/3Cloud's wording."""
    errors: list[ModelError] = []
    for field_spec in spec.header.values():
        errors.extend(check_field(basedata, spec.form_id, field_spec, header, None, options))
    if not entries:
        errors.append(ModelError(spec.entry_key, f"单据体“{spec.entry_label}”至少需要录入一行数据"))
    for row_number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            errors.append(ModelError(spec.entry_key, f"第{row_number}行分录的格式不正确", MSG_PARAM))
            continue
        for field_spec in spec.entry.values():
            errors.extend(check_field(basedata, spec.form_id, field_spec, entry, row_number, options, header))
    return errors


def check_field(basedata: BaseData, form_id: str, spec: FieldSpec, values: dict[str, Any], row: int | None,
                options: SaveOptions, header: dict[str, Any] | None = None) -> list[ModelError]:
    raw = get_key(values, spec.key)
    where = f"第{row}行分录，" if row is not None else ""

    def missing() -> list[ModelError]:
        if not spec.required:
            return []
        if row is None:
            return [ModelError(spec.key, f"字段“{spec.label}”是必填项")]
        return [ModelError(spec.key, f"第{row}行分录，【{spec.label}】字段必录")]

    if raw is None or raw == "" or raw == {}:
        return missing()
    if spec.kind == "unit_type":
        if str(raw) not in UNIT_TYPES:
            return [ModelError(spec.key, f"{where}字段“{spec.label}”的值“{raw}”不是有效的选项")]
        return []
    if spec.kind == "date":
        try:
            filter_string.parse_datetime(str(raw))
        except ValueError:
            return [ModelError(spec.key, f"{where}字段“{spec.label}”的值“{raw}”不是有效的日期格式")]
        return []
    if spec.kind == "decimal":
        amount = decimal_or_none(raw)
        if amount is None:
            return [ModelError(spec.key, f"{where}字段“{spec.label}”的值“{raw}”不是有效的数值")]
        if spec.key == "FPAYTOTALAMOUNTFOR" and amount <= 0:
            return [ModelError(spec.key, f"{where}【{spec.label}】必须大于0")]
        return []
    if spec.kind == "ref":
        target_form = ref_form(spec, values, header)
        number, record_id = reference_key(raw)
        record = None
        if target_form is not None:
            record = basedata.find(target_form, number=number, record_id=record_id)
            # a bill type belongs to one business form
            if record is not None and record.get("bill_form") not in (None, form_id):
                record = None
        if record is not None and usable(record):
            return []
        if options.verify_base_data:
            shown = number if number is not None else (record_id if record_id is not None else dumps(raw))
            return [ModelError(spec.key, f"{where}字段“{spec.label}”的值“{shown}”在系统中不存在或未审核",
                               MSG_NOT_EXIST)]
        # Without verification the server silently drops an unresolved reference.
        return missing()
    return []
