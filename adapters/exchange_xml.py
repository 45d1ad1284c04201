"""The hop envelope, the receipt and the error signal of the exchange protocol (docs/PROTOCOL.md).

The signed permit travels base64-encoded inside the envelope so that its bytes, and with them the
issuing Management Authority's signature, arrive exactly as they were signed, across any number
of hops. The envelope, the receipt and the error are each signed by the gateway that made them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from lxml import etree
from lxml.builder import ElementMaker

from adapters.ns import EXCHANGE
from adapters.xmlparse import parse_xml
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
class SignalProblem:
    code: str
    path: str | None
    message: str


@dataclass(frozen=True, slots=True)
class ErrorSignal:
    message_id: str | None
    sender: str
    receiver: str | None
    code: str
    message: str
    retryable: bool
    at: datetime
    problems: tuple[SignalProblem, ...] = ()

    def describe(self, who: str) -> str:
        """What the sender's history says: the refusal and every problem named in it."""
        text = f"{who} refused it: {self.code}: {self.message}"
        if self.problems:
            text += " Problems: " + "; ".join(
                f"{p.code}{f' at {p.path}' if p.path else ''}: {p.message}" for p in self.problems
            )
        return text


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


# --- the two documents of every exchange, as bytes -------------------------------------------------
#
# ``envelope_xml`` and ``receipt_xml`` write exactly the bytes ``etree.tostring`` writes for
# ``build_envelope`` / ``build_receipt`` (with the XML declaration, as the signer serialises an
# element), from a fixed template: building fifteen elements one by one cost more than a quarter
# of the RSA signature that follows. Every value is escaped as lxml escapes text, and refused as
# lxml refuses it (ValueError) when XML cannot hold it; tests hold both writers to the same bytes
# and the schema.

_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>\n"
_DECLARATION_BYTES = _DECLARATION.encode("ascii")
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(value: str) -> str:
    """Text content escaped as lxml serialises it: &, <, > and carriage return."""
    if _NOT_XML_CHAR.search(value):
        raise ValueError("All strings must be XML compatible: Unicode or ASCII, no NULL bytes or control characters")
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if "\r" in value:
        value = value.replace("\r", "&#13;")
    return value


def canonical_form(document: bytes) -> bytes | None:
    """The exclusive C14N of a document ``envelope_xml`` or ``receipt_xml`` wrote, without parsing
    it: the same bytes after the XML declaration. The templates declare the one namespace on the
    root, write every element with a start and an end tag and escape text as C14N does, but for
    a carriage return (lxml's ``&#13;``, C14N's ``&#xD;``): then None, and the signer parses."""
    if not document.startswith(_DECLARATION_BYTES) or b"&#13;" in document:
        return None
    return document[len(_DECLARATION_BYTES) :]


def envelope_xml(header: EnvelopeHeader, payload: bytes, *, sent_at: datetime, relayed_by: str | None = None) -> bytes:
    """``build_envelope`` serialised: UTF-8 bytes with the XML declaration, ready to sign."""
    relay = f"<ex:RelayedBy>{_x(relayed_by)}</ex:RelayedBy>" if relayed_by else ""
    head = (
        f'{_DECLARATION}<ex:Envelope xmlns:ex="{EXCHANGE}"><ex:Header>'
        f"<ex:MessageId>{_x(header.message_id)}</ex:MessageId>"
        f"<ex:ConversationId>{_x(header.conversation_id)}</ex:ConversationId>"
        f"<ex:From>{_x(header.sender)}</ex:From>"
        f"<ex:To>{_x(header.receiver)}</ex:To>"
        f"<ex:DocumentType>{_x(header.document_type)}</ex:DocumentType>"
        f"<ex:DocumentIssuer>{_x(header.document_issuer)}</ex:DocumentIssuer>"
        f"<ex:DocumentNumber>{_x(header.document_number)}</ex:DocumentNumber>"
        f"<ex:DocumentVersion>{_x(str(header.document_version))}</ex:DocumentVersion>"
        f"<ex:Action>{_x(header.action.value)}</ex:Action>"
        f"<ex:CreatedAt>{_x(_iso(header.created_at))}</ex:CreatedAt>"
        f"<ex:SentAt>{_x(_iso(sent_at))}</ex:SentAt>"
        f"<ex:PayloadDigest>{payload_digest(payload)}</ex:PayloadDigest>"
        f"{relay}</ex:Header><ex:Payload>"
    )
    # base64 needs no escaping: its alphabet is letters, digits, '+', '/' and '='.
    return head.encode("utf-8") + binascii.b2a_base64(payload, newline=False) + b"</ex:Payload></ex:Envelope>"


