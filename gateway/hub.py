"""The regional hub role, pull mode, and delivery status back to the sender (docs/PROTOCOL.md §5-§7).

The same program is a hub when its config says ``role = "hub"``. A hub:

* accepts an envelope ``To`` one of its members from another member (``Relay``): it checks the
  hop signature of ``From`` (done by ``InboundService``), the agreements of both members and the
  issuer's signature on the payload, stores the envelope under the sender's own message id and
  answers with its signed receipt, status ``PendingDelivery``. It never touches the payload.
* forwards it: the ordinary delivery worker pushes it to members that accept connections (the
  envelope then says ``RelayedBy`` = the hub and carries the hub's hop signature), or it is held
  (never due) for members whose agreement says ``delivery = "pull"``;
* answers signed requests of its members (``HubDesk``): list and fetch what is held for the
  requester, take its signed receipt (or error signal) as the acknowledgement, and tell an
  original sender where its message is, in the ePhyto Hub tracking vocabulary.

On a national gateway, ``PullClient`` collects from hubs whose agreement says ``delivery =
"pull"`` and ``TrackingPoller`` asks hubs about messages they acknowledged until a final status;
each report is recorded in the message's history, so ``GET /v1/messages/{id}`` shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import aiohttp
from lxml import etree

from adapters.exchange_xml import (
    DeliveryReport,
    Envelope,
    ErrorSignal,
    HubRequest,
    PullList,
    Receipt,
    Waiting,
    build_delivery_report,
    build_envelope,
    build_error,
    build_hub_request,
    build_pull_list,
    build_receipt,
    is_party_id,
    read_delivery_report,
    read_error,
    read_hub_request,
    read_pull_list,
    read_receipt,
    root_name,
)
from adapters.ns import EXCHANGE
from adapters.xmlparse import XmlLimits, parse_xml
from domain.errors import EpixError, ErrorCode
from domain.messages import Action, Direction, MessageStatus
from gateway.config import GatewayConfig
from gateway.logs import get_logger
from gateway.security import Security
from gateway.store.base import (
    DeliveryReportRecord,
    MessageRecord,
    Store,
    header_of,
    message_from_header,
)

if TYPE_CHECKING:
    from gateway.delivery import DeliveryWorker
    from gateway.inbound import InboundService

log = get_logger("epix.hub")
_FROM = etree.XPath("/*/ex:From/text()", namespaces={"ex": EXCHANGE})
PULL_PATH = "/exchange/v1/hub/pull"
ACK_PATH = "/exchange/v1/hub/ack"
TRACK_PATH = "/exchange/v1/hub/track"
# A held message its member has answered for good: a later answer to it is a repeat.
_SETTLED = frozenset({MessageStatus.ACKNOWLEDGED, MessageStatus.REJECTED})

# ePhyto Hub tracking statuses.
PENDING = "PendingDelivery"
DELIVERED = "Delivered"
DELIVERED_WITH_WARNINGS = "DeliveredWithWarnings"  # reserved: receipts carry no warnings yet
NOT_READABLE = "DeliveredNotReadable"
FAILED = "FailedDelivery"
FINAL = frozenset({DELIVERED, DELIVERED_WITH_WARNINGS, NOT_READABLE, FAILED})
# Refusals that mean the message never reached the receiver's pipeline (so not "delivered").
_NOT_DELIVERED_CODES = frozenset({"PARTNER_REJECTED", "PARTNER_UNAVAILABLE", "CONFIG_INVALID", "UNKNOWN_PARTNER"})


def tracking_status(message: MessageRecord) -> str:
    """Where a relayed message is, in the ePhyto Hub vocabulary, from the hub's own record."""
    if message.status is MessageStatus.ACKNOWLEDGED:
        return DELIVERED
    if message.status is MessageStatus.REJECTED:
        return FAILED if message.last_error_code in _NOT_DELIVERED_CODES else NOT_READABLE
    if message.status is MessageStatus.SEND_FAILURE:
        return FAILED
    return PENDING


def _now() -> datetime:
    return datetime.now(timezone.utc)


