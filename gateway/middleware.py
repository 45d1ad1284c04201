"""Request middlewares: authentication of local clients and the one error mapping.

Every refusal leaves as JSON ``{"code", "message", "context"?}`` with the catalogue's HTTP status;
anything unexpected is logged with its traceback and answered as a 500 INTERNAL_ERROR.
"""

from __future__ import annotations

import json
import re

import structlog
from aiohttp import web

from domain.errors import EpixError, ErrorCode
from gateway import appkeys
from gateway.config import Token
from gateway.ids import new_hex
from gateway.logs import get_logger

log = get_logger("epix.http")
PRINCIPAL = web.RequestKey("principal", Token)
# Routes answered without a bearer token: the operator's probes, the published API description,
# and the exchange API, whose callers are authenticated by the signature on every document.
PUBLIC_ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/v1/openapi.json"})
PUBLIC_PREFIX = "/exchange/"


def error_response(exc: EpixError) -> web.Response:
    return web.json_response(exc.to_dict(), status=exc.status, dumps=lambda o: json.dumps(o, default=str))


# A caller's (or its proxy's) request id is kept when it looks like one: it is echoed and bound to
# every log line, where spaces, "=" or 8 KB of text could pass for other fields or drown them.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@web.middleware
async def request_context(request: web.Request, handler):
    given = request.headers.get("X-Request-Id", "")
    request_id = given if REQUEST_ID.fullmatch(given) else new_hex()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, path=request.path, method=request.method)
    response = await handler(request)
    response.headers["X-Request-Id"] = request_id
    return response


@web.middleware
async def errors(request: web.Request, handler):
    try:
        return await handler(request)
    except EpixError as exc:
        request.app[appkeys.METRICS].rejected.labels(exc.code.name).inc()
        log.info("request.refused", code=exc.code.name, status=exc.status, detail=exc.detail)
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {
            404: ErrorCode.NOT_FOUND,
            405: ErrorCode.CONFLICT,
            413: ErrorCode.PAYLOAD_TOO_LARGE,
            415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        }.get(exc.status, ErrorCode.INTERNAL_ERROR if exc.status >= 500 else ErrorCode.CONFLICT)
        detail = {
            404: f"There is no resource at {request.path}.",
            405: f"{request.method} is not allowed on {request.path}.",
            413: "The request body is larger than the gateway accepts.",
        }.get(exc.status, exc.reason)
        body = {"code": code.name, "message": detail}
        return web.json_response(body, status=exc.status)
    except Exception as exc:
        store = request.app.get(appkeys.STORE)
        if store is not None and store.unavailable(exc):
            log.warning("request.store_unavailable", error=f"{type(exc).__name__}: {exc}")
            request.app[appkeys.METRICS].rejected.labels(ErrorCode.STORE_UNAVAILABLE.name).inc()
            return error_response(
                EpixError(
                    ErrorCode.STORE_UNAVAILABLE,
                    f"The gateway's database did not answer ({type(exc).__name__}); the request may not have "
                    "been stored. Try again shortly: with the same Idempotency-Key a retry cannot store it twice.",
                )
            )
        log.exception("request.crashed")
        err = EpixError(ErrorCode.INTERNAL_ERROR)
        return error_response(err)


def is_public(resource: web.AbstractResource | None) -> bool:
    """Whether a route of ours needs no token, by the pattern it was registered with."""
    if resource is None:
        return False
    canonical = resource.canonical
    return canonical in PUBLIC_ROUTES or canonical.startswith(PUBLIC_PREFIX)


async def _public_refusal(request: web.Request) -> bool:
    """Whether a request the router refused asked a public path. Public routes are decided on the
    resource the router matched, never on the path's text: the router matches ``path_safe``
    (which keeps %2F and %25 encoded) while ``request.path`` is decoded in full, so
    "/exchange%2F../v1/messages" reads as an exchange path and matches nothing of the exchange
    API. What matched no route (404) needs a token like any other path; a public path asked with
    the wrong method (405) does not, so that a partner hears what it did wrong."""
    match = request.match_info
    if isinstance(match.http_exception, web.HTTPMethodNotAllowed):
        for resource in request.app.router.resources():
            if is_public(resource) and (await resource.resolve(request))[1]:
                return True
    return False


@web.middleware
async def authenticate(request: web.Request, handler):
    match = request.match_info
    public = is_public(match.route.resource) if match.http_exception is None else await _public_refusal(request)
    if public:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise EpixError(ErrorCode.UNAUTHENTICATED, "Send 'Authorization: Bearer <token>' to use this API.")
    token = request.app[appkeys.CONFIG].token_for(presented.strip())
    if token is None:
        raise EpixError(ErrorCode.UNAUTHENTICATED, "The bearer token is not known to this gateway.")
    request[PRINCIPAL] = token
    structlog.contextvars.bind_contextvars(client=token.name)
    return await handler(request)


def principal(request: web.Request) -> Token:
    return request[PRINCIPAL]


def require_role(request: web.Request, *roles: str) -> Token:
    token = principal(request)
    if token.role not in roles:
        raise EpixError(
            ErrorCode.FORBIDDEN,
            f"Token {token.name!r} has role {token.role!r}; this needs {' or '.join(roles)}.",
        )
    return token
