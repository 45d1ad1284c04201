"""Accepting permits from the local Management Authority system and queueing them for partners.

validate → build CITESEPermit XML → sign as the issuing MA → store permit + messages (the
embedded queue) in one transaction → wake the delivery worker. Nothing is sent from here.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from lxml import etree

from adapters.cites_write import permit_to_element
from adapters.exchange_xml import Cancellation, build_cancellation
from adapters.permit_json import permit_to_json
from domain import rules
from domain.errors import EpixError, ErrorCode
from domain.messages import Action, Direction, MessageStatus
from domain.model import Permit
from gateway.config import GatewayConfig, Token
from gateway.ids import new_uuid
from gateway.security import Security
from gateway.store.base import MessageRecord, PermitRecord, Store

if TYPE_CHECKING:
    from gateway.delivery import DeliveryWorker

DOCUMENT_TYPE = "CITESEPermit"
_CONVERSATION_NS = uuid.UUID("6f1c9d2e-5b7a-4c1e-9a43-0c4b8f2d7e11")


def conversation_id(issuer: str, number: str) -> str:
    """Every message about one permit shares a conversation id that any party can recompute."""
    return str(uuid.uuid5(_CONVERSATION_NS, f"{issuer}/{number}"))


def receivers_for(permit: Permit) -> list[str]:
    """The partner(s) a permit goes to: the importing country for export documents, the exporting
    country for an import permit."""
    issuer = permit.issuing_country
    if permit.type == "I":
        candidates = [permit.exporter.address.country]
    else:
        candidates = [permit.importer.address.country]
    return [c for c in candidates if c and c != issuer]


@dataclass(frozen=True, slots=True)
class Accepted:
    issuer: str
    number: str
    version: int
    messages: list[MessageRecord]
    warnings: list[rules.Problem]
    replayed: bool = False  # an idempotent repeat: nothing new was stored


class OutboundService:
    def __init__(self, config: GatewayConfig, store: Store, security: Security, sender: "DeliveryWorker") -> None:
        self.config = config
        self.store = store
        self.security = security
        # It takes what it has room for as the permit is stored (store.base.Claim), and is woken
        # for the rest.
        self.sender = sender

    def _check_scope(self, principal: Token, country: str) -> None:
        if principal.role not in ("ma", "operator") or not principal.covers(country):
            raise EpixError(
                ErrorCode.FORBIDDEN,
                f"Token {principal.name!r} may not act for issuing country {country!r}.",
                country=country,
            )
        if country != self.config.party:
            raise EpixError(
                ErrorCode.FORBIDDEN,
                f"This gateway issues permits for {self.config.party} only, not for {country!r}.",
                country=country,
            )

    async def submit(
        self,
        permit: Permit,
        *,
        principal: Token,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> Accepted:
        issuer = permit.issuing_country
        self._check_scope(principal, issuer)
        if idempotency_key:
            replay = await self._replay(principal, idempotency_key, request_hash)
            if replay is not None:
                return replay
        # Judged now: a permit whose validity has ended, or that is dated on a day still to come,
        # is refused before it is signed or sent.
        problems = rules.validate(permit, now=datetime.now(timezone.utc))
        errors = [p for p in problems if p.severity is rules.Severity.ERROR]
        if errors:
            raise EpixError(
                ErrorCode.PERMIT_INVALID,
                f"The permit breaks {len(errors)} rule(s); see problems.",
                problems=[_problem_dict(p) for p in problems],
            )
        receivers = receivers_for(permit)
        if not receivers:
            raise EpixError(
                ErrorCode.PERMIT_INVALID,
                "The permit names no partner country to send it to (importer and exporter are both this country).",
            )
        action = Action.ISSUE
        if permit.replaces:
            action = Action.REPLACE
            receivers = await self._replacement_receivers(issuer, permit.replaces, receivers)
        routes = [self.config.agreements.route(r, DOCUMENT_TYPE, action) for r in receivers]

        self.security.require_usable(datetime.now(timezone.utc))
        # Signed from the element itself: the signer would otherwise parse the bytes back.
        element = permit_to_element(permit)
        unsigned = etree.tostring(element, xml_declaration=True, encoding="UTF-8")  # = permit_to_xml(permit)
        signed = self.security.sign(element, serialised=unsigned)
        now = datetime.now(timezone.utc)
        record = PermitRecord(
            issuer=issuer,
            number=permit.number,
            version=1,
            direction=Direction.OUTBOUND,
            status="VALID",
            permit_json=permit_to_json(permit),
            signed_xml=signed,
            digest=hashlib.sha256(unsigned).hexdigest(),
            sender=None,
            replaces=permit.replaces,
            replaced_by=None,
            created_at=now,
        )
        messages = [
            self._message(issuer, permit.number, 1, route.receiver, action, route.via, signed, now) for route in routes
        ]
        stored = await self.sender.stored(
            messages,
            lambda claim: self.store.accept_outbound(
                record,
                messages,
                actor=f"ma:{principal.name}",
                idempotency_key=idempotency_key,
                principal=principal.name if idempotency_key else None,
                request_hash=request_hash,
                claim=claim,
            ),
            newly=list,
        )
        replayed = bool(stored) and {m.message_id for m in stored} != {m.message_id for m in messages}
        warnings = [p for p in problems if p.severity is rules.Severity.WARNING]
        return Accepted(issuer, permit.number, 1, stored, warnings, replayed=replayed)

    async def cancel(self, issuer: str, number: str, *, reason: str, principal: Token) -> Accepted:
        self._check_scope(principal, issuer)
        versions = await self.store.get_permit_versions(issuer, number)
        outbound = [v for v in versions if v.direction is Direction.OUTBOUND]
        if not outbound:
            raise EpixError(ErrorCode.NOT_FOUND, f"No permit {issuer}/{number} was issued through this gateway.")
        latest = outbound[-1]
        if latest.status == "CANCELLED":
            existing = [
                m for m in await self.store.messages_for_permit(issuer, number) if m.action is Action.CANCEL
            ]
            return Accepted(issuer, number, latest.version, existing, [], replayed=True)
        if latest.status != "VALID":
            raise EpixError(
                ErrorCode.CONFLICT,
                f"Permit {issuer}/{number} is {latest.status.lower()} and cannot be cancelled.",
                status=latest.status,
            )
        receivers = await self._received_by(issuer, number)
        now = datetime.now(timezone.utc)
        self.security.require_usable(now)
        notice = self.security.sign(
            build_cancellation(Cancellation(issuer, number, latest.version, reason, now))
        )
        routes = [self.config.agreements.route(r, DOCUMENT_TYPE, Action.CANCEL) for r in receivers]
        messages = [
            self._message(issuer, number, latest.version, route.receiver, Action.CANCEL, route.via, notice, now)
            for route in routes
        ]
        stored = await self.store.accept_cancellation(
            issuer, number, messages, actor=f"ma:{principal.name}"
        )
        self.sender.wake()
        return Accepted(issuer, number, latest.version, stored, [])

    def _message(
        self, issuer: str, number: str, version: int, receiver: str, action: Action, via: str | None, payload: bytes, now: datetime
    ) -> MessageRecord:
        return MessageRecord(
            message_id=new_uuid(),
            conversation_id=conversation_id(issuer, number),
            direction=Direction.OUTBOUND,
            sender=self.config.party,
            receiver=receiver,
            document_type=DOCUMENT_TYPE,
            action=action,
            issuer=issuer,
            number=number,
            version=version,
            status=MessageStatus.SEND_ENQUEUED,
            attempts=0,
            next_attempt_at=now,
            lease_until=None,
            last_error_code=None,
            last_error_detail=None,
            via=via,
            receipt=None,
            payload_digest="sha256:" + hashlib.sha256(payload).hexdigest(),
            payload=payload,
            created_at=now,
            updated_at=now,
        )

    async def _received_by(self, issuer: str, number: str) -> list[str]:
        messages = await self.store.messages_for_permit(issuer, number)
        parties = []
        for m in messages:
            if m.direction is Direction.OUTBOUND and m.action in (Action.ISSUE, Action.REPLACE) and m.receiver not in parties:
                parties.append(m.receiver)
        return parties

    async def _replacement_receivers(self, issuer: str, replaced: str, receivers: list[str]) -> list[str]:
        versions = [v for v in await self.store.get_permit_versions(issuer, replaced) if v.direction is Direction.OUTBOUND]
        if not versions:
            raise EpixError(
                ErrorCode.NOT_FOUND,
                f"The permit names {issuer}/{replaced} as the one it replaces, but this gateway never issued it.",
            )
        if versions[-1].status != "VALID":
            raise EpixError(
                ErrorCode.CONFLICT,
                f"Permit {issuer}/{replaced} is {versions[-1].status.lower()} and cannot be replaced.",
            )
        everyone = await self._received_by(issuer, replaced)
        for r in receivers:
            if r not in everyone:
                everyone.append(r)
        return everyone

    async def _replay(self, principal: Token, key: str, request_hash: str | None) -> Accepted | None:
        found = await self.store.idempotency_lookup(principal.name, key)
        if found is None:
            return None
        stored_hash, message_ids = found
        if request_hash is not None and stored_hash != request_hash:
            raise EpixError(
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "This Idempotency-Key was already used with a different request body.",
            )
        messages = [m for m in [await self.store.get_message(i) for i in message_ids] if m is not None]
        first = messages[0] if messages else None
        return Accepted(
            first.issuer if first else "", first.number if first else "", first.version if first else 1, messages, [], replayed=True
        )


def _problem_dict(p: rules.Problem) -> dict:
    return {"code": p.code, "path": p.path, "message": p.message, "severity": p.severity.value.lower()}