def check_replay_window(config: GatewayConfig, sent_at: datetime, what: str, **context) -> None:
    """Refuse what was sent further from now than the replay window (duplicates are caught before)."""
    skew = abs((_now() - sent_at).total_seconds())
    if skew > config.replay_window_s:
        raise EpixError(
            ErrorCode.REPLAY_REJECTED,
            f"The {what} was sent at {sent_at.isoformat()}, {int(skew)} s from now; "
            f"the window is {int(config.replay_window_s)} s.",
            **context,
        )


def check_remembered(config: GatewayConfig, created_at: datetime, **context) -> None:
    """Refuse a message created longer ago than this gateway keeps message ids (retention's
    ``message_days``): its first delivery may have been purged, so a re-send could not be told
    from it and would take effect twice."""
    days = config.retention.message_days
    if days is None or _now() - created_at <= timedelta(days=days):
        return
    raise EpixError(
        ErrorCode.REPLAY_REJECTED,
        f"The message was created at {created_at.isoformat()}, more than {days} days ago; this gateway keeps "
        f"message ids for {days} days (retention), so it cannot tell a first delivery from a replay.",
        **context,
    )


def relayed_envelope(message: MessageRecord, *, hub: str, security: Security) -> bytes:
    """The envelope a hub hands on: the original sender's header, the payload byte for byte,
    ``RelayedBy`` = the hub, signed by the hub."""
    return security.sign(build_envelope(header_of(message), message.payload or b"", sent_at=_now(), relayed_by=hub))


# --- the hub: accepting envelopes for other members ----------------------------------------------


class Relay:
    def __init__(self, config: GatewayConfig, store: Store, security: Security, sender: "DeliveryWorker") -> None:
        self.config = config
        self.store = store
        self.security = security
        # The hub's sender takes what it has room for as the envelope is stored (store.base.Claim).
        self.sender = sender

    async def accept(self, env: Envelope) -> bytes:
        """Store ``env`` for forwarding and return the hub's signed receipt (PendingDelivery).
        The hop signature of ``From`` has been checked already."""
        h = env.header
        target = self.config.agreements.get(h.receiver) if h.receiver in self.config.agreements else None
        if target is None or target.role != "ma":
            raise EpixError(
                ErrorCode.MISADDRESSED,
                f"Hub {self.config.party} does not forward to {h.receiver}: it is not one of its members.",
                message_id=h.message_id,
            )
        existing = await self.store.get_message(h.message_id)
        if existing is not None:
            if existing.direction is Direction.OUTBOUND and existing.sender == h.sender and existing.payload_digest == env.digest:
                return self.receipt_for(existing)
            raise EpixError(
                ErrorCode.CONFLICT,
                f"Message id {h.message_id} is already held by this hub with different content or sender.",
                message_id=h.message_id,
            )
        check_replay_window(self.config, env.sent_at, "message")
        check_remembered(self.config, env.header.created_at, message_id=env.header.message_id)
        for party in (h.sender, h.receiver):
            if not self.config.agreements.get(party).allows(h.document_type, h.action):
                raise EpixError(
                    ErrorCode.NOT_AUTHORISED_FOR_DOCUMENT,
                    f"The hub's agreement with {party} does not cover {h.document_type} / {h.action.value}.",
                )
        # The hub never changes the payload, but it refuses to carry one its issuer did not sign;
        # an endorsement is signed by the endorsing country, the member sending it (§2), not the issuer.
        self.config.agreements.get(h.document_issuer)
        self.security.verify(env.payload, h.sender if h.action is Action.ENDORSE else h.document_issuer)
        now = _now()
        pull = target.delivery == "pull"
        message = message_from_header(
            h,
            direction=Direction.OUTBOUND,
            status=MessageStatus.SEND_ENQUEUED,
            payload=env.payload,
            payload_digest=env.digest,
            now=now,
            next_attempt_at=None if pull else now,  # None: held for pull, never due for the pusher
        )
        mode = f"held for {h.receiver} to pull" if pull else f"to push to {h.receiver}"
        is_new, stored = await self.sender.stored(
            [message],
            lambda claim: self.store.accept_relay(
                message, actor=f"partner:{h.sender}", detail=f"relayed for {h.sender}, {mode}", claim=claim
            ),
            newly=lambda held: [held[1]] if held[0] else [],
            take=not pull,
        )
        if not is_new and (stored.sender != h.sender or stored.payload_digest != env.digest):
            raise EpixError(ErrorCode.CONFLICT, f"Message id {h.message_id} is already held with different content.")
        log.info("hub.accepted", message_id=h.message_id, sender=h.sender, receiver=h.receiver, pull=pull, new=is_new)
        return self.receipt_for(stored)

    def receipt_for(self, stored: MessageRecord) -> bytes:
        # Rebuilt from the stored record, so that a resent envelope gets a receipt with the same content.
        return self.security.sign(
            build_receipt(
                Receipt(
                    message_id=stored.message_id,
                    sender=self.config.party,
                    receiver=stored.sender,
                    received_at=stored.created_at,
                    payload_digest=stored.payload_digest or "",
                    status=PENDING,
                )
            )
        )


