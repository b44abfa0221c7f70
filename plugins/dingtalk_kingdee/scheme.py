"""Integration schemes: one YAML file per scheme in ``include/schemes/``, value maps beside it.

A scheme says where claims come from (DingTalk process code, look-back window, which outcomes count
as approved), where bills go (Kingdee form, BatchSave options, how a bill is found again), how each
target field is filled from the claim, which checks reject a claim, and how the result is written
back. ``docs/schemes.md`` documents every key. Every problem found on load is a
``errors.SchemeError`` whose message names the file, the key path and what is wrong.
"""

from __future__ import annotations

import csv
import re
import string
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dingtalk_kingdee.errors import SchemeError
from dingtalk_kingdee.reasons import MAPPING_REASONS

# Options BatchSave understands (kingdee-k3cloud-webapi.md); anything else is a typo worth refusing.
BATCH_SAVE_OPTIONS = frozenset({
    "NeedUpDateFields", "NeedReturnFields", "IsDeleteEntry", "IsVerifyBaseDataField", "IsEntryBatchFill",
    "ValidateFlag", "NumberSearch", "IsAutoAdjustField", "IsControlPrecision", "ValidateRepeatJson",
    "InterationFlags", "IgnoreInterationFlag", "BatchCount", "IsAutoSubmitAndAudit", "SubSystemId",
})


# Placeholders a write-back comment may use.
COMMENT_PLACEHOLDERS = frozenset({"bill_number", "business_id", "instance_id", "amount", "payee"})

SOURCE_NAMESPACES = ("instance", "form", "row", "nested")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourcePath(_Strict):
    """A parsed source path such as ``row.报销金额(元)`` or ``form.报销类别.ext.label``."""

    namespace: Literal["instance", "form", "row", "nested"]
    label: str                        # component label (or instance key)
    table: str | None = None          # nested table label, for namespace "nested"
    ext: Literal["label", "key"] | None = None

    @property
    def column(self) -> str:
        """The column of the flattened frame holding this value (ext values resolved separately)."""
        if self.namespace == "nested":
            return f"nested.{self.table}.{self.label}"
        return f"{self.namespace}.{self.label}"

    def __str__(self) -> str:
        ext = f".ext.{self.ext}" if self.ext else ""
        return f"{self.column}{ext}"


def parse_source_path(text: str) -> SourcePath:
    """Split ``namespace.label[.ext.label|.ext.key]``; nested paths are ``nested.<table>.<label>``.

    Labels may contain anything but a dot, which DingTalk labels in practice never do.
    """
    text = text.strip()
    namespace, _, rest = text.partition(".")
    if namespace not in SOURCE_NAMESPACES or not rest:
        raise ValueError(f'"{text}" is not a source path: expected one of '
                         f"{', '.join(n + '.<label>' for n in SOURCE_NAMESPACES)}")
    ext = None
    for kind in ("label", "key"):
        if rest.endswith(f".ext.{kind}"):
            rest, ext = rest[: -len(f".ext.{kind}")], kind
    if namespace == "nested":
        table, _, label = rest.partition(".")
        if not table or not label:
            raise ValueError(f'"{text}" is not a nested path: expected nested.<table>.<label>')
        return SourcePath(namespace="nested", table=table, label=label, ext=ext)
    if namespace == "instance" and ext:
        raise ValueError(f'"{text}": instance fields have no ext value')
    return SourcePath(namespace=namespace, label=rest, ext=ext)


class TemplatePart(_Strict):
    """One placeholder of a template: alternatives tried in order, optional ``:date`` conversion."""

    alternatives: tuple[SourcePath, ...]
    as_date: bool = False


def parse_template(text: str) -> list[str | TemplatePart]:
    """``"{instance.business_id} {instance.title}"`` → literal strings and placeholders.

    ``{a|b}`` takes the first of a, b that has a value; ``{a:date}`` renders a as a China-time date.
    ``{{`` and ``}}`` are literal braces.
    """
    parts: list[str | TemplatePart] = []
    for literal, field, spec, conversion in string.Formatter().parse(text):
        if literal:
            parts.append(literal)
        if field is None:
            continue
        if conversion:
            raise ValueError(f'"{{{field}!{conversion}}}": conversions are not supported')
        if spec not in ("", "date"):
            raise ValueError(f'"{{{field}:{spec}}}": the only format is ":date"')
        if not field.strip():
            raise ValueError("empty placeholder {}")
        alternatives = tuple(parse_source_path(alt) for alt in field.split("|"))
        parts.append(TemplatePart(alternatives=alternatives, as_date=spec == "date"))
    return parts


