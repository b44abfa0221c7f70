"""Where a secret a hook learns is registered: never in a message Airflow's in-process supervisor logs."""

from __future__ import annotations

from airflow.sdk._shared.secrets_masker import redact as airflow_redact
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import CommsDecoder, MaskSecret

from dingtalk_kingdee.hooks.transport import redaction


class _SocketComms(CommsDecoder):
    """Stands for the task process's real channel to its supervisor (a socket)."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, msg):
        self.sent.append(msg)


class _InProcessComms:
    """Stands for Airflow's in-process supervisor channel, which logs each message at DEBUG."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, msg):
        self.sent.append(msg)


def test_in_process_the_secret_is_masked_here_and_never_sent(monkeypatch) -> None:
    comms = _InProcessComms()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    redaction.register_secret("in-process-session-0123456789")
    assert comms.sent == []
    assert "in-process-session-0123456789" not in str(airflow_redact("sid in-process-session-0123456789"))
    assert redaction.redact("sid in-process-session-0123456789") == "sid ***"


def test_under_the_real_supervisor_the_secret_is_sent_to_it(monkeypatch) -> None:
    comms = _SocketComms()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    redaction.register_secret("subprocess-token-0123456789")
    assert comms.sent == [MaskSecret(value="subprocess-token-0123456789")]
