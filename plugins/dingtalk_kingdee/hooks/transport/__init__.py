"""Transport pieces both hooks share, one small module per concern.

* ``extras``: reading a connection's extra, legacy ``extra__<conn_type>__<field>`` keys included.
* ``redaction``: one process-wide secret masker for our messages, urllib3's request lines and
  Airflow's task logs.
* ``resolution``: what a response or a ``requests`` exception means (retry, fail, refresh the
  credentials, rate limited), decided apart from how long to wait.
* ``backoff``: how long to wait before the next try.
* ``retry``: the one retry loop that applies a resolution to a call, within per-kind budgets.
* ``session``: a plain ``requests.Session`` as the hooks want it.
"""

from dingtalk_kingdee.hooks.transport.backoff import ExponentialBackoff, backoff_delay
from dingtalk_kingdee.hooks.transport.extras import ConnectionExtras
from dingtalk_kingdee.hooks.transport.redaction import redact, register_secret
from dingtalk_kingdee.hooks.transport.resolution import (
    SUCCESS,
    ErrorResolution,
    ResponseAction,
    never_sent,
    resolve_request_exception,
)
from dingtalk_kingdee.hooks.transport.retry import RetryBudget, RetryErrors, call_with_retries
from dingtalk_kingdee.hooks.transport.session import new_session

__all__ = [
    "SUCCESS",
    "ConnectionExtras",
    "ErrorResolution",
    "ExponentialBackoff",
    "ResponseAction",
    "RetryBudget",
    "RetryErrors",
    "backoff_delay",
    "call_with_retries",
    "never_sent",
    "new_session",
    "redact",
    "register_secret",
    "resolve_request_exception",
]
