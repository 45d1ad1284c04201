"""The durable store's port: permits, exchange messages, their event history and the delivery queue.

The embedded queue is not a separate table: an outbound message row *is* its queue entry. A
message waiting to be sent carries the time it becomes due, a sender that holds it carries a
lease, and claiming moves it to SENDING in the same transaction that records the event. So an
accepted permit, its messages and their queue entries are durable together or not at all.

Two implementations share one schema (``schema.py``): SQLite for the embedded default and
PostgreSQL for several gateway processes behind one database.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from domain.errors import EpixError, ErrorCode
from domain.messages import (
    ALLOWED_TRANSITIONS,
    Action,
    Direction,
    EnvelopeHeader,
    MessageStatus,
)

from .ledger import CustomsLedger
from .retention import Retention

PERMIT_STATUSES = frozenset({"VALID", "CANCELLED", "REPLACED"})
MAX_PAGE = 1000  # a list request larger than this is a mistake, not a need
LEASE_EXPIRED_DETAIL = "the previous sender's lease ran out before it reported an outcome; sending again"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Every timestamp is stored in UTC. A naive value is taken to be UTC already, never local time."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class PermitRecord:
    issuer: str
    number: str
    version: int
    direction: Direction
    status: str  # "VALID" | "CANCELLED" | "REPLACED"
    permit_json: bytes  # canonical JSON (opaque to the store)
    signed_xml: bytes  # the issuer-signed CITESEPermit (opaque)
    digest: str  # sha256 hex of signed_xml
    sender: str | None  # inbound: party that delivered it
    replaces: str | None
    replaced_by: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MessageRecord:
    message_id: str
    conversation_id: str
    direction: Direction
    sender: str
    receiver: str
    document_type: str
    action: Action
    issuer: str
    number: str
    version: int
    status: MessageStatus
    attempts: int
    next_attempt_at: datetime | None
    lease_until: datetime | None
    last_error_code: str | None
    last_error_detail: str | None
    via: str | None  # hub party id when routed through a hub
    receipt: bytes | None  # signed receipt (outbound: the one we got; inbound: the one we gave)
    payload_digest: str | None
    created_at: datetime
    updated_at: datetime
    payload: bytes | None = None  # the exact document delivered: a signed permit or cancellation


@dataclass(frozen=True, slots=True)
class Unpublished:
    """A queued outbound message that a broker has not confirmed since it was last queued."""

    message_id: str
    receiver: str
    via: str | None
    seq: int  # pass back to mark_published: a later re-queue has a higher seq and is published again


@dataclass(frozen=True, slots=True)
class MessageAlias:
    """A message id a sender gave content already held under another of its messages: the
    content takes effect once (``original_id``), and this id keeps the receipt it was answered
    with, for the same id again and for tracking."""

    message_id: str
    sender: str
    original_id: str
    payload_digest: str
    receipt: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryReportRecord:
    """What a hub last said about a message relayed through it (ePhyto Hub tracking status)."""

    message_id: str
    status: str  # PendingDelivery | Delivered | DeliveredWithWarnings | DeliveredNotReadable | FailedDelivery
    reporter: str  # the hub's party id
    detail: str | None
    report: bytes | None  # the hub's signed DeliveryReport, as received
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """The first ``count`` messages of an accepted batch are taken by this process's sender in
    the very transaction that stores them (SEND_ENQUEUED, then SENDING with a lease, both in the
    history), instead of by a later ``claim_due``: one write less per message, and no wait for
    the claim. A sender that dies with them leaves a lease that runs out, as after any claim."""

    count: int
    actor: str
    lease_until: datetime


def claimed_at_once(stored: Sequence[MessageRecord], claim: Claim | None) -> list[MessageRecord]:
    """``stored`` (as ``as_stored`` made them) with the claimed ones moved to SENDING."""
    if claim is None or claim.count < 1:
        return list(stored)
    lease = as_utc(claim.lease_until)
    return [
        replace(m, status=MessageStatus.SENDING, next_attempt_at=None, lease_until=lease) if i < claim.count else m
        for i, m in enumerate(stored)
    ]


def pushed(message: MessageRecord, claim: Claim | None) -> Claim | None:
    """``claim`` for a message a sender will push; none for one held for a party to pull."""
    return claim if message.next_attempt_at is not None else None


def as_stored(message: MessageRecord, *, due: datetime | None) -> MessageRecord:
    """A message as it is first written: times in UTC, no lease, and ``due`` as the time a sender
    may take it (None: never — received messages, and those held for a party to pull)."""
    return replace(
        message,
        next_attempt_at=None if due is None else as_utc(due),
        lease_until=None,
        created_at=as_utc(message.created_at),
        updated_at=as_utc(message.updated_at),
    )


def header_of(message: MessageRecord) -> EnvelopeHeader:
    """The envelope header a stored message travels under (the same on every attempt and hop)."""
    return EnvelopeHeader(
        message_id=message.message_id,
        conversation_id=message.conversation_id,
        sender=message.sender,
        receiver=message.receiver,
        document_type=message.document_type,
        document_number=message.number,
        document_issuer=message.issuer,
        document_version=message.version,
        action=message.action,
        created_at=message.created_at,
    )


def message_from_header(
    h: EnvelopeHeader,
    *,
    direction: Direction,
    status: MessageStatus,
    payload: bytes,
    payload_digest: str,
    now: datetime,
    next_attempt_at: datetime | None = None,
    receipt: bytes | None = None,
) -> MessageRecord:
    """A message as a receiver (or a relaying hub) stores it, from the envelope it arrived in."""
    return MessageRecord(
        message_id=h.message_id,
        conversation_id=h.conversation_id,
        direction=direction,
        sender=h.sender,
        receiver=h.receiver,
        document_type=h.document_type,
        action=h.action,
        issuer=h.document_issuer,
        number=h.document_number,
        version=h.document_version,
        status=status,
        attempts=0,
        next_attempt_at=next_attempt_at,
        lease_until=None,
        last_error_code=None,
        last_error_detail=None,
        via=None,
        receipt=receipt,
        payload_digest=payload_digest,
        payload=payload,
        created_at=now,
        updated_at=now,
    )


@dataclass(frozen=True, slots=True)
class MessageEvent:
    message_id: str
    seq: int
    at: datetime
    status: MessageStatus
    actor: str
    detail: str | None
    error_code: str | None


@dataclass(frozen=True, slots=True)
class MessageFilter:
    status: MessageStatus | None = None
    direction: Direction | None = None
    sender: str | None = None
    receiver: str | None = None
    issuer: str | None = None
    number: str | None = None
    limit: int = 100
    # Keyset pagination on (created_at, message_id) descending: pass the last row's created_at as
    # ``before`` and, so that messages created in the same microsecond are not skipped, its
    # message_id as ``before_id``.
    before: datetime | None = None
    before_id: str | None = None


def sources_of(new: MessageStatus) -> frozenset[MessageStatus]:
    """The statuses from which ``new`` may be reached (the inverse of ALLOWED_TRANSITIONS)."""
    return _SOURCES[new]


_SOURCES: dict[MessageStatus, frozenset[MessageStatus]] = {
    target: frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if s is not None and target in targets)
    for target in MessageStatus
}


def refused_transition(message_id: str, current: MessageStatus, new: MessageStatus) -> EpixError:
    return EpixError(
        ErrorCode.CONFLICT,
        f"Message {message_id} is {current.value}; it cannot move to {new.value}.",
        message_id=message_id,
        status=current.value,
        requested=new.value,
    )


def not_found(message_id: str) -> EpixError:
    return EpixError(ErrorCode.NOT_FOUND, f"No message {message_id} is held by this gateway.", message_id=message_id)


def version_conflict(issuer: str, number: str, version: int) -> EpixError:
    return EpixError(
        ErrorCode.VERSION_CONFLICT,
        f"Permit {issuer}/{number} version {version} is already held with different content; "
        "issue a new version instead of changing this one.",
        issuer=issuer,
        number=number,
        version=version,
    )


def not_cancellable(issuer: str, number: str) -> EpixError:
    return EpixError(
        ErrorCode.CONFLICT,
        f"Permit {issuer}/{number} is not a valid outbound permit any more (already cancelled or replaced).",
        issuer=issuer,
        number=number,
    )


def idempotency_conflict(key: str) -> EpixError:
    return EpixError(
        ErrorCode.IDEMPOTENCY_CONFLICT,
        f"The idempotency key {key!r} was already used for a different request.",
        idempotency_key=key,
    )


def check_outbound(permit: PermitRecord, messages: Sequence[MessageRecord]) -> None:
    """An outbound batch must be about the permit it comes with; anything else is a caller bug."""
    if permit.direction is not Direction.OUTBOUND:
        raise EpixError(ErrorCode.CONFLICT, "accept_outbound was given an inbound permit.", number=permit.number)
    if permit.status not in PERMIT_STATUSES:
        raise unknown_permit_status(permit.status)
    for m in messages:
        if m.direction is not Direction.OUTBOUND or m.status is not MessageStatus.SEND_ENQUEUED:
            raise EpixError(
                ErrorCode.CONFLICT,
                f"Message {m.message_id} must be an outbound message in SEND_ENQUEUED to be accepted.",
                message_id=m.message_id,
            )
        if (m.issuer, m.number, m.version) != (permit.issuer, permit.number, permit.version):
            raise EpixError(
                ErrorCode.CONFLICT,
                f"Message {m.message_id} is about permit {m.issuer}/{m.number} v{m.version}, "
                f"not the permit {permit.issuer}/{permit.number} v{permit.version} it was accepted with.",
                message_id=m.message_id,
            )


def check_inbound(permit: PermitRecord | None, message: MessageRecord) -> None:
    if message.direction is not Direction.INBOUND or message.status is not MessageStatus.RECEIVED:
        raise EpixError(
            ErrorCode.CONFLICT,
            f"Message {message.message_id} must be an inbound message in RECEIVED to be stored as received.",
            message_id=message.message_id,
        )
    if permit is not None:
        if permit.direction is not Direction.INBOUND:
            raise EpixError(ErrorCode.CONFLICT, "store_inbound was given an outbound permit.", number=permit.number)
        if permit.status not in PERMIT_STATUSES:
            raise unknown_permit_status(permit.status)


def unknown_permit_status(status: str) -> EpixError:
    return EpixError(
        ErrorCode.CONFLICT,
        f"{status!r} is not a permit status; use one of {', '.join(sorted(PERMIT_STATUSES))}.",
        status=status,
    )


async def ack_inbox_via(store: Store, message_id: str, *, actor: str) -> MessageRecord:
    """RECEIVED -> DELIVERED; a second acknowledgement finds it DELIVERED and changes nothing."""
    try:
        return await store.transition(message_id, MessageStatus.DELIVERED, actor=actor)
    except EpixError as e:
        if e.code is not ErrorCode.CONFLICT:
            raise
        held = await store.get_message(message_id)
        if held is not None and held.direction is Direction.INBOUND and held.status is MessageStatus.DELIVERED:
            return held
        raise


def check_relay(message: MessageRecord) -> None:
    if message.direction is not Direction.OUTBOUND or message.status is not MessageStatus.SEND_ENQUEUED:
        raise EpixError(
            ErrorCode.CONFLICT,
            f"Message {message.message_id} must be an outbound message in SEND_ENQUEUED to be relayed.",
            message_id=message.message_id,
        )


def check_page(f: MessageFilter) -> None:
    if not 1 <= f.limit <= MAX_PAGE:
        raise EpixError(ErrorCode.CONFLICT, f"A page holds 1 to {MAX_PAGE} messages, not {f.limit}.", limit=f.limit)
    if f.before_id is not None and f.before is None:
        raise EpixError(ErrorCode.CONFLICT, "before_id only makes sense together with before.")


class Store(CustomsLedger, Retention, ABC):
    """Durable state of one gateway (or of several gateway processes sharing one PostgreSQL).

    The customs ledger (write-offs, balances, verification audit, pre-arrival feed) is declared
    in ``ledger.py``, the retention job's purge in ``retention.py``."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date (idempotent, versioned)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def accept_outbound(
        self,
        permit: PermitRecord,
        messages: Sequence[MessageRecord],
        *,
        actor: str,
        idempotency_key: str | None = None,
        principal: str | None = None,
        request_hash: str | None = None,
        claim: Claim | None = None,
    ) -> list[MessageRecord]:
        """Store a permit version, its outbound messages (queued, due now) and their first events
        in one transaction. The same (issuer, number, version) with the same digest returns what
        is already held; a different digest raises VERSION_CONFLICT. An idempotency key already
        used with another request hash raises IDEMPOTENCY_CONFLICT. ``claim``: messages the
        sender takes at once (see ``Claim``); what was already held is returned unclaimed."""

    @abstractmethod
    async def accept_cancellation(
        self, issuer: str, number: str, messages: Sequence[MessageRecord], *, actor: str
    ) -> list[MessageRecord]:
        """Mark the outbound permit CANCELLED and enqueue the cancellation messages, in one
        transaction; CONFLICT when it is not VALID (cancelled or replaced meanwhile)."""

    @abstractmethod
    async def idempotency_lookup(self, principal: str, key: str) -> tuple[str, list[str]] | None:
        """(request_hash, message_ids) recorded for this principal's key, if any."""

    @abstractmethod
    async def get_permit_versions(self, issuer: str, number: str) -> list[PermitRecord]:
        """Every version held, ordered by version (then direction, outbound first)."""

    @abstractmethod
    async def set_permit_status(
        self, issuer: str, number: str, status: str, *, replaced_by: str | None = None
    ) -> None:
        """Set the status of the latest version held of this permit (NOT_FOUND if none)."""

    @abstractmethod
    async def get_message(self, message_id: str) -> MessageRecord | None: ...

    @abstractmethod
    async def record_alias(self, alias: MessageAlias) -> MessageAlias:
        """Keep ``alias`` unless its id is held already; either way, the one held."""

    @abstractmethod
    async def get_alias(self, message_id: str) -> MessageAlias | None: ...

    async def find_received(self, message_id: str) -> tuple[MessageRecord | None, MessageAlias | None]:
        """What a partner's message id already stands for here: the message held under it, else
        the alias it was recorded as (its content held under another id), else neither. A store
        with round trips to save answers both in one."""
        message = await self.get_message(message_id)
        if message is not None:
            return message, None
        return None, await self.get_alias(message_id)

    @abstractmethod
    async def list_messages(self, f: MessageFilter) -> list[MessageRecord]:
        """Newest first, keyset-paginated (see MessageFilter.before / before_id)."""

    @abstractmethod
    async def message_events(self, message_id: str) -> list[MessageEvent]:
        """The append-only history of one message, oldest first."""

    @abstractmethod
    async def messages_for_permit(self, issuer: str, number: str) -> list[MessageRecord]:
        """Every message about any version of this permit, oldest first."""

    @abstractmethod
    async def transition(
        self,
        message_id: str,
        new: MessageStatus,
        *,
        actor: str,
        detail: str | None = None,
        error_code: str | None = None,
        receipt: bytes | None = None,
        next_attempt_at: datetime | None = None,
        increment_attempts: bool = False,
    ) -> MessageRecord:
        """Move a message to ``new`` and append the event, atomically. A move that
        domain.messages forbids raises CONFLICT; an unknown message raises NOT_FOUND."""

    @abstractmethod
    async def claim_due(
        self, *, limit: int, lease_s: float, now: datetime, actor: str, receiver: str | None = None
    ) -> list[MessageRecord]:
        """Claim up to ``limit`` due outbound messages for sending (see the module docstring)."""

    @abstractmethod
    async def next_due_at(self) -> datetime | None:
        """The earliest time an outbound message becomes due or a lease runs out."""

    @abstractmethod
    async def unpublished(self, *, limit: int) -> list[Unpublished]:
        """For a message broker's outbox relay: SEND_ENQUEUED messages, oldest first, not
        published since they were last queued (accepted, released, or retried by an operator)."""

    @abstractmethod
    async def mark_published(self, message_id: str, seq: int) -> None:
        """The broker confirmed the message as it was at ``seq``; the relay leaves it alone until
        it is queued again."""

    @abstractmethod
    async def store_inbound(
        self, permit: PermitRecord | None, message: MessageRecord, *, actor: str
    ) -> tuple[bool, MessageRecord]:
        """(True, stored) for a new message; (False, the one already held) for a duplicate, by
        message id or by the same permit version and digest under another message id."""

    @abstractmethod
    async def inbox(
        self, receiver: str, *, limit: int = 100, after: tuple[datetime, str] | None = None
    ) -> list[MessageRecord]:
        """Inbound messages RECEIVED for ``receiver`` and not yet acknowledged, oldest first; with
        ``after`` (the created_at and message_id of the last one of a page), those after it."""

    @abstractmethod
    async def ack_inbox(self, message_id: str, *, actor: str) -> MessageRecord:
        """Mark an inbox message DELIVERED; acknowledging it again returns it unchanged."""

    # --- hub: relaying, pull, delivery reports -------------------------------------------------

    @abstractmethod
    async def accept_relay(
        self, message: MessageRecord, *, actor: str, detail: str, claim: Claim | None = None
    ) -> tuple[bool, MessageRecord]:
        """A hub stores an envelope it relays: one outbound message under the sender's own message
        id, with its first event. ``next_attempt_at=None`` holds it for pull (never due). (False,
        the one held) when that message id is already held. ``claim``: the hub's sender takes it
        at once (see ``Claim``; never one held for pull)."""

    @abstractmethod
    async def held_for_pull(self, receiver: str, *, limit: int = 100) -> list[MessageRecord]:
        """Outbound messages held for ``receiver`` to pull and not yet acknowledged, oldest first."""

    @abstractmethod
    async def record_event(
        self, message_id: str, *, actor: str, detail: str, error_code: str | None = None
    ) -> None:
        """Append an event that changes no status (a fetch by a puller, a hub's report)."""

    @abstractmethod
    async def save_delivery_report(self, report: DeliveryReportRecord, *, actor: str) -> bool:
        """Keep the hub's latest report on one of our messages; a changed status is also recorded
        as an event in the message's history. True when the status changed."""

    @abstractmethod
    async def delivery_report(self, message_id: str) -> DeliveryReportRecord | None: ...

    @abstractmethod
    async def awaiting_delivery_report(self, *, limit: int = 100) -> list[MessageRecord]:
        """Our messages a hub acknowledged and has not yet reported final delivery of, oldest first."""

    @abstractmethod
    async def counts_by_status(self) -> dict[str, int]: ...

    def unavailable(self, error: BaseException) -> bool:
        """Whether ``error`` (raised by a store call, unexpected there) says the database could not
        be reached or dropped the connection, rather than a fault of this program: the request is
        then answered ``503 STORE_UNAVAILABLE`` (try again), not ``500``."""
        return False

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the database cannot answer a query."""