# --- the hub: answering members (pull, acknowledgement, tracking) --------------------------------


@dataclass(frozen=True, slots=True)
class DeskAnswer:
    status: int
    body: bytes


class HubDesk:
    def __init__(self, config: GatewayConfig, store: Store, security: Security) -> None:
        self.config = config
        self.store = store
        self.security = security
        self.limits = XmlLimits(max_bytes=config.max_body_bytes)

    async def request(self, body: bytes) -> DeskAnswer:
        """A member's signed HubRequest: list, fetch or track."""
        return await self._answering(body, self._request)

    async def acknowledge(self, body: bytes) -> DeskAnswer:
        """A pulling member's signed Receipt (delivered) or Error signal (refused) for a fetched envelope."""
        return await self._answering(body, self._acknowledge)

    async def _answering(self, body: bytes, handler) -> DeskAnswer:
        member = None
        try:
            tree = parse_xml(body, limits=self.limits, what="hub request")
            senders = _FROM(tree)
            member = str(senders[0]).strip() if senders else None
            if not member:
                raise EpixError(ErrorCode.ENVELOPE_INVALID, "The request names no sender (From).")
            agreement = self.config.agreements.get(member)
            if agreement.role != "ma":
                raise EpixError(ErrorCode.FORBIDDEN, f"{member} is not a member of hub {self.config.party}.")
            verified = self.security.verify(body, member)
            # Every answer is signed: with an ended certificate the member would refuse it, so
            # the desk answers 503 and changes nothing until the certificate is renewed.
            self.security.require_usable(_now())
            return await handler(member, verified.signed_root, body)
        except EpixError as exc:
            return self.refuse(exc, member)

    def refuse(self, exc: EpixError, member: str | None = None) -> DeskAnswer:
        """The desk's signed error signal for ``exc``."""
        log.info("hub.refused", code=exc.code.name, member=member, detail=exc.detail)
        signal = ErrorSignal(
            message_id=None,
            sender=self.config.party,
            receiver=member if is_party_id(member) else None,
            code=exc.code.name,
            message=exc.detail[:512],
            retryable=exc.code.retryable,
            at=_now(),
        )
        return DeskAnswer(exc.status if exc.status >= 400 else 422, self.security.sign(build_error(signal)))

    async def _request(self, member: str, root, body: bytes) -> DeskAnswer:
        req = read_hub_request(root)
        if req.receiver != self.config.party:
            raise EpixError(ErrorCode.MISADDRESSED, f"The request is addressed to {req.receiver}, not to {self.config.party}.")
        check_replay_window(self.config, req.sent_at, "request")
        if req.operation == "list":
            held = await self.store.held_for_pull(member, limit=100)
            listing = PullList(
                sender=self.config.party,
                receiver=member,
                waiting=tuple(Waiting(m.message_id, m.sender, m.payload_digest or "") for m in held),
            )
            return DeskAnswer(200, self.security.sign(build_pull_list(listing)))
        if not req.message_id:
            raise EpixError(ErrorCode.ENVELOPE_INVALID, f"A {req.operation} request needs a MessageId.")
        message = await self.store.get_message(req.message_id)
        if req.operation == "fetch":
            message = self._held_for(message, member, req.message_id)
            await self._mark_fetched(message, member)
            return DeskAnswer(200, relayed_envelope(message, hub=self.config.party, security=self.security))
        # track: only the original sender may ask
        if message is None or message.direction is not Direction.OUTBOUND or message.sender != member:
            raise EpixError(ErrorCode.NOT_FOUND, f"Hub {self.config.party} relays no message {req.message_id} from {member}.")
        status = tracking_status(message)
        report = DeliveryReport(
            message_id=message.message_id,
            sender=self.config.party,
            receiver=member,
            final_receiver=message.receiver,
            status=status,
            at=message.updated_at,
            detail=_report_detail(message, status),
            receiver_answer=message.receipt if status != PENDING else None,
        )
        return DeskAnswer(200, self.security.sign(build_delivery_report(report)))

    async def _mark_fetched(self, message: MessageRecord, member: str) -> None:
        actor = f"puller:{member}"
        if message.status is MessageStatus.SEND_ENQUEUED:
            try:
                await self.store.transition(message.message_id, MessageStatus.SENDING, actor=actor, detail=f"fetched by {member}")
                return
            except EpixError as exc:
                if exc.code is not ErrorCode.CONFLICT:
                    raise
                # A concurrent fetch or acknowledgement moved it first: this one is a fetch again.
        await self.store.record_event(message.message_id, actor=actor, detail=f"fetched again by {member}")

    def _held_for(self, message: MessageRecord | None, member: str, message_id: str) -> MessageRecord:
        # Another member's envelope and an unknown id get the same answer: nothing to see here.
        agreement = self.config.agreements.get(member)
        if (
            message is None
            or message.direction is not Direction.OUTBOUND
            or message.receiver != member
            or agreement.delivery != "pull"
        ):
            raise EpixError(ErrorCode.NOT_FOUND, f"Hub {self.config.party} holds no envelope {message_id} for {member}.")
        return message

    async def _acknowledge(self, member: str, root, body: bytes) -> DeskAnswer:
        kind = root_name(root)
        if kind == "Receipt":
            receipt = read_receipt(root)
            message_id, error = receipt.message_id, None
        elif kind == "Error":
            error = read_error(root)
            if not error.message_id:
                raise EpixError(ErrorCode.ENVELOPE_INVALID, "An acknowledgement by error signal must name the MessageId.")
            message_id, receipt = error.message_id, None
        else:
            raise EpixError(ErrorCode.ENVELOPE_INVALID, f"An acknowledgement is a Receipt or an Error, not {kind}.")
        message = self._held_for(await self.store.get_message(message_id), member, message_id)
        if receipt is not None and receipt.payload_digest != message.payload_digest:
            raise EpixError(ErrorCode.DIGEST_MISMATCH, f"The receipt for {message_id} names another payload digest.")
        try:
            settled = await self._settle(message, member, error, body)
        except EpixError as exc:
            if exc.code is not ErrorCode.CONFLICT:
                raise
            # The member's puller and a retry of it (or a fetch) can race on one message: the
            # loser re-reads, and a message the winner settled is an acknowledgement repeated.
            message = await self.store.get_message(message_id)
            settled = message is not None and await self._settle(message, member, error, body)
        if settled:
            log.info("hub.acknowledged", message_id=message_id, member=member, refused=error is not None)
        return DeskAnswer(204, b"")

    async def _settle(self, message: MessageRecord, member: str, error, body: bytes) -> bool:
        """Move a held message on by its member's answer; False where there was nothing to change."""
        message_id, actor = message.message_id, f"puller:{member}"
        if message.status in _SETTLED:
            return False  # acknowledged before: nothing changes
        if message.status is MessageStatus.SEND_ENQUEUED:
            await self.store.transition(message_id, MessageStatus.SENDING, actor=actor, detail=f"acknowledged by {member} without a fetch")
        if error is not None and error.retryable:
            await self.store.record_event(
                message_id, actor=actor, detail=f"{member} could not take it yet: {error.message}", error_code=error.code
            )
            return False
        if error is not None:
            await self.store.transition(
                message_id,
                MessageStatus.REJECTED,
                actor=actor,
                detail=error.describe(member),
                error_code=error.code,
                receipt=body,  # the member's own signed answer, kept as sent: evidence for the sender
                increment_attempts=True,
            )
        else:
            await self.store.transition(
                message_id,
                MessageStatus.ACKNOWLEDGED,
                actor=actor,
                detail=f"pulled; signed receipt from {member}",
                receipt=body,  # the member's own signed answer, kept as sent: evidence for the sender
                increment_attempts=True,
            )
        return True


