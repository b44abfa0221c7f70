"""What the steps need from the two APIs: the few hook methods they call, as ``Protocol``s.

``DingTalkHook`` and ``KingdeeHook`` satisfy them; so does anything else with these methods (a test
double wrapping a hook, a benchmark's client). Nothing here imports the hooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class DingTalkClient(Protocol):
    """The DingTalk approval API, as extract and write_back use it."""

    def list_instance_ids(self, process_code: str, start: datetime, end: datetime) -> Iterable[str]:
        """Ids of the template's instances started in [start, end), page after page."""
        ...

    def get_instances(self, ids: Iterable[str]) -> Iterable[tuple[str, dict]]:
        """(id, detail answer) for every id, fetched concurrently while ``ids`` is still being read."""
        ...

    def get_instance(self, instance_id: str) -> dict:
        """One instance's detail answer; raises ``DingTalkError`` when DingTalk refuses to show it."""
        ...

    def add_comment(self, instance_id: str, user_id: str, text: str) -> None:
        """Comment on the instance; ``DingTalkError`` if refused, ``DingTalkUnavailable`` if unanswered."""
        ...

    def call_counts(self) -> dict[str, int]:
        """HTTP calls made so far, per API (for the DingTalk call ledger)."""
        ...


class ModelError(Protocol):
    """One reason Kingdee gave for refusing a model."""

    @property
    def field(self) -> str | None: ...

    @property
    def message(self) -> str: ...


class SaveOutcome(Protocol):
    """The outcome of one model of a BatchSave, in model order."""

    @property
    def success(self) -> bool: ...

    @property
    def kingdee_id(self) -> int | str | None: ...

    @property
    def number(self) -> str | None: ...

    @property
    def errors(self) -> Sequence[ModelError]: ...

    @property
    def unknown(self) -> bool:
        """Neither saved nor refused by the answer: it may be in Kingdee, so it is looked up."""
        ...


class OperationResult(Protocol):
    """The outcome of Submit or Audit on a list of bill numbers."""

    @property
    def numbers_ok(self) -> Sequence[str]: ...


@runtime_checkable
class KingdeeClient(Protocol):
    """The Kingdee WebAPI, as load uses it. Whole-call refusals raise ``KingdeeError``; a write
    whose answer was lost raises ``KingdeeOutcomeUnknown``."""

    def batch_save(self, form_id: str, models: list[dict], options: dict | None = None) -> Sequence[SaveOutcome]:
        ...

    def submit(self, form_id: str, numbers: list[str]) -> OperationResult:
        ...

    def audit(self, form_id: str, numbers: list[str]) -> OperationResult:
        ...

    def bill_query(self, form_id: str, field_keys: list[str], filters: dict[str, object] | None = None,
                   ) -> list[dict]:
        """ExecuteBillQuery over every page, rows as ``{field_key: value}``."""
        ...
