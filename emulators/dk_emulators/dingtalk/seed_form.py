"""The expense approval form as DingTalk shows it, for the seed generator: labels and component
ids of the template (scheme-expense-to-paybill.md), plausible amounts per expense type, and the
value encodings the real service uses (upper-case money, China-time texts, table cells, files)."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from dk_emulators.dingtalk.wire import CHINA_TZ

# Labels of the expense form (exactly as the template names them) and their component ids.
LABEL_PROJECT = "费用归属项目"
LABEL_CATEGORY = "报销类别"
LABEL_NOTE = "TextNote_7L0ZKXODKW40"
LABEL_ADMIN_TYPE = "行政报销类型"
LABEL_PROJECT_TYPE = "项目报销类型"
LABEL_DETAILS = "报销明细"
LABEL_DATE = "费用发生日期"
LABEL_AMOUNT = "报销金额(元)"
LABEL_DESCRIPTION = "费用明细"
LABEL_PROJECT_DETAILS = "项目费用明细"
LABEL_NESTED_TOTAL = "总金额"
LABEL_RELATED = "关联审批单"
LABEL_NESTED_NOTE = "TextNote-KDE5B2G3"
LABEL_INVOICE = "电子发票"
LABEL_PAYEE_ACCOUNT = "收款账号"
LABEL_COMPANY_PAY = "公司帐号付款(如需公司帐号付款请选择)"
LABEL_PHOTOS = "报销凭证拍照上传"
LABEL_ATTACHMENTS = "附件"

TOP_COMPONENTS = {  # label -> (component id, component type)
    LABEL_PROJECT: ("DDSelectField_1Q2V3PK4OQ8W0", "DDSelectField"),
    LABEL_CATEGORY: ("DDSelectField_21ASEWDIB0W00", "DDSelectField"),
    LABEL_NOTE: ("TextNote_7L0ZKXODKW40", "TextNote"),
    LABEL_ADMIN_TYPE: ("DDSelectField_LZ8ZMRBHCRK0", "DDSelectField"),
    LABEL_PROJECT_TYPE: ("DDSelectField_1DL8F4CAGB280", "DDSelectField"),
    LABEL_DETAILS: ("TableField_K404KZ5IATS0", "TableField"),
}
ROW_COMPONENTS = {
    LABEL_DATE: ("DDDateField_ITHUFEYY8BK0", "DDDateField"),
    LABEL_AMOUNT: ("MoneyField_1S85G4YLMM5C0", "MoneyField"),
    LABEL_DESCRIPTION: ("TextareaField_1KBOLPXS2TFK0", "TextareaField"),
    LABEL_PROJECT_DETAILS: ("TableField_1M3IV3VR6CTC0", "TableField"),
}
NESTED_COMPONENTS = {
    LABEL_NESTED_TOTAL: ("MoneyField_2B5Z9X7QWE4G0", "MoneyField"),
    LABEL_RELATED: ("RelateField_1XW3Q8R0V9TS0", "RelateField"),
    LABEL_NESTED_NOTE: ("TextNote-KDE5B2G3", "TextNote"),
    LABEL_INVOICE: ("DDAttachment_Z5Q1M1VZ6Y80", "DDAttachment"),
    LABEL_PAYEE_ACCOUNT: ("TextField_1G7J9OK2NVB40", "TextField"),
    LABEL_COMPANY_PAY: ("DDSelectField_7YDBUQ1XN5C0", "DDSelectField"),
    LABEL_PHOTOS: ("DDPhotoField_JS5V3I3Y7GG0", "DDPhotoField"),
    LABEL_ATTACHMENTS: ("DDAttachment_1C7QPKL1LSXS0", "DDAttachment"),
}

# Plausible amounts (yuan) and descriptions per expense type.
TYPE_PROFILES: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "差旅费": (200, 5000, ("北京出差高铁往返", "深圳出差住宿两晚", "杭州客户拜访差旅")),
    "交通费": (15, 300, ("打车去客户现场", "加班晚归打车", "机场往返出租车")),
    "办公费": (20, 800, ("采购打印纸和文具", "购买办公用移动硬盘", "会议室白板笔与便签")),
    "业务招待费": (100, 3000, ("招待客户晚餐", "合作方来访茶歇", "年度客户答谢午宴")),
    "通讯费": (50, 300, ("本月手机话费", "出差期间流量包", "办公宽带续费")),
    "项目差旅费": (300, 6000, ("项目现场出差机票", "项目驻场住宿", "项目验收差旅")),
    "项目材料费": (100, 20000, ("采购项目测试设备配件", "项目现场布线材料", "项目样机耗材")),
    "项目外包费": (2000, 50000, ("外包开发阶段款", "第三方测试服务费", "外包设计服务费")),
    "项目会议费": (500, 8000, ("项目启动会场地费", "项目评审会茶歇", "项目周例会场地")),
    "团建费": (200, 2000, ("部门团建聚餐", "季度团建活动", "团队拓展训练")),
}
DEFAULT_PROFILE = (50, 1000, ("日常费用报销",))


# ---------------------------------------------------------------------- value encodings
_DIGITS = "零壹贰叁肆伍陆柒捌玖"
_SMALL_UNITS = ("", "拾", "佰", "仟")
_GROUP_UNITS = ("", "万", "亿", "万亿")


def _four_digits_upper(number: int) -> str:
    text, zero_pending = "", False
    for position in (3, 2, 1, 0):
        digit = number // 10 ** position % 10
        if digit == 0:
            zero_pending = zero_pending or bool(text)
            continue
        if zero_pending:
            text += "零"
            zero_pending = False
        text += _DIGITS[digit] + _SMALL_UNITS[position]
    return text


def money_upper(amount: Decimal) -> str:
    """Chinese capital amount as MoneyField shows it: 150 -> 壹佰伍拾元整, 1280.50 -> 壹仟贰佰捌拾元伍角."""
    sign = "负" if amount < 0 else ""
    cents = int((abs(amount) * 100).to_integral_value())
    yuan, jiao, fen = cents // 100, cents // 10 % 10, cents % 10
    groups = []
    rest = yuan
    while rest:
        groups.append(rest % 10000)
        rest //= 10000
    text, zero_pending = "", False
    for index in reversed(range(len(groups))):
        group = groups[index]
        if group == 0:
            zero_pending = bool(text)
            continue
        if text and (zero_pending or group < 1000):
            text += "零"
        text += _four_digits_upper(group) + _GROUP_UNITS[index]
        zero_pending = False
    if jiao == 0 and fen == 0:
        return sign + (text or "零") + "元整"
    text = text + "元" if text else ""
    if jiao:
        text += _DIGITS[jiao] + "角"
    elif text:
        text += "零"
    if fen:
        text += _DIGITS[fen] + "分"
    return sign + text


def format_money(cents: int, rng: random.Random) -> str:
    """How people type amounts: "150", "1280.50", "580.00", sometimes "1,280.50"."""
    amount = Decimal(cents) / 100
    whole = cents % 100 == 0
    thousands = abs(cents) >= 100_000 and rng.random() < 0.3
    if whole and rng.random() < 0.8:
        return f"{cents // 100:,}" if thousands else str(cents // 100)
    return format(amount, ",.2f") if thousands else format(amount, ".2f")


def compact_json(value: Any) -> str:
    """JSON inside a string value, compact as the service writes it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def china_datetime(moment: datetime | date | None, default: datetime) -> datetime:
    if moment is None:
        return default
    if not isinstance(moment, datetime):
        return datetime(moment.year, moment.month, moment.day, tzinfo=CHINA_TZ)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=CHINA_TZ)
    return moment.astimezone(CHINA_TZ)