def receipt_xml(r: Receipt) -> bytes:
    """``build_receipt`` serialised: UTF-8 bytes with the XML declaration, ready to sign."""
    return (
        f'{_DECLARATION}<ex:Receipt xmlns:ex="{EXCHANGE}">'
        f"<ex:MessageId>{_x(r.message_id)}</ex:MessageId>"
        f"<ex:From>{_x(r.sender)}</ex:From>"
        f"<ex:To>{_x(r.receiver)}</ex:To>"
        f"<ex:ReceivedAt>{_x(_iso(r.received_at))}</ex:ReceivedAt>"
        f"<ex:PayloadDigest>{_x(r.payload_digest)}</ex:PayloadDigest>"
        f"<ex:Status>{_x(r.status)}</ex:Status>"
        "</ex:Receipt>"
    ).encode("utf-8")


def build_receipt(r: Receipt) -> etree._Element:
    return E.Receipt(
        E.MessageId(r.message_id),
        E.From(r.sender),
        E.To(r.receiver),
        E.ReceivedAt(_iso(r.received_at)),
        E.PayloadDigest(r.payload_digest),
        E.Status(r.status),
    )


MAX_PROBLEMS = 64  # as the schema allows


def build_error(err: ErrorSignal) -> etree._Element:
    children = []
    if err.message_id:
        children.append(E.MessageId(err.message_id))
    children.append(E.From(err.sender))
    if err.receiver:
        children.append(E.To(err.receiver))
    children += [E.Code(err.code), E.Message(err.message)]
    for p in err.problems[:MAX_PROBLEMS]:
        children.append(E.Problem(p.message, code=p.code, **({"path": p.path} if p.path else {})))
    children += [E.Retryable("true" if err.retryable else "false"), E.At(_iso(err.at))]
    return E.Error(*children)


def signal_problems(problems: object) -> tuple[SignalProblem, ...]:
    """An EpixError's ``problems`` context (dicts with code, path, message) as the schema bounds them."""
    if not isinstance(problems, (list, tuple)):
        return ()
    out = []
    for p in problems[:MAX_PROBLEMS]:
        if isinstance(p, dict) and p.get("code") and p.get("message"):
            path = str(p.get("path") or "")[:256] or None
            out.append(SignalProblem(str(p["code"])[:64], path, str(p["message"])[:512]))
    return tuple(out)


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


@lru_cache(maxsize=1)
def _envelope_schema() -> etree.XMLSchema:
    """The exchange schema with the envelope's Payload typed ``xs:string`` instead of
    ``xs:base64Binary``; ``read_envelope`` holds the payload to more than base64Binary instead.

    libxml2 checks base64Binary character by character, which for a permit-sized payload cost
    as much as the rest of the envelope's schema check together. Every other field is checked
    by the very same declarations.
    """
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False)
    doc = etree.parse(str(SCHEMA_PATH), parser)
    xs = {"xs": "http://www.w3.org/2001/XMLSchema"}
    payloads = doc.xpath("/xs:schema/xs:element[@name='Envelope']//xs:element[@name='Payload'][@type='xs:base64Binary']", namespaces=xs)
    if len(payloads) != 1:  # pragma: no cover - the schema changed under this module
        raise RuntimeError("exchange-1.xsd: the Envelope's Payload is no longer one xs:base64Binary element")
    payloads[0].set("type", "xs:string")
    return etree.XMLSchema(doc)


def _check_schema(root: etree._Element, what: str, schema: etree.XMLSchema | None = None) -> None:
    schema = schema or exchange_schema()
    if not schema.validate(root):
        errs = [f"line {e.line}: {e.message}" for e in schema.error_log]
        raise EpixError(
            ErrorCode.ENVELOPE_INVALID,
            f"The {what} does not match the exchange schema: {errs[0] if errs else 'unknown error'}",
            errors=errs[:20],
        )


def _children(parent: etree._Element) -> dict[str, str | None]:
    """Each child element's text by tag, the first of each tag as ``find`` would pick it: one
    pass over the children instead of one path search per field (a few microseconds each)."""
    texts: dict[str, str | None] = {}
    for el in parent.iterchildren(tag=etree.Element):
        texts.setdefault(el.tag, el.text)
    return texts


