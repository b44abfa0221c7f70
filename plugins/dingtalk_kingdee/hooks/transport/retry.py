"""The one retry loop: tries a call, applies each attempt's ``ErrorResolution``, within budgets.

Rules, in order, for an attempt that did not succeed:

1. ``REFRESH_AUTH_THEN_RETRY``: refresh the credentials and try again, once per call; refused a
   second time (or when the call cannot refresh, e.g. the login itself), the call fails.
2. ``FAIL``: the call fails.
3. A call that is not idempotent and may have been processed is never sent again: its outcome is
   unknown, and the caller must find out before acting.
4. Otherwise the failure draws on its budget (``ErrorResolution.budget``); an exhausted budget
   fails the call, else the loop waits (the service's wait, a fixed wait, or the budget's backoff)
   and tries again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from dingtalk_kingdee.hooks.transport.backoff import ExponentialBackoff
from dingtalk_kingdee.hooks.transport.resolution import ErrorResolution, ResponseAction


@dataclass(frozen=True)
class RetryBudget:
    """How often a kind of failure may be retried, and the wait before each retry.

    The wait is the one the service asked for (``ErrorResolution.wait``) if any, else ``backoff``'s
    delay, else ``wait``. Budgets with the same ``name`` share one count within a call.
    """

    name: str
    retries: int
    backoff: ExponentialBackoff | None = None
    wait: float = 0.0

    def delay(self, retry: int, resolution: ErrorResolution) -> float:
        if resolution.wait is not None:
            return resolution.wait
        if self.backoff is not None:
            return self.backoff.delay(retry)
        return self.wait


class RetryErrors(Protocol):
    """The exceptions a hook raises when the loop gives up."""

    def failed(self, resolution: ErrorResolution) -> Exception: ...

    def outcome_unknown(self, resolution: ErrorResolution) -> Exception: ...

    def exhausted(self, resolution: ErrorResolution, failures: int) -> Exception: ...


def call_with_retries(
    attempt: Callable[[], tuple[Any, ErrorResolution]],
    *,
    budgets: Mapping[str, RetryBudget],
    idempotent: bool,
    errors: RetryErrors,
    wait: Callable[[float, ErrorResolution], None],
    refresh_auth: Callable[[ErrorResolution], None] | None = None,
    log: logging.Logger | None = None,
    label: str = "call",
) -> Any:
    """Run ``attempt`` until it succeeds or a rule above gives up; return its payload."""
    failures: Counter[str] = Counter()
    refreshed = False
    while True:
        payload, resolution = attempt()
        action = resolution.action
        if action is ResponseAction.SUCCESS:
            return payload
        if action is ResponseAction.REFRESH_AUTH_THEN_RETRY:
            if refreshed or refresh_auth is None:
                raise errors.failed(resolution)
            refresh_auth(resolution)
            refreshed = True
            continue
        if action is ResponseAction.FAIL:
            raise errors.failed(resolution)
        if not idempotent and resolution.may_have_been_processed:
            raise errors.outcome_unknown(resolution)
        budget = budgets[resolution.budget]
        failures[budget.name] += 1
        count = failures[budget.name]
        if count > budget.retries:
            raise errors.exhausted(resolution, count)
        delay = budget.delay(count, resolution)
        if log is not None:
            log.warning("%s: %s; retry %d/%d in %.2f s", label, resolution.message, count, budget.retries, delay)
        wait(delay, resolution)
