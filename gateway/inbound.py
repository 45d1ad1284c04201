"""Receiving a message from a partner gateway, in a fixed order (as an AS4 access point does):

parse → identify the claimed sender → verify the hop signature against that sender's pinned
certificates → check addressing and agreement → duplicate check (same id: same receipt, no second
effect) → replay window → verify the issuer's signature on the payload → validate → store →
signed receipt. Any failure becomes a signed error signal with a stable code; nothing is stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from lxml import etree

from adapters.cites_read import read_permit
from adapters.exchange_xml import (
    Envelope,
    ErrorSignal,
    Receipt,
    build_error,
    is_party_id,
    read_cancellation,
    read_envelope,
    receipt_xml,
    signal_problems,
)
from adapters.ns import EXCHANGE
from adapters.permit_json import permit_to_json
from adapters.schema import permit_schema
from adapters.xmlparse import XmlLimits, parse_xml
from domain import rules
from domain.errors import EpixError, ErrorCode
from domain.messages import Action, Direction, MessageStatus
from gateway.config import GatewayConfig
from gateway.customs.feedback import endorsement_request
from gateway.hub import Relay, check_remembered, check_replay_window
from gateway.logs import get_logger
from gateway.security import Security
from gateway.store.base import MessageAlias, MessageRecord, PermitRecord, Store, message_from_header
from routing.agreements import Agreement

if TYPE_CHECKING:
    from gateway.delivery import DeliveryWorker

log = get_logger("epix.inbound")
_FROM = etree.XPath("/ex:Envelope/ex:Header/ex:From/text()", namespaces={"ex": EXCHANGE})
_MID = etree.XPath("/ex:Envelope/ex:Header/ex:MessageId/text()", namespaces={"ex": EXCHANGE})
_RELAYED_BY = etree.XPath("/ex:Envelope/ex:Header/ex:RelayedBy/text()", namespaces={"ex": EXCHANGE})


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes  # a signed Receipt or a signed Error
    message_id: str | None
    duplicate: bool = False


class InboundService:
    def __init__(
        self,
        config: GatewayConfig,
        store: Store,
        security: Security,
        sender: "DeliveryWorker",
    ) -> None:
        self.config = config
        self.store = store
        self.security = security
        self.limits = XmlLimits(max_bytes=config.max_body_bytes)
        self.relay = Relay(config, store, security, sender) if config.role == "hub" else None

    async def receive(self, body: bytes) -> Answer:
        claimed_sender: str | None = None
        message_id: str | None = None
        try:
            tree = parse_xml(body, limits=self.limits, what="envelope")
            senders = _FROM(tree)
            ids = _MID(tree)
            claimed_sender = str(senders[0]).strip() if senders else None
            message_id = str(ids[0]).strip() if ids else None
            if not claimed_sender:
                raise EpixError(ErrorCode.ENVELOPE_INVALID, "The envelope names no sender (Header/From).")
            agreement = self.config.agreements.get(claimed_sender)
            # The tree read for From is the one verified (one parse); verifying consumes it.
            verified = self.security.verify(body, self._hop_party(tree, agreement), parsed=tree)
            envelope = read_envelope(verified.signed_root)
            return await self._accept(envelope)
        except EpixError as exc:
            log.info(
                "inbound.refused",
                code=exc.code.name,
                message_id=message_id,
                sender=claimed_sender,
                detail=exc.detail,
            )
            return Answer(exc.status if exc.status >= 400 else 422, self.error_document(exc, message_id, claimed_sender), message_id)

    def _hop_party(self, tree, agreement: Agreement) -> str:
        """Whose signature the envelope must carry: From's, or that of the hub relaying for From
        (a hub partner of ours; the issuer's signature on the payload stays the end-to-end check)."""
        claimed_sender = agreement.party
        relays = _RELAYED_BY(tree)
        relayed_by = str(relays[0]).strip() if relays else None
        if not relayed_by:
            return claimed_sender
        if self.config.agreements.get(relayed_by).role != "hub":
            raise EpixError(
                ErrorCode.SENDER_MISMATCH,
                f"The envelope says {relayed_by} relays it for {claimed_sender}, but {relayed_by} is not a hub partner.",
                claimed=claimed_sender,
                relayed_by=relayed_by,
            )
        # Where the agreement names the hub a partner is reached through, that hub alone speaks for it.
        if agreement.via is not None and relayed_by != agreement.via:
            raise EpixError(
                ErrorCode.SENDER_MISMATCH,
                f"The agreement with {claimed_sender} routes its messages through {agreement.via}, not {relayed_by}.",
                claimed=claimed_sender,
                relayed_by=relayed_by,
            )
        return relayed_by

    async def _accept(self, env: Envelope) -> Answer:
        h = env.header
        if h.receiver != self.config.party and self.relay is not None and env.relayed_by is None:
            self.security.require_usable(datetime.now(timezone.utc))  # the hub's receipt, and its relay's hop signature
            receipt = await self.relay.accept(env)
            return Answer(200, receipt, h.message_id)
        if h.receiver != self.config.party:
            raise EpixError(
                ErrorCode.MISADDRESSED,
                f"The message is addressed to {h.receiver}, but this gateway is {self.config.party}.",
                message_id=h.message_id,
            )
        existing, alias = await self.store.find_received(h.message_id)
        if existing is not None:
            return await self._duplicate(existing, env)
        if alias is not None:
            return self._resent(alias, env)
        now = datetime.now(timezone.utc)
        check_replay_window(self.config, env.sent_at, "message", message_id=h.message_id)
        check_remembered(self.config, h.created_at, message_id=h.message_id)
        agreement = self.config.agreements.get(h.sender)
        if not agreement.allows(h.document_type, h.action):
            raise EpixError(
                ErrorCode.NOT_AUTHORISED_FOR_DOCUMENT,
                f"The agreement with {h.sender} does not cover {h.document_type} / {h.action.value}.",
            )
        if h.action is not Action.ENDORSE:  # an endorsement is about a permit we issued ourselves
            self.config.agreements.get(h.document_issuer)
        permit_record = self._payload_record(env, now) if h.action in (Action.ISSUE, Action.REPLACE) else None
        if h.action is Action.CANCEL:
            self._check_cancellation(env)
        # Customs feedback (gateway/customs/feedback.py): box 14 for a permit we issued.
        endorsed = await endorsement_request(self, env) if h.action is Action.ENDORSE else None
        # A receipt signed with an ended certificate is one the sender must refuse: 503 instead,
        # nothing stored, and the sender tries again until the certificate is renewed.
        self.security.require_usable(now)
        receipt = self.security.sign_template(
            receipt_xml(
                Receipt(
                    message_id=h.message_id,
                    sender=self.config.party,
                    receiver=h.sender,
                    received_at=now,
                    payload_digest=env.digest,
                    status="RECEIVED",
                )
            )
        )
        message = message_from_header(
            h,
            direction=Direction.INBOUND,
            status=MessageStatus.RECEIVED,
            payload=env.payload,
            payload_digest=env.digest,
            now=now,
            receipt=receipt,
        )
        if endorsed is not None:
            is_new, stored = await self.store.record_endorsement(
                endorsed.request, message, reversal=endorsed.reversal, actor=f"partner:{h.sender}"
            )
        else:
            is_new, stored = await self.store.store_inbound(permit_record, message, actor=f"partner:{h.sender}")
        log.info("inbound.received", message_id=h.message_id, sender=h.sender, action=h.action.value, new=is_new)
        if not is_new and stored.message_id != h.message_id:
            # Content already held under another message id: it takes effect once, but the sender
            # accepts only a receipt naming its own MessageId; the other message's would never do.
            # The id keeps that receipt: the same id again, or tracked, answers with it.
            alias = await self.store.record_alias(
                MessageAlias(h.message_id, h.sender, stored.message_id, env.digest, receipt, now)
            )
            return self._resent(alias, env)
        if not is_new:  # the same id stored meanwhile by a concurrent delivery
            return await self._duplicate(stored, env)
        return Answer(200, stored.receipt or receipt, h.message_id)

    def _resent(self, alias: MessageAlias, env: Envelope) -> Answer:
        if alias.sender != env.header.sender or alias.payload_digest != env.digest:
            if alias.sender != env.header.sender:
                taken = "is already used here by another message"
            else:
                taken = "was already received with different content"
            raise EpixError(ErrorCode.CONFLICT, f"Message id {alias.message_id} {taken}.", message_id=alias.message_id)
        return Answer(200, alias.receipt, alias.message_id, duplicate=True)

    async def _duplicate(self, existing: MessageRecord, env: Envelope) -> Answer:
        # Only the message itself again gets its receipt: an id one of our own messages carries,
        # or one another sender used, is taken, and a 200 would say a message was stored that was not.
        if existing.direction is not Direction.INBOUND or existing.sender != env.header.sender:
            raise EpixError(
                ErrorCode.CONFLICT,
                f"Message id {existing.message_id} is already used here by another message.",
                message_id=existing.message_id,
            )
        if existing.payload_digest != env.digest:
            raise EpixError(
                ErrorCode.CONFLICT,
                f"Message id {existing.message_id} was already received with different content.",
                message_id=existing.message_id,
            )
        return Answer(200, existing.receipt, existing.message_id, duplicate=True)

    def _payload_record(self, env: Envelope, now: datetime) -> PermitRecord:
        h = env.header
        verified = self.security.verify(env.payload, h.document_issuer)
        signed_root = verified.signed_root
        permit_schema().validate(signed_root.getroottree())
        permit = read_permit(signed_root.getroottree())
        if permit.issuing_country != h.document_issuer or permit.number != h.document_number:
            raise EpixError(
                ErrorCode.ENVELOPE_INVALID,
                f"The envelope announces permit {h.document_issuer}/{h.document_number} but carries "
                f"{permit.issuing_country}/{permit.number}.",
            )
        # Expiry is judged at CreatedAt, when the issuer's gateway accepted the message (kept through
        # retries and hubs), never later than now: a permit that expired in transit is stored, and
        # customs' verification says EXPIRED; one sent already expired is refused. The issue date is
        # judged now, so a sender's clock behind ours refuses nothing.
        since = min(h.created_at, now)
        errors = [p for p in rules.validate(permit, now=now, since=since) if p.severity is rules.Severity.ERROR]
        if errors:
            raise EpixError(
                ErrorCode.PERMIT_INVALID,
                f"The permit breaks {len(errors)} rule(s): {errors[0].message}",
                problems=[{"code": p.code, "path": p.path, "message": p.message} for p in errors],
            )
        return PermitRecord(
            issuer=h.document_issuer,
            number=h.document_number,
            version=h.document_version,
            direction=Direction.INBOUND,
            status="VALID",
            permit_json=permit_to_json(permit),
            signed_xml=env.payload,
            digest=hashlib.sha256(env.payload).hexdigest(),
            sender=h.sender,
            replaces=permit.replaces,
            replaced_by=None,
            created_at=now,
        )

    def _check_cancellation(self, env: Envelope) -> None:
        h = env.header
        verified = self.security.verify(env.payload, h.document_issuer)
        notice = read_cancellation(verified.signed_root)
        if (notice.issuer, notice.number) != (h.document_issuer, h.document_number):
            raise EpixError(
                ErrorCode.ENVELOPE_INVALID,
                f"The envelope announces a cancellation of {h.document_issuer}/{h.document_number} "
                f"but carries one for {notice.issuer}/{notice.number}.",
            )
        if notice.version != h.document_version:
            raise EpixError(
                ErrorCode.ENVELOPE_INVALID,
                f"The envelope announces a cancellation of version {h.document_version} of {h.document_issuer}/"
                f"{h.document_number} but carries one for version {notice.version}.",
            )

    def error_document(self, exc: EpixError, message_id: str | None, receiver: str | None) -> bytes:
        signal = ErrorSignal(
            message_id=message_id if message_id and len(message_id) <= 64 else None,
            sender=self.config.party,
            receiver=receiver if is_party_id(receiver) else None,
            code=exc.code.name,
            message=exc.detail[:512],
            retryable=exc.code.retryable,
            at=datetime.now(timezone.utc),
            problems=signal_problems(exc.context.get("problems")),
        )
        return self.security.sign(build_error(signal))