def _text(root: etree._Element | dict[str, str | None], name: str, what: str, *, required: bool = True) -> str | None:
    if isinstance(root, dict):
        raw = root.get(_Q + name)
    else:
        el = root.find(_Q + name)
        raw = el.text if el is not None else None
    value = raw.strip() if raw else None
    if required and not value:
        raise EpixError(ErrorCode.ENVELOPE_INVALID, f"The {what} has no {name}.", field=name)
    return value


def _when(root: etree._Element | dict[str, str | None], name: str, what: str) -> datetime:
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
    _check_schema(root, "envelope", _envelope_schema())
    h = _children(root.find(_Q + "Header"))
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
    payload = _canonical_base64(_text(root, "Payload", what))
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


def _canonical_base64(text: str) -> bytes:
    """The bytes of a Payload, which must be their canonical base64: one line, no whitespace
    inside, padded, and the unused bits of the last group zero. That is the only form senders
    write (``build_envelope``), and a strict subset of ``xs:base64Binary``: anything the full
    schema would refuse (a stray character, bad padding, non-zero trailing bits) is refused here,
    as is what base64Binary allows but the payload reader never took (whitespace inside)."""
    try:
        raw = text.encode("ascii")
        payload = binascii.a2b_base64(raw)
    except (binascii.Error, ValueError):
        raise EpixError(ErrorCode.ENVELOPE_INVALID, "The envelope's Payload is not valid base64.") from None
    # a2b_base64 skips what is not base64; encoding back and comparing refuses all of that too.
    if binascii.b2a_base64(payload, newline=False) != raw:
        raise EpixError(ErrorCode.ENVELOPE_INVALID, "The envelope's Payload is not valid base64.")
    return payload


def read_receipt(root: etree._Element) -> Receipt:
    if root.tag != _Q + "Receipt":
        raise EpixError(ErrorCode.RECEIPT_INVALID, f"Expected a Receipt, found {etree.QName(root).localname}.")
    try:
        _check_schema(root, "receipt")
    except EpixError as exc:
        raise EpixError(ErrorCode.RECEIPT_INVALID, exc.detail) from None
    what = "receipt"
    fields = _children(root)
    return Receipt(
        message_id=_text(fields, "MessageId", what),
        sender=_text(fields, "From", what),
        receiver=_text(fields, "To", what),
        received_at=_when(fields, "ReceivedAt", what),
        payload_digest=_text(fields, "PayloadDigest", what),
        status=_text(fields, "Status", what),
    )


def answer_signed_at(data: bytes) -> datetime | None:
    """The time a partner's answer says it was made (a receipt's ReceivedAt, an error signal's
    At), read without checking its signature; None when it is neither or is unreadable."""
    try:
        root = parse_xml(data).getroot()
        if root.tag == _Q + "Receipt":
            return read_receipt(root).received_at
        if root.tag == _Q + "Error":
            return read_error(root).at
    except EpixError:
        return None
    return None


def read_error(root: etree._Element) -> ErrorSignal:
    if root.tag != _Q + "Error":
        raise EpixError(ErrorCode.RECEIPT_INVALID, f"Expected an Error, found {etree.QName(root).localname}.")
    try:
        _check_schema(root, "error signal")  # bounds what a partner can make us record (64 problems)
    except EpixError as exc:
        raise EpixError(ErrorCode.RECEIPT_INVALID, exc.detail) from None
    what = "error signal"
    return ErrorSignal(
        message_id=_text(root, "MessageId", what, required=False),
        sender=_text(root, "From", what),
        receiver=_text(root, "To", what, required=False),
        code=_text(root, "Code", what),
        message=_text(root, "Message", what),
        retryable=_text(root, "Retryable", what) == "true",
        at=_when(root, "At", what),
        problems=tuple(
            SignalProblem(p.get("code", ""), p.get("path"), (p.text or "").strip()) for p in root.iterfind(_Q + "Problem")
        ),
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


_PARTY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,63}")


def is_party_id(value: str | None) -> bool:
    """Whether ``value`` fits the protocol's PartyId type (so it may be echoed into a signed document)."""
    return bool(value) and _PARTY_ID.fullmatch(value) is not None