def china_text(moment: datetime) -> str:
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


def random_token(rng: random.Random, length: int, alphabet: str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def cell(label: str, components: Mapping[str, tuple[str, str]], value: str,
          extend: dict | None = None) -> dict:
    key, component_type = components[label]
    cell: dict[str, Any] = {"componentType": component_type, "label": label, "key": key, "value": value}
    if extend is not None:
        cell["extendValue"] = extend
    return cell


def table_schema(components: Mapping[str, tuple[str, str]]) -> list[dict]:
    """The empty-table quirk: the table's schema where its rows should be."""
    return [{"componentName": component_type,
             "props": {"id": key, "label": label, "required": False, "placeholder": "请输入"}}
            for label, (key, component_type) in components.items()]


def top_cell(label: str, value: str, ext_value: Any = None) -> dict:
    key, component_type = TOP_COMPONENTS[label]
    component: dict[str, Any] = {"name": label, "value": value, "id": key, "component_type": component_type}
    if ext_value is not None:
        component["ext_value"] = compact_json(ext_value)
    return component


def split_cents(total: int, parts: int, rng: random.Random) -> list[int]:
    """``parts`` positive amounts summing exactly to ``total``."""
    parts = max(1, min(parts, total))
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    bounds = [0, *cuts, total]
    return [bounds[i + 1] - bounds[i] for i in range(parts)]


def file_value(rng: random.Random, name: str, file_type: str) -> dict:
    return {"spaceId": str(rng.randint(10**9, 10**10 - 1)), "fileName": name,
            "fileSize": rng.randint(20_000, 2_000_000), "fileType": file_type,
            "fileId": str(rng.randint(10**10, 10**11 - 1))}
