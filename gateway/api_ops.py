"""Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI description."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from gateway import appkeys

routes = web.RouteTableDef()
OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.json"


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "party": request.app[appkeys.CONFIG].party})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[appkeys.STORE].ping()
    except Exception as exc:  # readiness reports, it does not raise
        return web.json_response({"status": "unavailable", "store": type(exc).__name__}, status=503)
    return web.json_response({"status": "ready"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    store = request.app[appkeys.STORE]
    body = request.app[appkeys.METRICS].render()
    counts = await store.counts_by_status()
    lines = ["# HELP epix_messages Messages in the store by status", "# TYPE epix_messages gauge"]
    lines += [f'epix_messages{{status="{status}"}} {n}' for status, n in sorted(counts.items())]
    body += ("\n".join(lines) + "\n").encode()
    return web.Response(body=body, content_type="text/plain", charset="utf-8", headers={"X-Content-Type-Options": "nosniff"})


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(json.loads(OPENAPI_PATH.read_text(encoding="utf-8")))
