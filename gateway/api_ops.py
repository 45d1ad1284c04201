"""Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI description."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from aiohttp import web

from domain.errors import EpixError
from gateway import appkeys
from gateway.logs import worker_index

routes = web.RouteTableDef()
OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.json"


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    # Under `epix serve --workers N`, which worker answered (its index and process), else null.
    body = {"status": "ok", "party": request.app[appkeys.CONFIG].party, "worker": worker_index(), "pid": os.getpid()}
    return web.json_response(body)


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when the store answers, the delivery queue works and this gateway's signing
    certificate is within its validity; each part says how it is, a failing one why."""
    app = request.app
    problems: dict[str, str] = {}
    try:
        await app[appkeys.STORE].ping()
    except Exception as exc:  # readiness reports, it does not raise
        problems["store"] = f"{type(exc).__name__}: the store does not answer"
    queue_problem = app[appkeys.DELIVERY].queue.health() if app[appkeys.CONFIG].start_delivery else None
    if queue_problem:
        problems["queue"] = queue_problem
    now = datetime.now(timezone.utc)
    cert = app[appkeys.SECURITY].certificate
    try:
        app[appkeys.SECURITY].require_usable(now)
    except EpixError as exc:
        problems["certificate"] = exc.detail
    body = {
        "status": "unavailable" if problems else "ready",
        "store": problems.get("store", "ok"),
        "queue": problems.get("queue", "ok"),
        "certificate": {
            "status": "unusable" if "certificate" in problems else "ok",
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "days_left": (cert.not_valid_after_utc - now).days,
            **({"detail": problems["certificate"]} if "certificate" in problems else {}),
        },
    }
    return web.json_response(body, status=503 if problems else 200)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    store = request.app[appkeys.STORE]
    body = request.app[appkeys.METRICS].render()
    counts = await store.counts_by_status()
    lines = ["# HELP epix_messages Messages in the store by status", "# TYPE epix_messages gauge"]
    lines += [f'epix_messages{{status="{status}"}} {n}' for status, n in sorted(counts.items())]
    lines += _certificate_lines(request.app[appkeys.SECURITY])
    body += ("\n".join(lines) + "\n").encode()
    return web.Response(body=body, content_type="text/plain", charset="utf-8", headers={"X-Content-Type-Options": "nosniff"})


def _certificate_lines(security) -> list[str]:
    """When each certificate this gateway signs with or pins ends, for an alert well before."""
    lines = [
        "# HELP epix_certificate_not_after_seconds When a certificate ends (Unix time): this gateway's own (use=signing) and each partner's pinned one",
        "# TYPE epix_certificate_not_after_seconds gauge",
    ]
    for use, party, cert in security.certificates():
        labels = f'use="{use}",party="{party}",serial="{cert.serial_number:x}"'
        lines.append(f"epix_certificate_not_after_seconds{{{labels}}} {cert.not_valid_after_utc.timestamp():.0f}")
    return lines


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(json.loads(OPENAPI_PATH.read_text(encoding="utf-8")))
