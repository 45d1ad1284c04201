"""Permits in URLs: the route variables every handler is registered with, the one way a handler
reads the permit a URL names, and the one way the gateway writes a permit into a URL it hands out.

A permit number may hold any visible character ("KWS/CITES/2026/0012", "21 CH 012345",
"FR-2106#9"), so it travels as ONE percent-encoded path segment (RFC 3986 section 3.3):
/v1/permits/KE/KWS%2FCITES%2F2026%2F0012.

What aiohttp 3.14 (yarl 1.25) does with such a path: the router matches against
``URL.path_safe``, which decodes every escape except %2F and %25, so an encoded "/" stays inside
its segment and cannot split it, while "#", "?", a space or UTF-8 come out as characters; the
matched value is then decoded once more (%2F to "/", %25 to "%"), so ``match_info["number"]`` is
the number itself, decoded exactly once ("%252F" is the text "%2F"). Two gaps remain, closed here:

* a plain ``{var}`` matches ``[^{}/]+``: a number holding "{" or "}" (%7B and %7D are decoded
  before matching) would be a 404. Our variables match ``[^/]+``.
* ``url_for`` quotes a value as a path, which leaves "/" as it is; ``segment()`` quotes it as
  one segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlencode

from aiohttp import web

from domain import codes, ledger, rules
from domain.errors import EpixError, ErrorCode

# One path segment, whatever it holds once decoded (the canonical route stays "{number}").
ISSUER = "{issuer:[^/]+}"
NUMBER = "{number:[^/]+}"
DECLARATION = "{declaration:[^/]+}"
PERMIT = f"/v1/permits/{ISSUER}/{NUMBER}"
VERIFICATION = f"/v1/verifications/{ISSUER}/{NUMBER}"

ISSUERS = codes.COUNTRIES | codes.USER_ASSIGNED_COUNTRIES  # what rules.validate lets a permit's issuer be


def segment(value: str) -> str:
    """``value`` percent-encoded as one path segment: everything but letters, digits and ``-._~``."""
    return quote(value, safe="")


def shown(value: str) -> str:
    """``value`` quoted for an error message, cut short when it is far longer than anything real."""
    return repr(value if len(value) <= 80 else value[:64] + "…")


LIMIT_ONLY = frozenset(("limit",))  # the query a plain page takes


def refuse_unknown_query(request: web.Request, allowed: frozenset[str], what: str) -> None:
    """A misspelt parameter would otherwise be ignored: a filter not applied, a stamp not checked."""
    if not request.query_string:
        return
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise EpixError(
            ErrorCode.JSON_MALFORMED,
            f"Unknown query parameter {shown(unknown[0])}: {what} takes {', '.join(sorted(allowed))}.",
            field=unknown[0][:64],
        )


def permit_url(issuer: str, number: str, *tail: str) -> str:
    """``/v1/permits/{issuer}/{number}[/tail...]``, ready to follow as it is."""
    return "/".join(("/v1/permits", segment(issuer), segment(number), *tail))


def verification_url(issuer: str, number: str) -> str:
    return "/".join(("/v1/verifications", segment(issuer), segment(number)))


def query_url(path: str, params: Mapping[str, object]) -> str:
    """``path?name=value&...`` with every value percent-encoded, ready to follow as it is: left
    as it is, the "+" of a UTC offset ("+00:00") is read back as a space, and a "&" or "#" in a
    permit number would end its parameter."""
    return f"{path}?{urlencode(params, quote_via=quote)}" if params else path


def permit_key(request: web.Request) -> tuple[str, str]:
    """(issuer, number) of the permit the URL names. A value no permit can have is refused here, as
    NOT_FOUND with the reason, before it reaches the store (PostgreSQL refuses a NUL outright)."""
    return checked_permit_key(request.match_info["issuer"], request.match_info["number"])


def checked_permit_key(issuer: str, number: str) -> tuple[str, str]:
    """``permit_key``'s refusal for an issuer and number given elsewhere than in the path (the SOAP
    facade's parameters, which no URL length bounds: hence the values cut short in the message)."""
    if issuer not in ISSUERS:
        raise EpixError(
            ErrorCode.NOT_FOUND,
            f"No permit is issued by {shown(issuer)}: the issuer is the ISO 3166-1 alpha-2 code of the issuing country, e.g. CH.",
            issuer=issuer,
        )
    problems = rules.number_problems(number)
    if problems:
        raise EpixError(
            ErrorCode.NOT_FOUND,
            f"No permit can have the number {shown(number)}. {problems[0].message} A number is sent as one "
            f"percent-encoded path segment: {permit_url('KE', 'KWS/CITES/2026/0012')}.",
            issuer=issuer,
            problems=[p.to_dict() for p in problems],
        )
    return issuer, number


def declaration_key(request: web.Request) -> str:
    """The customs declaration a reversal URL names. A reference no write-off can have (the
    write-off body refuses it: domain.ledger.declaration_problems) is NOT_FOUND with the reason,
    before anything is looked up or written."""
    declaration = request.match_info["declaration"]
    problems = ledger.declaration_problems(declaration)
    if problems:
        example = permit_url("FR", "CH26-000001", "write-offs", segment("FR/2026 7"), "reversal")
        raise EpixError(
            ErrorCode.NOT_FOUND,
            f"No write-off can have the declaration reference {shown(declaration)}. {problems[0]} A reference is sent "
            f"as one percent-encoded path segment: {example}.",
            declaration=declaration,
        )
    return declaration


MAX_MESSAGE_ID = 64  # ours are UUIDs; a partner's arrive as the envelope's ex:Token64


def message_key(request: web.Request) -> str:
    """The message id a URL names. One that no message can have (longer than an envelope carries,
    or holding a character XML cannot, such as the NUL PostgreSQL refuses outright) is NOT_FOUND
    with the reason, before it reaches the store."""
    message_id = request.match_info["message_id"]
    problems = rules.text_problems(message_id, "A message id", limit=MAX_MESSAGE_ID)
    if problems:
        raise EpixError(ErrorCode.NOT_FOUND, f"No message can have the id {shown(message_id)}. {problems[0]}")
    return message_id
