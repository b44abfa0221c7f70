"""The words staging stores for where a claim, a bill and its comment stand.

Each is a ``StrEnum``: its members are the strings in the tables (``dk_bills.state``, ...), so a
member compares equal to the stored text and goes to XCom and reports as plain text.
"""

from __future__ import annotations

from enum import StrEnum


class InstanceStatus(StrEnum):
    """A DingTalk approval instance's ``status`` (``dk_instances.status``)."""

    NEW = "NEW"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    TERMINATED = "TERMINATED"
    CANCELED = "CANCELED"


# After these a claim never changes again: it is transformed, and never fetched again.
FINAL_STATUSES = frozenset({InstanceStatus.COMPLETED, InstanceStatus.TERMINATED, InstanceStatus.CANCELED})
# Still moving through the approval flow.
OPEN_STATUSES = frozenset({InstanceStatus.NEW, InstanceStatus.RUNNING})
# Reads of a status DingTalk does not document (``completed``, empty, ``WEIRD``) before the claim is
# taken as final anyway: the transform then rejects it ``unknown_status`` instead of it being
# fetched again on every run for ever. A documented status in between starts the count again.
UNKNOWN_STATUS_READS = 3


class InstanceResult(StrEnum):
    """A finished instance's ``result`` (``dk_instances.result``): only ``agree`` is paid."""

    AGREE = "agree"
    REFUSE = "refuse"


class BillState(StrEnum):
    """Where a bill stands on its way into Kingdee (``dk_bills.state``).

    ::

        pending ──claim──▶ sending ──▶ loaded
           ▲                  │  └────▶ failed   (Kingdee refused the model; kept until the model
           │                  ▼                   changes or rejected claims are replayed)
           └──(not found)── unknown  (no answer: reconciled by querying Kingdee before any resend)
    """

    PENDING = "pending"
    SENDING = "sending"
    LOADED = "loaded"
    FAILED = "failed"
    UNKNOWN = "unknown"


# May be claimed for sending.
SENDABLE = frozenset({BillState.PENDING})
# May have reached Kingdee: never replaced by a new transform, never sent blindly again.
MAY_BE_IN_KINGDEE = frozenset({BillState.SENDING, BillState.UNKNOWN, BillState.LOADED})
# Never reached Kingdee: a new transform of the claim replaces them.
REPLACEABLE = frozenset({BillState.PENDING, BillState.FAILED})
# Sent, and no answer recorded: settled by looking the bill up in Kingdee.
AWAITING_ANSWER = frozenset({BillState.SENDING, BillState.UNKNOWN})


class CommentState(StrEnum):
    """Whether DingTalk was told which bill a claim became (``dk_writeback.comment_state``)."""

    OFF = "off"  # the scheme does not comment
    PENDING = "pending"
    SENDING = "sending"  # claimed by one write_back (a conditional UPDATE), being posted
    DONE = "done"
    FAILED = "failed"  # DingTalk refused it
    UNKNOWN = "unknown"  # no answer, or its write_back died while sending: it may have been posted, so it
    # is not posted again (DingTalk has no comment lookup: at most once)


class DocumentStatus(StrEnum):
    """A Kingdee bill's ``FDOCUMENTSTATUS`` (``dk_bills.doc_status``)."""

    TEMPORARY = "Z"  # 暂存
    CREATED = "A"  # 创建
    SUBMITTED = "B"  # 审核中
    AUDITED = "C"  # 已审核
    REAUDIT = "D"  # 重新审核


# The statuses Submit accepts.
SUBMITTABLE = frozenset({DocumentStatus.CREATED, DocumentStatus.TEMPORARY, DocumentStatus.REAUDIT})
