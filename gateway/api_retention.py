"""Operator: the retention policy in force and the last purge runs (when, cutoffs, what went)."""

from __future__ import annotations

from aiohttp import web

from domain.errors import EpixError, ErrorCode
from gateway import appkeys, paths
from gateway.middleware import require_role
from gateway.retention import policy_view, run_view

routes = web.RouteTableDef()


@routes.get("/v1/retention")
async def retention(request: web.Request) -> web.Response:
    require_role(request, "operator")
    paths.refuse_unknown_query(request, paths.LIMIT_ONLY, "the retention log")
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 500:
        raise EpixError(ErrorCode.JSON_MALFORMED, "limit must be a whole number from 1 to 500.")
    runs = await request.app[appkeys.STORE].purge_runs(limit=limit)
    return web.json_response({"policy": policy_view(request.app[appkeys.CONFIG].retention), "runs": [run_view(r) for r in runs]})
