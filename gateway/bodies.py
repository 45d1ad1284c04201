"""Request bodies the local and customs APIs read as JSON."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.permit_json import read_json
from domain.errors import EpixError, ErrorCode


async def json_body(request: web.Request, what: str, *, optional: bool = False) -> Any:
    """The body as JSON (``{}`` when empty); ``optional``: None when there is none, whatever its
    type. Any other media type is refused (415), so a form or a text is never read as JSON."""
    body = await request.read()
    if optional and not body:
        return None
    if request.content_type != "application/json":  # aiohttp gives it lower-cased, without parameters
        raise EpixError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"Send the {what} as application/json, not {request.content_type}.")
    return read_json(body or b"{}")
