"""Endpoints partner gateways (and hubs) talk to. Authentication is the envelope signature itself."""

from __future__ import annotations

from aiohttp import web

from domain.errors import EpixError, ErrorCode
from domain.messages import Direction
from gateway import appkeys, paths
from gateway.hub import ACK_PATH, PULL_PATH, TRACK_PATH, HubDesk
from keys.pki import cert_to_pem

routes = web.RouteTableDef()
XML = "application/xml"


async def _read(request: web.Request, what: str) -> bytes:
    """The body, or XML_TOO_LARGE: announced too long, or found so while read (a chunked body
    has no length; aiohttp stops it at client_max_size)."""
    limit = request.app[appkeys.CONFIG].max_body_bytes
    if request.content_length is None or request.content_length <= limit:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            pass
    raise EpixError(ErrorCode.XML_TOO_LARGE, f"The {what} is larger than {limit} bytes.")


@routes.post("/exchange/v1/messages")
async def receive(request: web.Request) -> web.Response:
    inbound = request.app[appkeys.INBOUND]
    try:
        body = await _read(request, "envelope")
    except EpixError as err:
        return web.Response(body=inbound.error_document(err, None, None), status=err.status, content_type=XML)
    answer = await inbound.receive(body)
    outcome = "duplicate" if answer.duplicate else ("received" if answer.status == 200 else "refused")
    request.app[appkeys.METRICS].inbound.labels(outcome).inc()
    return web.Response(body=answer.body, status=answer.status, content_type=XML)


@routes.get("/exchange/v1/messages/{message_id}")
async def tracking(request: web.Request) -> web.Response:
    """The signed receipt of a message we received: lets a sender recover a lost answer."""
    store, message_id = request.app[appkeys.STORE], paths.message_key(request)
    message = await store.get_message(message_id)
    if message is None:  # perhaps content resent under a new id: it has a receipt of its own
        alias = await store.get_alias(message_id)
        if alias is not None:
            return web.Response(body=alias.receipt, content_type=XML)
    if message is None or message.direction is not Direction.INBOUND or message.receipt is None:
        raise EpixError(ErrorCode.NOT_FOUND, "No message with that id was received here.")
    return web.Response(body=message.receipt, content_type=XML)


@routes.get("/exchange/v1/directory")
async def directory(request: web.Request) -> web.Response:
    """Who this gateway is and whom it exchanges with, with the certificates it signs with."""
    config = request.app[appkeys.CONFIG]
    security = request.app[appkeys.SECURITY]
    return web.json_response(
        {
            "party": config.party,
            "role": config.role,
            "certificate_pem": security.certificate_pem.decode("ascii"),
            # Renewed from (keys renew): what this gateway signed before still carries these.
            "previous_certificates_pem": [cert_to_pem(c).decode("ascii") for c in security.previous_certificates],
            "partners": [
                {
                    "party": a.party,
                    "role": a.role,
                    "via": a.via,
                    "documents": sorted(a.documents),
                    "delivery": a.delivery,
                }
                for a in config.agreements
            ],
        }
    )


# --- pull and tracking (docs/PROTOCOL.md §6, §7): a member authenticates by signing its request --


async def _at_desk(request: web.Request, operation) -> web.Response:
    """``operation(desk, body)``; a body too large gets the desk's signed refusal (§6: its errors
    are signed error signals like every other answer of the exchange)."""
    desk = HubDesk(request.app[appkeys.CONFIG], request.app[appkeys.STORE], request.app[appkeys.SECURITY])
    try:
        body = await _read(request, "request")
    except EpixError as err:
        return _desk_response(desk.refuse(err))
    return _desk_response(await operation(desk, body))


def _desk_response(answer) -> web.Response:
    if answer.status == 204:
        return web.Response(status=204)
    return web.Response(body=answer.body, status=answer.status, content_type=XML)


@routes.post(PULL_PATH)
async def pull(request: web.Request) -> web.Response:
    """A signed HubRequest ``list`` (what is held for the member) or ``fetch`` (one held envelope)."""
    return await _at_desk(request, HubDesk.request)


@routes.post(TRACK_PATH)
async def track(request: web.Request) -> web.Response:
    """A signed HubRequest ``track``: the original sender asks where its relayed message is."""
    return await _at_desk(request, HubDesk.request)


@routes.post(ACK_PATH)
async def acknowledge(request: web.Request) -> web.Response:
    """The pulling member's own signed Receipt or Error for a fetched envelope; 204 when taken."""
    return await _at_desk(request, HubDesk.acknowledge)
