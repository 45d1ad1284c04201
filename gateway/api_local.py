"""The local API for Management Authority systems and operators (bearer tokens, country scope)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from decimal import Decimal

from aiohttp import web

from adapters.cites_read import read_permit
from adapters.exchange_xml import is_party_id
from adapters.permit_json import permit_from_json, read_datetime
from adapters.schema import permit_schema
from adapters.xmlparse import XmlLimits, parse_xml
from domain import rules
from domain.errors import EpixError, ErrorCode
from domain.messages import Direction, MessageStatus
from gateway import appkeys, paths
from gateway.bodies import json_body
from gateway.logs import get_logger
from gateway.middleware import principal, require_role
from gateway.outbound import Accepted
from gateway.store.base import MAX_PAGE, MessageEvent, MessageFilter, MessageRecord, PermitRecord
from gateway.store.retention import RETENTION_ACTOR

log = get_logger("epix.api")
routes = web.RouteTableDef()
JSON_TYPES = ("application/json",)
XML_TYPES = ("application/xml", "text/xml")
# The Idempotency-Key draft's value is a structured-field string: printable ASCII. Anything else
# (a control character, bytes that are not UTF-8) could not be stored as the key it was meant as.
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,200}")


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def message_view(m: MessageRecord) -> dict:
    return {
        "message_id": m.message_id,
        "conversation_id": m.conversation_id,
        "direction": m.direction.value,
        "sender": m.sender,
        "receiver": m.receiver,
        "via": m.via,
        "document_type": m.document_type,
        "action": m.action.value,
        "issuer": m.issuer,
        "number": m.number,
        "version": m.version,
        "status": m.status.value,
        "attempts": m.attempts,
        "next_attempt_at": m.next_attempt_at.isoformat() if m.next_attempt_at and not m.status.final else None,
        "last_error": {"code": m.last_error_code, "detail": m.last_error_detail} if m.last_error_code else None,
        "created_at": m.created_at.isoformat(),
        "updated_at": m.updated_at.isoformat(),
        "status_url": f"/v1/messages/{m.message_id}",
    }


def payload_view(m: MessageRecord, events: list[MessageEvent]) -> dict:
    """Whether the document the message carried is still held; if the retention policy removed
    it, when and by which run (the digest stays: it is what the receipt names)."""
    if m.payload is not None:
        return {"held": True, "digest": m.payload_digest}
    removed = next((e for e in reversed(events) if e.actor == RETENTION_ACTOR), None)
    return {
        "held": False,
        "digest": m.payload_digest,
        "removed_at": removed.at.isoformat() if removed else None,
        "detail": removed.detail if removed else "The payload is not held by this gateway.",
    }


def _not_held(request: web.Request, message_id: str) -> EpixError:
    sentence = f"No message {message_id} is known to this gateway."
    days = request.app[appkeys.CONFIG].retention.message_days
    if days is not None:
        sentence += f" Final messages are purged {days} days after their last change (retention.message_days)."
    return EpixError(ErrorCode.NOT_FOUND, sentence, message_id=message_id)


def _payload_removed(message_id: str) -> EpixError:
    return EpixError(
        ErrorCode.CONFLICT,
        f"Message {message_id} cannot be sent again: the retention policy removed its payload "
        f"(GET /v1/messages/{message_id} says when). Submit the permit again to send it under a new message id.",
        message_id=message_id,
    )


async def inbox_item(store, m: MessageRecord) -> dict:
    """What the local MA system gets for a received message: the message and, for a permit, its content."""
    item = message_view(m)
    versions = await store.get_permit_versions(m.issuer, m.number)
    match = [v for v in versions if v.version == m.version and v.direction is Direction.INBOUND]
    item["permit"] = json.loads(match[-1].permit_json) if match and m.action.value != "cancel" else None
    item["permit_status"] = match[-1].status if match else None
    item["ack_url"] = f"/v1/inbox/{m.message_id}/ack"
    return item


def _accepted_view(a: Accepted) -> dict:
    return {
        "issuer": a.issuer,
        "number": a.number,
        "version": a.version,
        "permit_url": paths.permit_url(a.issuer, a.number),
        "replayed": a.replayed,
        "messages": [message_view(m) for m in a.messages],
        "warnings": [
            {"code": p.code, "path": p.path, "message": p.message} for p in a.warnings
        ],
    }


def _media_type(request: web.Request) -> str:
    return request.content_type.lower()


async def _read_body(request: web.Request) -> bytes:
    body = await request.read()
    if not body:
        raise EpixError(ErrorCode.JSON_MALFORMED if _media_type(request) in JSON_TYPES else ErrorCode.XML_MALFORMED, "The request body is empty.")
    return body


def _permit_from_body(request: web.Request, body: bytes, max_bytes: int):
    media = _media_type(request)
    if media in JSON_TYPES:
        return permit_from_json(body)
    if media in XML_TYPES:
        tree = parse_xml(body, limits=XmlLimits(max_bytes=max_bytes), what="permit")
        permit_schema().validate(tree)
        return read_permit(tree)
    raise EpixError(
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        f"Send the permit as application/json or application/xml, not {media or 'an unnamed type'}.",
    )


@routes.post("/v1/permits")
async def submit_permit(request: web.Request) -> web.Response:
    token = require_role(request, "ma", "operator")
    config = request.app[appkeys.CONFIG]
    body = await _read_body(request)
    permit = _permit_from_body(request, body, config.max_body_bytes)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise EpixError(
            ErrorCode.JSON_MALFORMED,
            "The Idempotency-Key header must be 1 to 200 printable ASCII characters (letters, digits, punctuation, "
            "spaces), e.g. a UUID.",
        )
    accepted = await request.app[appkeys.OUTBOUND].submit(
        permit, principal=token, idempotency_key=key, request_hash=hashlib.sha256(body).hexdigest()
    )
    request.app[appkeys.METRICS].submitted.labels("replace" if permit.replaces else "issue").inc()
    return _json(_accepted_view(accepted), status=202)


@routes.post(paths.PERMIT + "/cancel")
async def cancel_permit(request: web.Request) -> web.Response:
    token = require_role(request, "ma", "operator")
    issuer, number = paths.permit_key(request)
    reason = "Cancelled by the issuing Management Authority."
    data = await json_body(request, "cancellation", optional=True)
    if data is not None:
        if not isinstance(data, dict) or not isinstance(data.get("reason", reason), str):
            raise EpixError(ErrorCode.JSON_MALFORMED, "The cancellation body must be JSON like {\"reason\": \"...\"}.")
        reason = (data.get("reason") or reason).strip()[:500] or reason
        problems = rules.text_problems(reason, "The cancellation reason")  # it travels in the signed notice
        if problems:
            raise EpixError(ErrorCode.JSON_MALFORMED, problems[0], field="reason")
    accepted = await request.app[appkeys.OUTBOUND].cancel(issuer, number, reason=reason, principal=token)
    request.app[appkeys.METRICS].submitted.labels("cancel").inc()
    return _json(_accepted_view(accepted), status=202)


def _check_permit_scope(request: web.Request, issuer: str, versions: list[PermitRecord]) -> None:
    token = principal(request)
    party = request.app[appkeys.CONFIG].party
    if token.role == "operator" or token.covers(issuer):
        return
    if any(v.direction is Direction.INBOUND for v in versions) and token.covers(party):
        return
    raise EpixError(ErrorCode.FORBIDDEN, f"Token {token.name!r} may not read permits of {issuer}.")


async def _versions(request: web.Request) -> tuple[str, str, list[PermitRecord]]:
    # Customs reads permits through the verification, which answers only for permits addressed to
    # the token (NOT_ADDRESSED_TO_YOU otherwise) and audits every question; this view would give
    # any permit received here, its deliveries and signed XML, unaudited.
    require_role(request, "ma", "operator")
    issuer, number = paths.permit_key(request)
    versions = await request.app[appkeys.STORE].get_permit_versions(issuer, number)
    if not versions:
        raise EpixError(ErrorCode.NOT_FOUND, f"No permit {issuer}/{number} is known to this gateway.")
    _check_permit_scope(request, issuer, versions)
    return issuer, number, versions


@routes.get(paths.PERMIT)
async def get_permit(request: web.Request) -> web.Response:
    issuer, number, versions = await _versions(request)
    latest = versions[-1]
    deliveries = await request.app[appkeys.STORE].messages_for_permit(issuer, number)
    return _json(
        {
            "issuer": issuer,
            "number": number,
            "status": latest.status,
            "direction": latest.direction.value,
            "replaces": latest.replaces,
            "replaced_by": latest.replaced_by,
            "versions": [
                {
                    "version": v.version,
                    "status": v.status,
                    "direction": v.direction.value,
                    "sender": v.sender,
                    "digest": v.digest,
                    "created_at": v.created_at.isoformat(),
                }
                for v in versions
            ],
            "permit": json.loads(latest.permit_json),
            "xml_url": paths.permit_url(issuer, number, "xml"),
            "messages": [message_view(m) for m in deliveries],
        }
    )


@routes.get(paths.PERMIT + "/xml")
async def get_permit_xml(request: web.Request) -> web.Response:
    _, _, versions = await _versions(request)
    return web.Response(body=versions[-1].signed_xml, content_type="application/xml", charset="utf-8")


def _message_scope(request: web.Request) -> None:
    token = require_role(request, "ma", "operator")
    if token.role != "operator" and not token.covers(request.app[appkeys.CONFIG].party):
        raise EpixError(ErrorCode.FORBIDDEN, f"Token {token.name!r} may not read this gateway's messages.")


@routes.get("/v1/messages/{message_id}")
async def get_message(request: web.Request) -> web.Response:
    _message_scope(request)
    store = request.app[appkeys.STORE]
    message_id = paths.message_key(request)
    message = await store.get_message(message_id)
    if message is None:
        raise _not_held(request, message_id)
    events = await store.message_events(message_id)
    view = message_view(message)
    view["payload"] = payload_view(message, events)
    if message.via:
        report = await store.delivery_report(message_id)
        view["delivery"] = (
            {"status": report.status, "reported_by": report.reporter, "detail": report.detail, "at": report.updated_at.isoformat()}
            if report
            else {"status": "PendingDelivery" if message.status is MessageStatus.ACKNOWLEDGED else None, "reported_by": None}
        )
    view["events"] = [
        {
            "seq": e.seq,
            "at": e.at.isoformat(),
            "status": e.status.value,
            "actor": e.actor,
            "detail": e.detail,
            "error_code": e.error_code,
        }
        for e in events
    ]
    return _json(view)


def _enum_param(request: web.Request, name: str, enum):
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return enum(raw)
    except ValueError:
        raise EpixError(
            ErrorCode.JSON_MALFORMED,
            f"Query parameter {name}={raw!r} is not one of {[e.value for e in enum]}.",
        ) from None


FILTERS = ("status", "direction", "sender", "receiver", "issuer", "number")  # kept in the next link
MESSAGE_QUERY = frozenset((*FILTERS, "limit", "before", "before_id"))


def _count(query, name: str, *, default: int, maximum: int) -> int:
    """A query parameter that counts something, 1 to ``maximum``: ASCII digits only (int() also
    takes "1_000", " 5" and other scripts' digits), and out of range refused rather than clamped,
    so that a client never takes a page of another size for the one it asked for."""
    raw = query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 7 and 1 <= int(raw) <= maximum):
        raise EpixError(ErrorCode.JSON_MALFORMED, f"Query parameter {name}={paths.shown(raw)} must be a whole number from 1 to {maximum}.")
    return int(raw)


def _check_filters(filters: dict[str, str]) -> None:
    """A filter no message can match is a mistake to report (and a NUL would reach PostgreSQL)."""
    for name in ("sender", "receiver"):
        if name in filters and not is_party_id(filters[name]):
            raise EpixError(
                ErrorCode.JSON_MALFORMED,
                f"Query parameter {name}={paths.shown(filters[name])} is not a party: 2 to 64 letters, digits, '.', '_' "
                "or '-', e.g. CH or HUB-AF.",
            )
    if "issuer" in filters and filters["issuer"] not in paths.ISSUERS:
        raise EpixError(
            ErrorCode.JSON_MALFORMED,
            f"Query parameter issuer={paths.shown(filters['issuer'])} is not an issuer: the ISO 3166-1 alpha-2 code of "
            "the issuing country, e.g. CH.",
        )
    if "number" in filters and (problems := rules.number_problems(filters["number"])):
        raise EpixError(ErrorCode.JSON_MALFORMED, f"Query parameter number: {problems[0].message}")


@routes.get("/v1/messages")
async def list_messages(request: web.Request) -> web.Response:
    _message_scope(request)
    q = request.query
    paths.refuse_unknown_query(request, MESSAGE_QUERY, "the message list")
    limit = _count(q, "limit", default=100, maximum=MAX_PAGE)
    before = read_datetime(q["before"], "before") if "before" in q else None
    before_id = q.get("before_id")
    if before_id is not None:
        if before is None:
            raise EpixError(ErrorCode.JSON_MALFORMED, "before_id continues a page: send it with before, as the next link does.")
        problems = rules.text_problems(before_id, "before_id", limit=paths.MAX_MESSAGE_ID)
        if problems:
            raise EpixError(ErrorCode.JSON_MALFORMED, f"{problems[0]} It is the message id the next link names.")
    filters = {name: q[name] for name in FILTERS if name in q}
    _check_filters(filters)
    f = MessageFilter(
        status=_enum_param(request, "status", MessageStatus),
        direction=_enum_param(request, "direction", Direction),
        sender=q.get("sender"),
        receiver=q.get("receiver"),
        issuer=q.get("issuer"),
        number=q.get("number"),
        limit=limit,
        before=before,
        before_id=before_id,
    )
    messages = await request.app[appkeys.STORE].list_messages(f)
    page = {"messages": [message_view(m) for m in messages]}
    if len(messages) == limit:
        # The page ends at the last row's (created_at, message_id): messages created in the same
        # microsecond (a replacement's, one per receiver) are neither skipped nor shown twice.
        last = messages[-1]
        cursor = {"limit": limit, "before": last.created_at.isoformat(), "before_id": last.message_id}
        page["next"] = paths.query_url("/v1/messages", {**filters, **cursor})
    return _json(page)


RETRYABLE = (MessageStatus.SEND_FAILURE, MessageStatus.REJECTED)


async def _requeue(store, message_id: str, token) -> MessageRecord:
    return await store.transition(
        message_id,
        MessageStatus.SEND_ENQUEUED,
        actor=f"operator:{token.name}",
        detail="manual retry by an operator (same message id)",
        next_attempt_at=datetime.now(timezone.utc),
    )


async def _unpark(request: web.Request, retried: list[MessageRecord]) -> int | None:
    """Drop the retried messages' entries from the broker's parking queues (RabbitMQ; nothing to
    do on the embedded queue): how many went, or None when the broker could not be asked. The
    retry stands either way, as the store decides what is sent; the next retry drops them."""
    if not retried:
        return 0
    try:
        return await request.app[appkeys.DELIVERY].queue.unpark(retried)
    except Exception as exc:  # noqa: BLE001 -- the retry is committed; a broker outage must not undo the answer
        log.warning("retry.unpark_failed", count=len(retried), error=f"{type(exc).__name__}: {exc}")
        return None


@routes.post("/v1/messages/{message_id}/retry")
async def retry_message(request: web.Request) -> web.Response:
    token = require_role(request, "operator")
    store = request.app[appkeys.STORE]
    message_id = paths.message_key(request)
    message = await store.get_message(message_id)
    if message is None:
        raise _not_held(request, message_id)
    if message.status not in RETRYABLE:
        raise EpixError(
            ErrorCode.CONFLICT,
            f"Message {message_id} is {message.status.value}; only SEND_FAILURE or REJECTED messages can be retried.",
            status=message.status.value,
        )
    if message.payload is None:
        raise _payload_removed(message_id)
    updated = await _requeue(store, message_id, token)
    request.app[appkeys.DELIVERY].wake()
    await _unpark(request, [updated])
    return _json(message_view(updated), status=202)


@routes.post("/v1/messages/retry")
async def retry_many(request: web.Request) -> web.Response:
    """Operator: replay parked (or rejected) messages in bulk, e.g. after a partner's long outage;
    each keeps its message id, so receivers that already hold one answer with the same receipt.
    The store says what is parked; on RabbitMQ the parking queues only mirror it, and lose the
    replayed messages' entries once they are queued again (``unparked``)."""
    token = require_role(request, "operator")
    query = await json_body(request, "retry selection", optional=True)
    query = {} if query is None else query
    if not isinstance(query, dict) or set(query) - {"status", "receiver", "limit"}:
        raise EpixError(
            ErrorCode.JSON_MALFORMED,
            'Send {"status": "SEND_FAILURE" or "REJECTED", "receiver": "<party>", "limit": 1..1000} (all optional).',
        )
    status = query.get("status", MessageStatus.SEND_FAILURE.value)
    receiver = query.get("receiver")
    limit = query.get("limit", Decimal(500))
    if status not in [s.value for s in RETRYABLE]:
        raise EpixError(ErrorCode.JSON_MALFORMED, "status must be \"SEND_FAILURE\" or \"REJECTED\".")
    if receiver is not None and not (isinstance(receiver, str) and is_party_id(receiver)):
        raise EpixError(ErrorCode.JSON_MALFORMED, "receiver must be a party such as \"FR\" or \"HUB-AF\".")
    # Numbers arrive as exact Decimals: true is not 1, and 2.5 is not 2.
    if not (isinstance(limit, Decimal) and limit == limit.to_integral_value() and 1 <= limit <= MAX_PAGE):
        raise EpixError(ErrorCode.JSON_MALFORMED, f"limit must be a whole number from 1 to {MAX_PAGE}.")
    store = request.app[appkeys.STORE]
    found = await store.list_messages(
        MessageFilter(status=MessageStatus(status), direction=Direction.OUTBOUND, receiver=receiver, limit=int(limit))
    )
    retried = []
    for message in found:
        if message.payload is None:  # the retention policy removed it: nothing left to send
            continue
        try:
            retried.append(await _requeue(store, message.message_id, token))
        except EpixError as exc:
            if exc.code is not ErrorCode.CONFLICT:  # another operator or sender moved it meanwhile
                raise
    request.app[appkeys.DELIVERY].wake()
    unparked = await _unpark(request, retried)
    removed = [m.message_id for m in found if m.payload is None]
    return _json(
        {"retried": [m.message_id for m in retried], "count": len(retried), "unparked": unparked, "payload_removed": removed},
        status=202,
    )


@routes.get("/v1/inbox")
async def inbox(request: web.Request) -> web.Response:
    token = require_role(request, "ma", "operator")
    party = request.app[appkeys.CONFIG].party
    if not token.covers(party) and token.role != "operator":
        raise EpixError(ErrorCode.FORBIDDEN, f"Token {token.name!r} may not read the inbox of {party}.")
    paths.refuse_unknown_query(request, paths.LIMIT_ONLY, "the inbox")
    limit = _count(request.query, "limit", default=100, maximum=500)
    store = request.app[appkeys.STORE]
    return _json({"messages": [await inbox_item(store, m) for m in await store.inbox(party, limit=limit)]})


@routes.post("/v1/inbox/{message_id}/ack")
async def ack_inbox(request: web.Request) -> web.Response:
    token = require_role(request, "ma", "operator")
    store = request.app[appkeys.STORE]
    message_id = paths.message_key(request)
    message = await store.get_message(message_id)
    if message is None or message.direction is not Direction.INBOUND:
        raise EpixError(ErrorCode.NOT_FOUND, f"No inbound message {message_id} is in the inbox.")
    if token.role != "operator" and not token.covers(message.receiver):
        raise EpixError(ErrorCode.FORBIDDEN, f"Token {token.name!r} may not acknowledge messages for {message.receiver}.")
    updated = await store.ack_inbox(message_id, actor=f"ma:{token.name}")
    return _json(message_view(updated))
