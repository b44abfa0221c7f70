"""Reading an Airflow connection's extra the way every connection form has ever written it.

Airflow 3 stores a form field under its own name (``{"qps": 20}``); forms of Airflow < 2.3 wrote
``extra__<conn_type>__<field>`` and connections created then still carry those keys. Both are
read, the plain name first; an empty value (``""`` or ``None``, which old forms wrote for every
untouched field) counts as absent.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

_EMPTY = (None, "")


class ConnectionExtras:
    """The extra of one connection, read field by field."""

    def __init__(self, conn_type: str, extra: Mapping[str, Any] | None, conn_id: str | None = None) -> None:
        self.conn_type = conn_type
        self.conn_id = conn_id
        self._extra = dict(extra or {})

    def legacy_key(self, field: str) -> str:
        return f"extra__{self.conn_type}__{field}"

    def get(self, field: str, default: Any = None) -> Any:
        """The value of ``field`` (plain key first, then the legacy key), or ``default`` when absent."""
        value = self._extra.get(field)
        legacy = self._extra.get(self.legacy_key(field))
        if value not in _EMPTY:
            if legacy not in _EMPTY and legacy != value:
                warnings.warn(
                    f"connection {self.conn_id!r} has both {field!r} and {self.legacy_key(field)!r} in its "
                    f"extra with different values; using {field!r}. Remove the legacy key.",
                    UserWarning, stacklevel=2)
            return value
        if legacy not in _EMPTY:
            return legacy
        return default

    def text(self, field: str, default: str = "") -> str:
        """The value as stripped text; ``default`` when absent or blank."""
        value = self.get(field)
        text = "" if value is None else str(value).strip()
        return text or default

    def number(self, field: str, default: float) -> float:
        value = self.get(field)
        return default if value is None else float(value)

    def integer(self, field: str, default: int) -> int:
        value = self.get(field)
        return default if value is None else int(value)
