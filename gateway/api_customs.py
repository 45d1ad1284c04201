"""The customs single window's HTTP API (bearer token with role customs; see docs/CUSTOMS.md).

GET  /v1/verifications/{issuer}/{number}[?stamp=&office=]   verdict (JSON, or signed XML with
                                                            Accept: application/xml or ?format=xml)
GET  /v1/verifications/{issuer}/{number}/history            the audit history of verifications
POST /v1/permits/{issuer}/{number}/write-offs               write off a declaration's quantities
POST /v1/permits/{issuer}/{number}/write-offs/{declaration}/reversal   give them back
GET  /v1/permits/{issuer}/{number}/quantities               permitted against actual, per line
POST /epix/v2                                               EPIX Connect-compatible SOAP facade

{number} and {declaration} are one percent-encoded path segment each (gateway/paths.py).
"""

from __future__ import annotations

from aiohttp import web

from domain import rules
from domain.errors import EpixError, ErrorCode
from gateway import appkeys, paths
from gateway.bodies import json_body
from gateway.customs import CUSTOMS
from gateway.customs.config import covers_country, covers_office
from gateway.customs.service import (
    balance_view,
    dumps,
    require_addressed,
    require_customs,
    verification_json,
    write_off_view,
)
from gateway.middleware import principal

routes = web.RouteTableDef()
XML = "application/xml"
MAX_STAMP = 128
VERIFY_QUERY = frozenset(("stamp", "office", "format"))


def _json(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=dumps)


def _wants_xml(request: web.Request) -> bool:
    given = request.query.get("format")
    if given not in (None, "json", "xml"):
        raise EpixError(ErrorCode.JSON_MALFORMED, f"Query parameter format={paths.shown(given)} must be json or xml.")
    return given == "xml" or request.headers.get("Accept", "").split(",")[0].strip() in (XML, "text/xml")


def _office(request: web.Request) -> str | None:
    """The office the verification is recorded for, which the token must be able to act as (as
    for a write-off): the audit history says which border post checked a permit."""
    office = request.query.get("office")
    if office is None:
        return None
    problems = rules.identifier_problems(office, "The office")
    if problems:
        raise EpixError(ErrorCode.JSON_MALFORMED, problems[0], field="office")
    token, party = principal(request), request.app[appkeys.CONFIG].party
    if token.role != "operator" and not covers_office(token.countries, party, office):
        raise EpixError(ErrorCode.FORBIDDEN, f"Token {token.name!r} may not verify as office {office} of {party}.", office=office)
    return office


@routes.get(paths.VERIFICATION)
async def verify(request: web.Request) -> web.Response:
    paths.refuse_unknown_query(request, VERIFY_QUERY, "a verification")
    stamp = request.query.get("stamp")
    if stamp is not None and len(stamp) > MAX_STAMP:
        raise EpixError(ErrorCode.JSON_MALFORMED, f"The security stamp is at most {MAX_STAMP} characters.")
    service = request.app[CUSTOMS]
    # The signed verdict is evidence customs archive: it re-reads the record and its signature.
    xml = _wants_xml(request)
    issuer, number = paths.permit_key(request)
    result = await service.verify(issuer, number, token=principal(request), stamp=stamp, office=_office(request), thorough=xml)
    if xml:
        return web.Response(body=service.signed_verdict(result), content_type=XML, charset="utf-8")
    return web.Response(text=verification_json(result), content_type="application/json")


@routes.get(paths.VERIFICATION + "/history")
async def history(request: web.Request) -> web.Response:
    token = principal(request)
    require_customs(token)
    issuer, number = paths.permit_key(request)
    # Its verdicts and reasons say what a verification would not tell a token for another border.
    held = await request.app[CUSTOMS].held(issuer, number)
    if held is not None:
        require_addressed(held, token)
    records = await request.app[appkeys.STORE].list_verifications(issuer, number)
    return _json(
        {
            "verifications": [
                {
                    "verification_id": v.id, "verdict": v.verdict, "reasons": list(v.reasons), "client": v.principal,
                    "office": v.office, "stamp_given": v.stamp_given, "at": v.at.isoformat(),
                }  # fmt: skip
                for v in records
            ]
        }
    )


@routes.post(paths.PERMIT + "/write-offs")
async def write_off(request: web.Request) -> web.Response:
    issuer, number = paths.permit_key(request)
    outcome, risk, _ = await request.app[CUSTOMS].write_off(issuer, number, await json_body(request, "write-off"), token=principal(request))
    return _json(write_off_view(outcome, risk, issuer, number), status=200 if outcome.replayed else 201)


@routes.post(paths.PERMIT + "/write-offs/" + paths.DECLARATION + "/reversal")
async def reverse(request: web.Request) -> web.Response:
    issuer, number = paths.permit_key(request)
    declaration = paths.declaration_key(request)
    body = await json_body(request, "reversal", optional=True)
    body = {} if body is None else body
    if not isinstance(body, dict) or not isinstance(body.get("reason") or "", str):
        raise EpixError(ErrorCode.JSON_MALFORMED, 'The reversal body is optional JSON like {"reason": "entered twice"}.')
    reason = (body.get("reason") or "").strip()[:200] or None
    problems = rules.text_problems(reason, "The reason") if reason else []  # it travels in the signed endorsement
    if problems:
        raise EpixError(ErrorCode.JSON_MALFORMED, problems[0], field="reason")
    outcome = await request.app[CUSTOMS].reverse(issuer, number, declaration, token=principal(request), reason=reason)
    view = write_off_view(outcome, None, issuer, number)
    view["reversed"] = view.pop("written_off")
    view["already_reversed"] = view.pop("already_recorded")
    return _json(view, status=200)


