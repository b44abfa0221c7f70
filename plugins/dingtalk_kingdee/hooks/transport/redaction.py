"""One secret masker for the process: our own messages, urllib3's request lines, Airflow's task logs.

DingTalk's access token travels in the query string, so every URL may carry a secret; Kingdee's
password, app secret and session id appear in no URL but must never reach a log line either.
Every secret a hook learns is registered here once (and with Airflow's masker, which covers the
task log); ``redact`` masks registered values and secret-named query parameters in any text.
"""

from __future__ import annotations

import logging
import re
import threading

# Query parameters whose value is a secret, whatever the service.
SECRET_QUERY_PARAMETERS = ("access_token", "appsecret", "password", "secret", "client_secret")
_QUERY_SECRET_RE = re.compile(
    r"(?i)\b(" + "|".join(SECRET_QUERY_PARAMETERS) + r")=[^&\s'\"]+")
MASK = "***"

_known_secrets: set[str] = set()
_known_secrets_lock = threading.Lock()
_log = logging.getLogger(__name__)


def redact(text: str) -> str:
    """``text`` with every secret query parameter and every registered secret value masked."""
    text = _QUERY_SECRET_RE.sub(rf"\1={MASK}", text)
    with _known_secrets_lock:
        secrets = sorted(_known_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def register_secret(value: str | None) -> None:
    """Mask ``value`` from now on in ``redact`` and in Airflow's task logs (its secrets masker)."""
    if not value:
        return
    with _known_secrets_lock:
        _known_secrets.add(value)
    try:
        _mask_in_airflow(value)
    except Exception:  # masking must never break a call; our own redaction still applies
        _log.debug("Airflow's secrets masker is unavailable", exc_info=False)


def _mask_in_airflow(value: str) -> None:
    """Register ``value`` with the secrets masker of the process that masks the task log.

    ``airflow.sdk.log.mask_secret`` adds it here and sends it to the supervisor as a ``MaskSecret``
    message. Airflow's in-process supervisor (``dag.test()``, ``airflow dags test``) logs every
    message it is sent at DEBUG, the secret included: there the task logs from this process, so the
    masker here is the one to tell, and nothing is sent. Under the real supervisor (a task in a
    process of its own, whose log lines the supervisor masks) the message is sent; that supervisor
    logs a ``MaskSecret`` without its body.
    """
    from airflow.sdk._shared.secrets_masker import mask_secret as mask_in_this_process
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.comms import CommsDecoder, MaskSecret

    mask_in_this_process(value)
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    if isinstance(comms, CommsDecoder):
        comms.send(MaskSecret(value=value))


class RedactingFilter(logging.Filter):
    """Masks secrets in the records of a third-party logger (urllib3 logs each request line at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def install_log_filter(logger_names: tuple[str, ...] = ("urllib3.connectionpool", "requests")) -> RedactingFilter:
    """Put the one ``RedactingFilter`` on each named logger (idempotent); return it."""
    installed = None
    for name in logger_names:
        logger = logging.getLogger(name)
        existing = next((f for f in logger.filters if isinstance(f, RedactingFilter)), None)
        if existing is None:
            existing = installed or RedactingFilter()
            logger.addFilter(existing)
        installed = installed or existing
    assert installed is not None
    return installed


url_log_filter = install_log_filter()
