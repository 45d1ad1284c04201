"""The hop envelope, the receipt and the error signal of the exchange protocol (docs/PROTOCOL.md).

The signed permit travels base64-encoded inside the envelope so that its bytes, and with them the
issuing Management Authority's signature, arrive exactly as they were signed, across any number
of hops. The envelope, the receipt and the error are each signed by the gateway that made them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from lxml import etree
from lxml.builder import ElementMaker

from adapters.ns import EXCHANGE
from domain.errors import EpixError, ErrorCode
from domain.messages import Action, EnvelopeHeader
from domain.model import EndorsedLine, Endorsement

E = ElementMaker(namespace=EXCHANGE, nsmap={"ex": EXCHANGE})
_Q = "{%s}" % EXCHANGE
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "exchange" / "exchange-1.xsd"


def payload_digest(payload: bytes) -> str:
    return "sha256:" + hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True, slots=True)
class Envelope:
    header: EnvelopeHeader
    sent_at: datetime
    payload: bytes  # the issuer-signed document, byte for byte
    digest: str  # payload_digest(payload) as the sender declared it
    relayed_by: str | None = None  # the hub that relayed (and signed) this envelope for From


@dataclass(frozen=True, slots=True)
class Receipt:
    message_id: str
    sender: str  # who issues the receipt (the receiving party)
    receiver: str  # to whom (the sending party)
    received_at: datetime
    payload_digest: str
    status: str  # RECEIVED (first time) — a duplicate gets the very same receipt bytes again


@dataclass(frozen=True, slots=True)
class ErrorSignal:
    message_id: str | None
    sender: str
    receiver: str | None
    code: str
    message: str
    retryable: bool
    at: datetime


@dataclass(frozen=True, slots=True)
class Cancellation:
    issuer: str
    number: str
    version: int
    reason: str
    cancelled_at: datetime


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def build_envelope(
    header: EnvelopeHeader, payload: bytes, *, sent_at: datetime, relayed_by: str | None = None
) -> etree._Element:
    relay = [E.RelayedBy(relayed_by)] if relayed_by else []
    return E.Envelope(
        E.Header(
            E.MessageId(header.message_id),
            E.ConversationId(header.conversation_id),
            E.From(header.sender),
            E.To(header.receiver),
            E.DocumentType(header.document_type),
            E.DocumentIssuer(header.document_issuer),
            E.DocumentNumber(header.document_number),
            E.DocumentVersion(str(header.document_version)),
            E.Action(header.action.value),
            E.CreatedAt(_iso(header.created_at)),
            E.SentAt(_iso(sent_at)),
            E.PayloadDigest(payload_digest(payload)),
            *relay,
        ),
        E.Payload(base64.b64encode(payload).decode("ascii")),
    )


def build_receipt(r: Receipt) -> etree._Element:
    return E.Receipt(
        E.MessageId(r.message_id),
        E.From(r.sender),
        E.To(r.receiver),
        E.ReceivedAt(_iso(r.received_at)),
        E.PayloadDigest(r.payload_digest),
        E.Status(r.status),
    )


def build_error(err: ErrorSignal) -> etree._Element:
    children = []
    if err.message_id:
        children.append(E.MessageId(err.message_id))
    children.append(E.From(err.sender))
    if err.receiver:
        children.append(E.To(err.receiver))
    children += [
        E.Code(err.code),
        E.Message(err.message),
        E.Retryable("true" if err.retryable else "false"),
        E.At(_iso(err.at)),
    ]
    return E.Error(*children)


def build_cancellation(c: Cancellation) -> etree._Element:
    return E.Cancellation(
        E.DocumentIssuer(c.issuer),
        E.DocumentNumber(c.number),
        E.DocumentVersion(str(c.version)),
        E.Reason(c.reason),
        E.CancelledAt(_iso(c.cancelled_at)),
    )


@lru_cache(maxsize=1)
def exchange_schema() -> etree.XMLSchema:
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH), parser))


def _check_schema(root: etree._Element, what: str) -> None:
    schema = exchange_schema()
    if not schema.validate(root):
        errs = [f"line {e.line}: {e.message}" for e in schema.error_log]
        raise EpixError(
            ErrorCode.ENVELOPE_INVALID,
            f"The {what} does not match the exchange schema: {errs[0] if errs else 'unknown error'}",
            errors=errs[:20],
        )


def _text(root: etree._Element, name: str, what: str, *, required: bool = True) -> str | None:
    el = root.find(_Q + name)
    value = el.text.strip() if el is not None and el.text else None
    if required and not value:
        raise EpixError(ErrorCode.ENVELOPE_INVALID, f"The {what} has no {name}.", field=name)
    return value


def _when(root: etree._Element, name: str, what: str) -> datetime:
    raw = _text(root, name, what)
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise EpixError(ErrorCode.ENVELOPE_INVALID, f"The {what}'s {name} {raw!r} is not an ISO 8601 date-time.") from None
    if value.tzinfo is None:
        raise EpixError(ErrorCode.ENVELOPE_INVALID, f"The {what}'s {name} has no time zone offset.")
    return value


def read_envelope(root: etree._Element) -> Envelope:
    """Read an envelope from the element that signature verification returned as signed."""
    if root.tag != _Q + "Envelope":
        raise EpixError(ErrorCode.ENVELOPE_INVALID, f"Expected an exchange Envelope, found {etree.QName(root).localname}.")
    _check_schema(root, "envelope")
    h = root.find(_Q + "Header")
    what = "envelope"
    try:
        action = Action(_text(h, "Action", what))
    except ValueError:
        raise EpixError(ErrorCode.ENVELOPE_INVALID, "The envelope's Action is not issue, cancel, replace or endorse.") from None
    try:
        version = int(_text(h, "DocumentVersion", what))
    except ValueError:
        raise EpixError(ErrorCode.ENVELOPE_INVALID, "The envelope's DocumentVersion is not a whole number.") from None
    header = EnvelopeHeader(
        message_id=_text(h, "MessageId", what),
        conversation_id=_text(h, "ConversationId", what),
        sender=_text(h, "From", what),
        receiver=_text(h, "To", what),
        document_type=_text(h, "DocumentType", what),
        document_issuer=_text(h, "DocumentIssuer", what),
        document_number=_text(h, "DocumentNumber", what),
        document_version=version,
        action=action,
        created_at=_when(h, "CreatedAt", what),
    )
    try:
        payload = base64.b64decode(_text(root, "Payload", what), validate=True)
    except (binascii.Error, ValueError):
        raise EpixError(ErrorCode.ENVELOPE_INVALID, "The envelope's Payload is not valid base64.") from None
    declared = _text(h, "PayloadDigest", what)
    if declared != payload_digest(payload):
        raise EpixError(
            ErrorCode.DIGEST_MISMATCH,
            "The envelope's payload does not match the digest its sender declared.",
            message_id=header.message_id,
        )
    return Envelope(
        header=header,
        sent_at=_when(h, "SentAt", what),
        payload=payload,
        digest=declared,
        relayed_by=_text(h, "RelayedBy", what, required=False),
    )


def read_receipt(root: etree._Element) -> Receipt:
    if root.tag != _Q + "Receipt":
        raise EpixError(ErrorCode.RECEIPT_INVALID, f"Expected a Receipt, found {etree.QName(root).localname}.")
    try:
        _check_schema(root, "receipt")
    except EpixError as exc:
        raise EpixError(ErrorCode.RECEIPT_INVALID, exc.detail) from None
    what = "receipt"
    return Receipt(
        message_id=_text(root, "MessageId", what),
        sender=_text(root, "From", what),
        receiver=_text(root, "To", what),
        received_at=_when(root, "ReceivedAt", what),
        payload_digest=_text(root, "PayloadDigest", what),
        status=_text(root, "Status", what),
    )


def read_error(root: etree._Element) -> ErrorSignal:
    if root.tag != _Q + "Error":
        raise EpixError(ErrorCode.RECEIPT_INVALID, f"Expected an Error, found {etree.QName(root).localname}.")
    what = "error signal"
    return ErrorSignal(
        message_id=_text(root, "MessageId", what, required=False),
        sender=_text(root, "From", what),
        receiver=_text(root, "To", what, required=False),
        code=_text(root, "Code", what),
        message=_text(root, "Message", what),
        retryable=_text(root, "Retryable", what) == "true",
        at=_when(root, "At", what),
    )


def root_name(root: etree._Element) -> str:
    """'Envelope', 'Receipt' or 'Error' for an exchange document, else the local name."""
    return etree.QName(root).localname


def read_cancellation(root: etree._Element) -> Cancellation:
    if root.tag != _Q + "Cancellation":
        raise EpixError(ErrorCode.ENVELOPE_INVALID, f"Expected a Cancellation, found {etree.QName(root).localname}.")
    _check_schema(root, "cancellation")
    what = "cancellation"
    return Cancellation(
        issuer=_text(root, "DocumentIssuer", what),
        number=_text(root, "DocumentNumber", what),
        version=int(_text(root, "DocumentVersion", what)),
        reason=_text(root, "Reason", what),
        cancelled_at=_when(root, "CancelledAt", what),
    )


# --- customs: the endorsement fed back to the issuer, and the signed verdict -----------------------


@dataclass(frozen=True, slots=True)
class EndorsementNotice:
    """Box 14 as customs filled it for one declaration, signed by the endorsing country's gateway
    and sent back to the issuing Management Authority (action ``endorse``). A reversal carries
    no lines: it withdraws everything the declaration wrote off."""

    issuer: str
    number: str
    version: int
    endorsed_by: str  # party id of the endorsing country's gateway (its signature is on the notice)
    declaration: str  # the customs declaration reference: with the line, the idempotency key
    endorsement: Endorsement  # date, port, actual quantity per line, transport document, officer
    office: str | None = None
    reversal: bool = False


@dataclass(frozen=True, slots=True)
class VerdictLine:
    item_id: str
    unit: str
    permitted: Decimal
    remaining: Decimal


@dataclass(frozen=True, slots=True)
class VerdictDocument:
    verification_id: str
    verified_by: str  # this gateway's party
    issuer: str
    number: str
    result: str  # VALID, EXPIRED, ... (gateway.customs.verification.Verdict)
    reasons: tuple[str, ...]
    verified_at: datetime
    lines: tuple[VerdictLine, ...] = ()
    signer: str | None = None  # the party whose signature on the permit was verified
    permit_digest: str | None = None
    risk_channel: str | None = None
    risk_score: int | None = None


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


def build_endorsement(n: EndorsementNotice) -> etree._Element:
    e = n.endorsement
    children = [
        E.DocumentIssuer(n.issuer),
        E.DocumentNumber(n.number),
        E.DocumentVersion(str(n.version)),
        E.EndorsedBy(n.endorsed_by),
        E.Declaration(n.declaration),
        E.Reversal("true" if n.reversal else "false"),
    ]
    if n.office:
        children.append(E.Office(n.office))
    if e.port:
        children.append(E.Port(e.port))
    children.append(E.EndorsedAt(_iso(e.date)))
    if e.transport_document:
        children.append(E.TransportDocument(e.transport_document))
    if e.officer:
        children.append(E.Officer(e.officer))
    for line in e.lines:
        children.append(E.Line(E.Item(line.item_id), E.Quantity(_decimal_text(line.quantity), unitCode=line.unit)))
    return E.Endorsement(*children)


def read_endorsement(root: etree._Element) -> EndorsementNotice:
    """From the element that signature verification returned as signed."""
    if root.tag != _Q + "Endorsement":
        raise EpixError(ErrorCode.ENVELOPE_INVALID, f"Expected an Endorsement, found {etree.QName(root).localname}.")
    _check_schema(root, "endorsement")
    what = "endorsement"
    lines = []
    for line in root.iterchildren(_Q + "Line"):
        quantity = line.find(_Q + "Quantity")
        lines.append(
            EndorsedLine(item_id=_text(line, "Item", what), quantity=Decimal(quantity.text.strip()), unit=quantity.get("unitCode"))
        )
    return EndorsementNotice(
        issuer=_text(root, "DocumentIssuer", what),
        number=_text(root, "DocumentNumber", what),
        version=int(_text(root, "DocumentVersion", what)),
        endorsed_by=_text(root, "EndorsedBy", what),
        declaration=_text(root, "Declaration", what),
        reversal=_text(root, "Reversal", what) == "true",
        office=_text(root, "Office", what, required=False),
        endorsement=Endorsement(
            date=_when(root, "EndorsedAt", what),
            port=_text(root, "Port", what, required=False) or "",
            lines=tuple(lines),
            transport_document=_text(root, "TransportDocument", what, required=False),
            officer=_text(root, "Officer", what, required=False),
        ),
    )


def build_verdict(v: VerdictDocument) -> etree._Element:
    children = [
        E.VerificationId(v.verification_id),
        E.From(v.verified_by),
        E.DocumentIssuer(v.issuer),
        E.DocumentNumber(v.number),
        E.Result(v.result),
        *(E.Reason(r[:512]) for r in v.reasons),
        *(
            E.Line(
                E.Item(line.item_id),
                E.Permitted(_decimal_text(line.permitted), unitCode=line.unit),
                E.Remaining(_decimal_text(line.remaining), unitCode=line.unit),
            )
            for line in v.lines
        ),
    ]
    if v.signer:
        children.append(E.Signer(v.signer))
    if v.permit_digest:
        children.append(E.PermitDigest(v.permit_digest))
    if v.risk_channel:
        children += [E.RiskChannel(v.risk_channel), E.RiskScore(str(v.risk_score or 0))]
    children.append(E.VerifiedAt(_iso(v.verified_at)))
    return E.Verdict(*children)


# --- hub documents: requests of members, the pull list, the delivery report ----------------------

HUB_OPERATIONS = ("list", "fetch", "track")
DELIVERY_STATUSES = ("PendingDelivery", "Delivered", "DeliveredWithWarnings", "DeliveredNotReadable", "FailedDelivery")


@dataclass(frozen=True, slots=True)
class HubRequest:
    sender: str  # the member asking (and signing)
    receiver: str  # the hub
    operation: str  # list | fetch | track
    message_id: str | None
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class Waiting:
    message_id: str
    sender: str
    payload_digest: str


@dataclass(frozen=True, slots=True)
class PullList:
    sender: str  # the hub
    receiver: str  # the member
    waiting: tuple[Waiting, ...]


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    message_id: str
    sender: str  # the hub
    receiver: str  # the original sender, who asked
    final_receiver: str
    status: str  # one of DELIVERY_STATUSES (ePhyto Hub tracking)
    at: datetime
    detail: str | None = None
    receiver_answer: bytes | None = None  # the final receiver's signed Receipt or Error, as it made it


def build_hub_request(r: HubRequest) -> etree._Element:
    children = [E.From(r.sender), E.To(r.receiver), E.Operation(r.operation)]
    if r.message_id:
        children.append(E.MessageId(r.message_id))
    children.append(E.SentAt(_iso(r.sent_at)))
    return E.HubRequest(*children)


def read_hub_request(root: etree._Element) -> HubRequest:
    if root.tag != _Q + "HubRequest":
        raise EpixError(ErrorCode.ENVELOPE_INVALID, f"Expected a HubRequest, found {etree.QName(root).localname}.")
    _check_schema(root, "hub request")
    what = "hub request"
    return HubRequest(
        sender=_text(root, "From", what),
        receiver=_text(root, "To", what),
        operation=_text(root, "Operation", what),
        message_id=_text(root, "MessageId", what, required=False),
        sent_at=_when(root, "SentAt", what),
    )


def build_pull_list(p: PullList) -> etree._Element:
    return E.PullList(
        E.From(p.sender),
        E.To(p.receiver),
        *[E.Waiting(E.MessageId(w.message_id), E.Sender(w.sender), E.PayloadDigest(w.payload_digest)) for w in p.waiting],
    )


def read_pull_list(root: etree._Element) -> PullList:
    if root.tag != _Q + "PullList":
        raise EpixError(ErrorCode.RECEIPT_INVALID, f"Expected a PullList, found {etree.QName(root).localname}.")
    try:
        _check_schema(root, "pull list")
    except EpixError as exc:
        raise EpixError(ErrorCode.RECEIPT_INVALID, exc.detail) from None
    what = "pull list"
    waiting = tuple(
        Waiting(_text(w, "MessageId", what), _text(w, "Sender", what), _text(w, "PayloadDigest", what))
        for w in root.findall(_Q + "Waiting")
    )
    return PullList(sender=_text(root, "From", what), receiver=_text(root, "To", what), waiting=waiting)


def build_delivery_report(r: DeliveryReport) -> etree._Element:
    children = [
        E.MessageId(r.message_id),
        E.From(r.sender),
        E.To(r.receiver),
        E.Receiver(r.final_receiver),
        E.Status(r.status),
        E.At(_iso(r.at)),
    ]
    if r.detail:
        children.append(E.Detail(r.detail[:512]))
    if r.receiver_answer:
        children.append(E.ReceiverAnswer(base64.b64encode(r.receiver_answer).decode("ascii")))
    return E.DeliveryReport(*children)


def read_delivery_report(root: etree._Element) -> DeliveryReport:
    if root.tag != _Q + "DeliveryReport":
        raise EpixError(ErrorCode.RECEIPT_INVALID, f"Expected a DeliveryReport, found {etree.QName(root).localname}.")
    try:
        _check_schema(root, "delivery report")
    except EpixError as exc:
        raise EpixError(ErrorCode.RECEIPT_INVALID, exc.detail) from None
    what = "delivery report"
    answer = _text(root, "ReceiverAnswer", what, required=False)
    return DeliveryReport(
        message_id=_text(root, "MessageId", what),
        sender=_text(root, "From", what),
        receiver=_text(root, "To", what),
        final_receiver=_text(root, "Receiver", what),
        status=_text(root, "Status", what),
        at=_when(root, "At", what),
        detail=_text(root, "Detail", what, required=False),
        receiver_answer=base64.b64decode(answer) if answer else None,
    )