@routes.get(paths.PERMIT + "/quantities")
async def quantities(request: web.Request) -> web.Response:
    """The permit's record of actual against permitted quantities (on the issuer's gateway: as
    the partners' customs reported them)."""
    token = principal(request)
    issuer, number = paths.permit_key(request)
    service = request.app[CUSTOMS]
    held = await service.held(issuer, number)
    if held is None:
        raise EpixError(ErrorCode.NOT_FOUND, f"No permit {issuer}/{number} is known to this gateway.")
    party = request.app[appkeys.CONFIG].party
    p = held.permit
    concerned = (issuer, party, p.exporter.address.country, p.importer.address.country)
    if token.role != "operator" and not any(covers_country(token.countries, c) for c in concerned):
        raise EpixError(ErrorCode.FORBIDDEN, f"Token {token.name!r} may not read permit {issuer}/{number}.")
    balances = await service.balances(held)
    write_offs = await request.app[appkeys.STORE].list_write_offs(issuer, number)
    return _json(
        {
            "issuer": issuer,
            "number": number,
            "status": held.record.status,
            "lines": [{**balance_view(b), "actual": balance_view(b)["used"]} for b in balances],
            "write_offs": [
                {
                    "declaration": w.declaration, "item": w.item_id, "quantity": format(w.quantity, "f"), "unit": w.unit,
                    "declared_at": w.declared_at.isoformat(), "office": w.office, "port": w.port,
                    "transport_document": w.transport_document, "origin": w.origin, "message_id": w.message_id,
                    "reversed_at": w.reversed_at.isoformat() if w.reversed_at else None,
                }  # fmt: skip
                for w in write_offs
            ],
        }
    )


# --- EPIX Connect-compatible SOAP facade -----------------------------------------------------------


def _soap(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="text/xml", charset="utf-8")


async def final_permit(request: web.Request, held):
    """The permit with box 14 filled from the write-offs held (actual quantity per line)."""
    from dataclasses import replace

    from domain.model import EndorsedLine, Endorsement

    rows = [w for w in await request.app[appkeys.STORE].list_write_offs(held.record.issuer, held.record.number) if w.reversed_at is None]
    if not rows:
        return held.permit
    totals: dict[str, tuple] = {}
    for w in rows:
        q, unit = totals.get(w.item_id, (0, w.unit))
        totals[w.item_id] = (q + w.quantity, unit)
    latest = max(rows, key=lambda w: w.declared_at)
    order = [i.id for i in held.permit.items]
    lines = tuple(EndorsedLine(i, totals[i][0], totals[i][1]) for i in order if i in totals)
    endorsement = Endorsement(
        date=latest.declared_at, port=latest.port or latest.office or "", lines=lines,
        transport_document=latest.transport_document, officer=latest.officer,
    )  # fmt: skip
    return replace(held.permit, endorsement=endorsement)


@routes.post("/epix/v2")
async def epix_soap(request: web.Request) -> web.Response:
    from adapters.epix_soap import build_fault, build_permit_response, read_request
    from domain.ledger import fallback_declaration
    from gateway.customs.verification import Verdict

    service = request.app[CUSTOMS]
    token = principal(request)
    try:
        soap = read_request(await request.read(), max_bytes=request.app[appkeys.CONFIG].max_body_bytes)
        # As in a URL: a number no permit can have is refused before it is looked up or audited.
        paths.checked_permit_key(soap.issuer or "", soap.number or "")
        if soap.operation == "ConfirmQuantities":
            e = soap.permit.endorsement
            if e is None or not e.lines:
                raise EpixError(ErrorCode.JSON_MALFORMED, "ConfirmQuantities needs box 14: ExaminationTransportEvent quantities.")
            body = {
                "declaration": soap.declaration or fallback_declaration(soap.number, e.date, e.transport_document),
                "date": e.date.isoformat(), "port": e.port or None, "transport_document": e.transport_document,
                "officer": e.officer,
                "lines": [{"item": line.item_id, "quantity": str(line.quantity), "unit": line.unit} for line in e.lines],
            }  # fmt: skip
            _, _, held = await service.write_off(soap.issuer, soap.number, body, token=token)
            held = await service.held(soap.issuer, soap.number)
            return _soap(build_permit_response(soap.operation, await final_permit(request, held)))
        result = await service.verify(soap.issuer, soap.number, token=token, stamp=soap.stamp, thorough=True)
        if result.verdict in (Verdict.NOT_FOUND, Verdict.NOT_ADDRESSED_TO_YOU, Verdict.SIGNATURE_INVALID, Verdict.STAMP_MISMATCH):
            code = ErrorCode.NOT_FOUND if result.verdict is not Verdict.SIGNATURE_INVALID else ErrorCode.SIGNATURE_INVALID
            raise EpixError(code, f"{result.verdict.value}: {' '.join(result.reasons)}", verdict=result.verdict.value)
        if soap.operation == "GetNonFinalCitesCertificate" and result.verdict is not Verdict.VALID:
            # The certificate a border checks a shipment against: one that can no longer be used
            # (cancelled, replaced, expired, not yet valid, used up) must not come back looking
            # usable, since EPIX's answer has no place to say so. The final certificate (actual
            # quantities) stays available as the record of what was shipped.
            raise EpixError(ErrorCode.CONFLICT, f"{result.verdict.value}: {' '.join(result.reasons)}", verdict=result.verdict.value)
        permit = result.held.permit
        if soap.operation == "GetFinalCitesCertificate":
            permit = await final_permit(request, result.held)
        return _soap(build_permit_response(soap.operation, permit))
    except EpixError as exc:
        # SOAP 1.1: a fault travels with HTTP 500 whoever is at fault; faultcode says who.
        return _soap(build_fault(exc), status=500)