def _report_detail(message: MessageRecord, status: str) -> str:
    if status == PENDING:
        held = "held for pull" if message.next_attempt_at is None and message.status is MessageStatus.SEND_ENQUEUED else message.status.value
        return f"at hub, {held}, {message.attempts} attempt(s) so far"
    if status == DELIVERED:
        return f"delivered to {message.receiver} after {message.attempts} attempt(s)"
    return (message.last_error_detail or message.status.value)[:512]


# --- a member: pulling from hubs -----------------------------------------------------------------


class PullClient:
    """Collects what hubs hold for this gateway (agreements with ``role = "hub"`` and ``delivery =
    "pull"``): list, fetch, run each envelope through the ordinary inbound pipeline, then
    acknowledge with the signed receipt or error signal that pipeline produced."""

    def __init__(
        self, config: GatewayConfig, security: Security, http: aiohttp.ClientSession, inbound: "InboundService"
    ) -> None:
        self.config = config
        self.security = security
        self.http = http
        self.inbound = inbound
        self.pulled = 0

    @property
    def hubs(self) -> list:
        return [a for a in self.config.agreements if a.role == "hub" and a.delivery == "pull" and a.endpoint]

    async def run(self) -> None:
        while True:
            got = await self.pull_once()
            if not got:
                await asyncio.sleep(self.config.delivery.poll_s)

    async def pull_once(self) -> int:
        count = 0
        for hub in self.hubs:
            try:
                listing = read_pull_list(await self._ask(hub, "list", None))
                for waiting in listing.waiting:
                    envelope = await self._post(hub, PULL_PATH, self._request(hub.party, "fetch", waiting.message_id))
                    answer = await self.inbound.receive(envelope)
                    await self._post(hub, ACK_PATH, answer.body, expect=204)
                    count += 1
                    self.pulled += 1
            except EpixError as exc:
                log.warning("pull.failed", hub=hub.party, code=exc.code.name, detail=exc.detail)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                log.warning("pull.unreachable", hub=hub.party, error=type(exc).__name__)
        return count

    def _request(self, hub: str, operation: str, message_id: str | None) -> bytes:
        return self.security.sign(
            build_hub_request(HubRequest(self.config.party, hub, operation, message_id, _now()))
        )

    async def _ask(self, hub, operation: str, message_id: str | None):
        body = await self._post(hub, PULL_PATH, self._request(hub.party, operation, message_id))
        return self.security.verify(body, hub.party).signed_root

    async def _post(self, hub, path: str, body: bytes, *, expect: int = 200) -> bytes:
        async with self.http.post(
            hub.endpoint + path,
            data=body,
            headers={"Content-Type": "application/xml"},
            timeout=aiohttp.ClientTimeout(total=hub.timeout_s),
        ) as resp:
            answer = await resp.read()
            if resp.status != expect:
                raise EpixError(ErrorCode.PARTNER_REJECTED, f"hub {hub.party} answered HTTP {resp.status} on {path}.")
            return answer


