"""The keys an expense-item map must hold: the approval-form options seen on the claims already
stored, rendered the way the scheme's field mapping builds the key (``{form.报销类别}/{form.行政报销
类型|form.项目报销类型}`` → ``行政报销/差旅费``); pure.

Only mappings whose key comes from the claim's own fields (``form.*``, ``instance.*``) are rendered;
a key built from table rows (``row.*``, ``nested.*``) is left to the rejects of the sync run. A
claim on which a placeholder is empty gives no key (it is rejected for a missing field, not for a
missing line).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from dingtalk_kingdee.scheme import FieldMapping, Scheme, SourcePath, TemplatePart, parse_template
from dingtalk_kingdee.transform.values import clean_text

_CLAIM_NAMESPACES = {"form", "instance"}
_WHITESPACE = re.compile(r"\s+")


def _key_parts(mapping: FieldMapping) -> list[str | TemplatePart] | None:
    if mapping.template is not None:
        parts = parse_template(mapping.template)
    elif mapping.source is not None:
        parts = parse_template("{" + mapping.source + "}")
    else:
        return None
    for part in parts:
        if isinstance(part, TemplatePart) and (part.as_date or any(
                p.namespace not in _CLAIM_NAMESPACES or p.ext for p in part.alternatives)):
            return None
    return parts


def _value(instance: dict, path: SourcePath) -> str | None:
    if path.namespace == "instance":
        return clean_text(instance.get(path.label))
    for component in instance.get("form_component_values") or []:
        if isinstance(component, dict) and (component.get("name") or component.get("id")) == path.label:
            return clean_text(component.get("value"))
    return None


def option_keys(scheme: Scheme, map_name: str, instances: Iterable[dict]) -> list[str]:
    """Distinct keys of ``map_name`` the stored claims carry, in first-seen order."""
    mappings = [m for m in (*scheme.mapping.header.values(), *scheme.mapping.entry.values()) if m.map == map_name]
    templates = [parts for parts in map(_key_parts, mappings) if parts is not None]
    keys: dict[str, None] = {}
    for instance in instances:
        for parts in templates:
            texts: list[str] = []
            for part in parts:
                if isinstance(part, str):
                    texts.append(part)
                    continue
                found = next((v for v in (_value(instance, p) for p in part.alternatives) if v), None)
                if found is None:
                    break
                texts.append(found)
            else:
                key = clean_text(_WHITESPACE.sub(" ", "".join(texts)))
                if key:
                    keys.setdefault(key)
    return list(keys)