_JAVA_DATE_TOKENS = (("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("mm", "%M"), ("ss", "%S"))


def date_format_to_strftime(fmt: str) -> str:
    """Accept Kingdee-style ``yyyy-MM-dd`` patterns as well as strftime ones."""
    if "%" in fmt:
        return fmt
    for token, directive in _JAVA_DATE_TOKENS:
        fmt = fmt.replace(token, directive)
    return fmt


class FieldMapping(_Strict):
    """How one target field is filled: exactly one of const / source / template."""

    const: str | int | bool | None = None
    source: str | None = None
    template: str | None = None
    map: str | None = None                                   # value-map name looked up with the value
    type: Literal["text", "amount", "date"] = "text"
    format: str | int | None = None                          # date pattern or decimal places
    ref: str | None = None                                   # wrap as {ref: value}, e.g. FNumber
    required: bool = False
    agg: Literal["first", "join"] = "first"                  # several nested rows → one value

    @model_validator(mode="after")
    def _one_kind(self) -> FieldMapping:
        kinds = [k for k in ("const", "source", "template") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of const, source, template (found {kinds or 'none'})")
        if self.const is not None and self.map is not None:
            raise ValueError("a const needs no map: put the mapped value in the const")
        if self.type == "date" and self.format is not None and not isinstance(self.format, str):
            raise ValueError("a date format is a pattern such as yyyy-MM-dd")
        places = self.format
        if self.type == "amount" and places is not None and (
                not isinstance(places, int) or isinstance(places, bool) or not 0 <= places <= 6):
            raise ValueError("an amount format is the number of decimal places (0..6)")
        if self.type == "text" and self.format is not None:
            raise ValueError("format applies to type date or amount only")
        if self.ref is not None and not re.fullmatch(r"F[A-Za-z]+", self.ref):
            raise ValueError(f'ref "{self.ref}" should be a Kingdee key such as FNumber or FNUMBER')
        return self

    @property
    def paths(self) -> list[SourcePath]:
        """Every source path this mapping reads."""
        if self.source is not None:
            return [parse_source_path(self.source)]
        if self.template is not None:
            return [alt for part in parse_template(self.template) if isinstance(part, TemplatePart)
                    for alt in part.alternatives]
        return []

    @property
    def decimal_places(self) -> int:
        return 2 if self.format is None else int(self.format)

    @property
    def strftime(self) -> str:
        return date_format_to_strftime(str(self.format or "yyyy-MM-dd"))


class ApprovedOutcome(_Strict):
    status: list[str] = Field(default_factory=lambda: ["COMPLETED"], min_length=1)
    result: list[str] = Field(default_factory=lambda: ["agree"], min_length=1)


class SourceSpec(_Strict):
    dingtalk_conn_id: str = "dingtalk_default"
    process_code: str = Field(min_length=1)
    lookback_days: int = Field(default=30, ge=1, le=365)
    approved: ApprovedOutcome = Field(default_factory=ApprovedOutcome)
    # Statuses in which a claim is still waiting; final_statuses are the documented final ones. Any
    # other status (``completed``, empty, ``WEIRD``) rejects the claim ``unknown_status``.
    pending_statuses: list[str] = Field(default_factory=lambda: ["NEW", "RUNNING"])
    final_statuses: list[str] = Field(default_factory=lambda: ["COMPLETED", "TERMINATED", "CANCELED"])
    # DingTalk's metered calls (docs/operating.md, "DingTalk call budget"). ``incremental``: an hourly
    # run lists from the stored watermark and reads unfinished claims on a growing schedule;
    # ``lookback``: every run lists the whole look-back and reads every unfinished claim.
    listing: Literal["incremental", "lookback"] = "incremental"
    listing_overlap_minutes: int = Field(default=10, ge=0, le=24 * 60)
    reread_cap_hours: int = Field(default=24, ge=1, le=30 * 24)
    # China-time hour of the daily sweep of the whole look-back window; None = no sweep.
    sweep_hour: int | None = Field(default=3, ge=0, le=23)
    # This project's share of the organisation's monthly DingTalk quota (10,000 on the free plan).
    monthly_call_budget: int = Field(default=5000, ge=0)


class EventsSpec(_Strict):
    """DingTalk Stream events (``bpms_instance_change``) as a second schedule of the scheme's DAG.

    With events on, a claim's first read is its finish event; the hourly run lists new claims every
    ``listing_every_hours`` and gives each a safety read after ``safety_reread_hours`` (doubling up to
    ``safety_reread_cap_hours``) so that a lost event is still caught. The nightly sweep (at
    ``source.sweep_hour``) lists only the last ``sweep_window_days`` (what a late-indexed claim needs),
    and the whole look-back every ``sweep_every_days``. Every run also takes the claims of the scheme's
    asset events of the last ``catch_up_hours`` (an event no run took is billed by the next run, at the
    latest the next hourly one). docs/schemes.md, "events", says why these defaults and what each costs.
    """

    enabled: bool = False
    listing_every_hours: int = Field(default=12, ge=1, le=24)
    safety_reread_hours: int = Field(default=48, ge=1, le=30 * 24)
    safety_reread_cap_hours: int = Field(default=192, ge=1, le=30 * 24)
    sweep_every_days: int = Field(default=14, ge=1, le=30)
    sweep_window_days: int = Field(default=3, ge=1, le=364)
    # At least the hour between two hourly runs; 2 leaves an hour's slack for a late or failed run.
    catch_up_hours: int = Field(default=2, ge=1, le=48)

    @model_validator(mode="after")
    def _cap_not_below_first(self) -> EventsSpec:
        if self.safety_reread_cap_hours < self.safety_reread_hours:
            raise ValueError(f"safety_reread_cap_hours ({self.safety_reread_cap_hours}) is below "
                             f"safety_reread_hours ({self.safety_reread_hours})")
        return self


class TargetSpec(_Strict):
    kingdee_conn_id: str = "kingdee_default"
    form_id: str = "AP_PAYBILL"
    batch_size: int = Field(default=100, ge=1, le=1000)
    options: dict[str, Any] = Field(default_factory=lambda: {"IsAutoSubmitAndAudit": False,
                                                             "IsVerifyBaseDataField": True})
    submit: bool = True      # used only when IsAutoSubmitAndAudit is off
    audit: bool = True
    match_field: str = "FTHIRDBILLNO"
    entry_key: str = "FPAYBILLENTRY"

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - BATCH_SAVE_OPTIONS)
        if unknown:
            raise ValueError(f"unknown BatchSave option(s) {unknown}; known: {sorted(BATCH_SAVE_OPTIONS)}")
        return options

    @property
    def auto_submit_and_audit(self) -> bool:
        value = self.options.get("IsAutoSubmitAndAudit", False)
        return value is True or str(value).lower() == "true"


class NestedTable(_Strict):
    table: str = Field(min_length=1)            # label of the table cell inside an entry row
    amount: str | None = None                   # label of a nested amount summed for total_mismatch


class RowsSpec(_Strict):
    table: str = Field(default="报销明细", min_length=1)    # form table whose rows become entries
    amount: str = Field(default="报销金额(元)", min_length=1)
    nested: list[NestedTable] = Field(default_factory=list)


class ValueMapSpec(_Strict):
    file: str | None = None                      # CSV beside the scheme: <scheme_id>/<file>
    values: dict[str, str] | None = None         # or inline
    reject_code: str = "unmapped_value"
    # What ``python -m dingtalk_kingdee.valuemaps suggest`` pairs the keys with (docs/schemes.md);
    # the values of dingtalk_kingdee.valuemaps.model.MapKind.
    suggest: Literal["employee_number", "employee_name", "department_number", "expense_item_number"] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ValueMapSpec:
        if (self.file is None) == (self.values is None):
            raise ValueError("give exactly one of file, values")
        if self.reject_code not in MAPPING_REASONS:
            raise ValueError(f'reject_code "{self.reject_code}" is not one of {sorted(MAPPING_REASONS)}')
        return self


# What one reimbursement may reach unless the scheme says otherwise.
DEFAULT_MAX_AMOUNT_PER_CLAIM = Decimal("1000000.00")


class RejectRules(_Strict):
    amount_positive: bool = True
    nested_total_check: bool = True             # sum of nested amounts must equal the row amount
    form_total: str | None = None               # label of a form MoneyField that must equal the sum
    # A claim above it rejects amount_too_large; null lifts the cap (sums are exact at any size).
    max_amount_per_claim: Decimal | None = Field(default=DEFAULT_MAX_AMOUNT_PER_CLAIM, gt=0, decimal_places=2)


class PayeeSpec(_Strict):
    name: FieldMapping | None = None
    account: FieldMapping | None = None


class WriteBackSpec(_Strict):
    comment: bool = True
    comment_user: Literal["originator", "fixed"] = "originator"
    comment_userid: str | None = None
    comment_text: str = "已生成金蝶付款单 {bill_number}（审批编号 {business_id}）"

    @model_validator(mode="after")
    def _check(self) -> WriteBackSpec:
        if self.comment_user == "fixed" and not self.comment_userid:
            raise ValueError("comment_user fixed needs comment_userid")
        names = {field for _, field, _, _ in string.Formatter().parse(self.comment_text) if field is not None}
        unknown = sorted(names - COMMENT_PLACEHOLDERS)
        if unknown:
            raise ValueError(f"comment_text uses unknown placeholder(s) {unknown}; "
                             f"allowed: {sorted(COMMENT_PLACEHOLDERS)}")
        return self

    def comment_user_for(self, originator_userid: str) -> str:
        """The DingTalk user the comment is posted as."""
        if self.comment_user == "fixed" and self.comment_userid:
            return self.comment_userid
        return originator_userid

    def render_comment(self, **values: object) -> str:
        return self.comment_text.format(**{k: values.get(k, "") for k in COMMENT_PLACEHOLDERS})


class MappingSpec(_Strict):
    header: dict[str, FieldMapping]
    entry: dict[str, FieldMapping]


class Scheme(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str = Field(min_length=1)
    description: str = ""
    source: SourceSpec
    target: TargetSpec = Field(default_factory=TargetSpec)
    rows: RowsSpec = Field(default_factory=RowsSpec)
    value_maps: dict[str, ValueMapSpec] = Field(default_factory=dict)
    mapping: MappingSpec
    rejects: RejectRules = Field(default_factory=RejectRules)
    payee: PayeeSpec = Field(default_factory=PayeeSpec)
    write_back: WriteBackSpec = Field(default_factory=WriteBackSpec)
    events: EventsSpec = Field(default_factory=EventsSpec)
    # Filled by the loader: value-map name → {key: value}; and where the scheme came from.
    maps: dict[str, dict[str, str]] = Field(default_factory=dict)
    path: str = ""

    @model_validator(mode="after")
    def _short_sweep_within_look_back(self) -> Scheme:
        if self.events.enabled and self.events.sweep_window_days >= self.source.lookback_days:
            raise ValueError(f"events.sweep_window_days ({self.events.sweep_window_days}) must be below "
                             f"source.lookback_days ({self.source.lookback_days}): the whole look-back is the "
                             "sweep of every sweep_every_days")
        return self

    def batch_save_options(self) -> dict[str, Any]:
        """The call-level options sent next to "Model" in every BatchSave."""
        return dict(self.target.options)

    def value_map(self, name: str) -> dict[str, str]:
        return self.maps[name]


def _loc(loc: tuple[Any, ...]) -> str:
    # pydantic adds the model-validator name ("function-after[...]") to loc; it names no key.
    return ".".join(str(p) for p in loc if not str(p).startswith("function-")) or "<top>"


def _read_value_map_csv(csv_path: Path, scheme_file: Path, key_path: str) -> dict[str, str]:
    where = f"{scheme_file}: {key_path}"
    if not csv_path.is_file():
        raise SchemeError(f"{where}: value-map file {csv_path} does not exist")
    try:
        with csv_path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SchemeError(f"{where}: cannot read {csv_path}: {exc}") from exc
    if not rows or [c.strip() for c in rows[0]] != ["key", "value"]:
        raise SchemeError(f"{where}: {csv_path} must start with the header row key,value")
    result: dict[str, str] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise SchemeError(f"{where}: {csv_path} line {line_no}: "
                              f"expected 2 columns key,value, got {len(row)}")
        key, value = row[0].strip(), row[1].strip()
        if not key or not value:
            raise SchemeError(f"{where}: {csv_path} line {line_no}: empty key or value")
        if key in result:
            raise SchemeError(f'{where}: {csv_path} line {line_no}: duplicate key "{key}"')
        result[key] = value
    return result


def _check_references(scheme: Scheme, file: Path) -> None:
    """Cross-field checks pydantic cannot express per model: names, paths, namespaces."""
    def fail(key: str, message: str) -> None:
        raise SchemeError(f"{file}: {key}: {message}")

    nested_tables = {n.table for n in scheme.rows.nested}
    groups: list[tuple[str, dict[str, FieldMapping], set[str]]] = [
        ("mapping.header", scheme.mapping.header, {"instance", "form", "nested"}),
        ("mapping.entry", scheme.mapping.entry, {"instance", "form", "row", "nested"}),
        ("payee", {k: v for k, v in (("name", scheme.payee.name), ("account", scheme.payee.account))
                   if v is not None}, {"instance", "form", "nested"}),
    ]
    for prefix, fields, allowed in groups:
        for target, mapping in fields.items():
            key = f"{prefix}.{target}"
            if mapping.map is not None and mapping.map not in scheme.value_maps:
                fail(f"{key}.map", f'unknown value map "{mapping.map}"; defined: {sorted(scheme.value_maps)}')
            kind = "source" if mapping.source is not None else "template"
            try:
                paths = mapping.paths
            except ValueError as exc:
                fail(f"{key}.{kind}", str(exc))
            for path in paths:
                if path.namespace not in allowed:
                    fail(f"{key}.{kind}", f'"{path}": {path.namespace}.* cannot be used here '
                                          f"(allowed: {', '.join(sorted(allowed))})")
                if path.namespace == "nested" and path.table not in nested_tables:
                    fail(f"{key}.{kind}", f'"{path}": table "{path.table}" is not listed in rows.nested')
    if scheme.target.match_field not in scheme.mapping.header:
        fail("target.match_field", f'"{scheme.target.match_field}" is not a field of mapping.header')
    if scheme.target.entry_key in scheme.mapping.header:
        fail(f"mapping.header.{scheme.target.entry_key}",
             "is the entry key; entry fields go in mapping.entry")
    if not scheme.mapping.entry:
        fail("mapping.entry", "maps no field")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently,
    so a second ``max_amount_per_claim`` further down would quietly win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f'key "{key}" given twice (line {seen[key]} and line {line})', key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep)


def _value_map_path(scheme_file: Path, scheme_id: str, name: str, map_name: str) -> Path:
    """``<scheme folder>/<scheme_id>/<name>``, which must stay inside ``<scheme_id>/`` (no absolute
    path, no ``..`` out of it): a scheme reads only its own value maps."""
    base = (scheme_file.parent / scheme_id).resolve()
    path = (base / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(base):
        raise SchemeError(f'{scheme_file}: value_maps.{map_name}.file: "{name}" must stay inside '
                          f"{scheme_file.parent / scheme_id}")
    return path


def load_scheme(path: str | Path) -> Scheme:
    """Read, validate and resolve one scheme file (value maps read from ``<dir>/<id>/``)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemeError(f"{file}: cannot read: {exc}") from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)   # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise SchemeError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SchemeError(f"{file}: <top>: a scheme is a mapping of keys, got {type(data).__name__}")
    for reserved in ("maps", "path"):
        if reserved in data:
            raise SchemeError(f"{file}: {reserved}: is filled by the loader; use value_maps")
    try:
        scheme = Scheme.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_loc(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise SchemeError(f"{file}: {problems}") from None
    _check_references(scheme, file)
    maps: dict[str, dict[str, str]] = {}
    for name, spec in scheme.value_maps.items():
        if spec.values is not None:
            maps[name] = {str(k).strip(): str(v).strip() for k, v in spec.values.items()}
        else:
            maps[name] = _read_value_map_csv(_value_map_path(file, scheme.id, str(spec.file), name), file,
                                             f"value_maps.{name}.file")
    return scheme.model_copy(update={"maps": maps, "path": str(file)})


def load_schemes_apart(directory: str | Path) -> tuple[list[Scheme], dict[str, SchemeError]]:
    """Every ``*.yaml`` / ``*.yml`` scheme in a directory that loads, and the error of each file that
    does not (by file path): one broken file never hides the others. A file reusing an id already
    taken by an earlier file (in name order) is an error of its own."""
    folder = Path(directory)
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    schemes: list[Scheme] = []
    errors: dict[str, SchemeError] = {}
    seen: dict[str, Path] = {}
    for file in files:
        try:
            scheme = load_scheme(file)
            if scheme.id in seen:
                raise SchemeError(f'{file}: id: "{scheme.id}" is already used by {seen[scheme.id]}')
        except SchemeError as exc:
            errors[str(file)] = exc
            continue
        seen[scheme.id] = file
        schemes.append(scheme)
    return schemes, errors


def load_schemes(directory: str | Path) -> list[Scheme]:
    """Every ``*.yaml`` / ``*.yml`` scheme in a directory, ids unique across files; the first broken
    file raises its ``SchemeError``."""
    schemes, errors = load_schemes_apart(directory)
    if errors:
        raise next(iter(errors.values()))
    return schemes