# --- a sender: asking hubs how its messages fared ------------------------------------------------


class TrackingPoller:
    """Asks the hub of every message it acknowledged (status PendingDelivery) until the hub
    reports a final status. A report of delivery counts only with the receiver's own signed
    receipt inside, verified here against the receiver's pinned certificates."""

    def __init__(self, config: GatewayConfig, store: Store, security: Security, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.store = store
        self.security = security
        self.http = http
        self._next: dict[str, tuple[float, float]] = {}  # message id -> (next ask, current interval)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(EpixError):
                await self.poll_once()
            await asyncio.sleep(self.config.delivery.poll_s)

    async def poll_once(self) -> int:
        loop = asyncio.get_running_loop()
        asked = 0
        for message in await self.store.awaiting_delivery_report(limit=100):
            when, interval = self._next.get(message.message_id, (0.0, self.config.delivery.poll_s))
            if when > loop.time():
                continue
            self._next[message.message_id] = (loop.time() + interval, min(interval * 2, 30.0))
            try:
                await self.track(message)
                asked += 1
            except EpixError as exc:
                log.warning("tracking.failed", message_id=message.message_id, code=exc.code.name, detail=exc.detail)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                log.warning("tracking.unreachable", message_id=message.message_id, error=type(exc).__name__)
        return asked

    async def track(self, message: MessageRecord) -> DeliveryReportRecord:
        hub = self.config.agreements.get(message.via)
        if not hub.endpoint:
            raise EpixError(ErrorCode.CONFIG_INVALID, f"No endpoint to reach hub {hub.party}.")
        request = self.security.sign(
            build_hub_request(HubRequest(self.config.party, hub.party, "track", message.message_id, _now()))
        )
        async with self.http.post(
            hub.endpoint + TRACK_PATH,
            data=request,
            headers={"Content-Type": "application/xml"},
            timeout=aiohttp.ClientTimeout(total=hub.timeout_s),
        ) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise EpixError(ErrorCode.PARTNER_REJECTED, f"hub {hub.party} answered HTTP {resp.status} to a tracking request.")
        report = read_delivery_report(self.security.verify(body, hub.party).signed_root)
        if report.message_id != message.message_id or report.receiver != self.config.party:
            raise EpixError(ErrorCode.RECEIPT_INVALID, "The hub's delivery report is about another message.")
        status, detail = self._checked(message, report)
        record = DeliveryReportRecord(message.message_id, status, hub.party, detail, body, report.at)
        if await self.store.save_delivery_report(record, actor=f"hub:{hub.party}"):
            log.info("tracking.reported", message_id=message.message_id, status=status)
        if status in FINAL:
            self._next.pop(message.message_id, None)
        return record

    def _checked(self, message: MessageRecord, report: DeliveryReport, *, now: datetime | None = None) -> tuple[str, str | None]:
        if report.status not in (DELIVERED, DELIVERED_WITH_WARNINGS, NOT_READABLE):
            return report.status, report.detail
        # The hub's word is not enough: the receiver's own signed answer must be inside.
        try:
            if not report.receiver_answer:
                raise EpixError(ErrorCode.RECEIPT_INVALID, "no receiver answer inside")
            earliest = message.created_at - timedelta(seconds=self.config.replay_window_s)
            root = self.security.verify_answer(report.receiver_answer, message.receiver, earliest=earliest, now=now).signed_root
            if report.status == NOT_READABLE:
                signal = read_error(root)
                if signal.message_id != message.message_id:
                    raise EpixError(ErrorCode.RECEIPT_INVALID, "the error signal names another message")
                return NOT_READABLE, signal.describe(message.receiver)
            receipt = read_receipt(root)
            if receipt.message_id != message.message_id or receipt.payload_digest != message.payload_digest:
                raise EpixError(ErrorCode.RECEIPT_INVALID, "the receipt names another message or payload")
            return report.status, f"signed receipt from {message.receiver} verified ({receipt.received_at.isoformat()})"
        except EpixError as exc:
            return PENDING, f"hub says {report.status}, but {message.receiver}'s answer did not verify: {exc.code.name}"


def background(
    config: GatewayConfig, store: Store, security: Security, http: aiohttp.ClientSession, inbound: "InboundService"
) -> list[Callable[[], Coroutine[Any, Any, None]]]:
    """The hub-related loops this gateway needs (each a fresh run per call, for tasks.start):
    pulling (members that pull) and tracking (senders with hub partners)."""
    loops: list[Callable[[], Coroutine[Any, Any, None]]] = []
    puller = PullClient(config, security, http, inbound)
    if puller.hubs:
        loops.append(puller.run)
    if config.role != "hub" and any(a.role == "hub" and a.endpoint for a in config.agreements):
        loops.append(TrackingPoller(config, store, security, http).run)
    return loops
