"""Exchange messages and their lifecycle: what travels between gateways and how its status moves.

Statuses follow the AS4 / Domibus message lifecycle (outbound) and the ePhyto Hub tracking
statuses (delivery), so that an operator used to either reads ours without a glossary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Action(StrEnum):
    ISSUE = "issue"
    CANCEL = "cancel"
    REPLACE = "replace"
    ENDORSE = "endorse"


class Direction(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


class MessageStatus(StrEnum):
    # outbound
    SEND_ENQUEUED = "SEND_ENQUEUED"  # accepted and durable, waiting for the sender
    SENDING = "SENDING"  # a sender holds it now
    WAITING_FOR_RETRY = "WAITING_FOR_RETRY"  # last attempt failed for a reason a retry can fix
    ACKNOWLEDGED = "ACKNOWLEDGED"  # the partner returned a valid signed receipt
    SEND_FAILURE = "SEND_FAILURE"  # attempts exhausted: parked, an operator can retry it
    REJECTED = "REJECTED"  # the partner refused it with a non-retryable error
    # inbound
    RECEIVED = "RECEIVED"  # verified and stored, receipt returned
    DELIVERED = "DELIVERED"  # handed to the local MA system (inbox acknowledged or webhook 2xx)

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = {MessageStatus.ACKNOWLEDGED, MessageStatus.REJECTED, MessageStatus.DELIVERED}

# Which outbound status may follow which. Everything else is a programming error.
ALLOWED_TRANSITIONS: dict[MessageStatus | None, frozenset[MessageStatus]] = {
    None: frozenset({MessageStatus.SEND_ENQUEUED, MessageStatus.RECEIVED}),
    MessageStatus.SEND_ENQUEUED: frozenset({MessageStatus.SENDING}),
    MessageStatus.SENDING: frozenset(
        {
            MessageStatus.ACKNOWLEDGED,
            MessageStatus.WAITING_FOR_RETRY,
            MessageStatus.SEND_FAILURE,
            MessageStatus.REJECTED,
            MessageStatus.SEND_ENQUEUED,  # lease expired: a crashed sender's work goes back
        }
    ),
    MessageStatus.WAITING_FOR_RETRY: frozenset({MessageStatus.SENDING}),
    MessageStatus.SEND_FAILURE: frozenset({MessageStatus.SEND_ENQUEUED}),  # operator retry
    MessageStatus.REJECTED: frozenset({MessageStatus.SEND_ENQUEUED}),  # operator retry
    MessageStatus.ACKNOWLEDGED: frozenset(),
    MessageStatus.RECEIVED: frozenset({MessageStatus.DELIVERED}),
    MessageStatus.DELIVERED: frozenset(),
}


def can_move(current: MessageStatus | None, new: MessageStatus) -> bool:
    return new in ALLOWED_TRANSITIONS[current]


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """What a hop says about the document it carries. The document itself travels unchanged."""

    message_id: str
    conversation_id: str
    sender: str  # party id of the sending gateway's country (ISO 3166-1 alpha-2) or hub id
    receiver: str
    document_type: str  # "CITESEPermit"
    document_number: str
    document_issuer: str  # issuing country of the permit
    document_version: int
    action: Action
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    first_delay_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 300.0

    def delay_after(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1`` (attempt counts from 1)."""
        return min(self.max_delay_s, self.first_delay_s * self.factor ** max(0, attempt - 1))
