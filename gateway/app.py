"""The composition root: ``create_app(config)`` wires the store, keys, services and routes.

Resources are opened and closed in ``cleanup_ctx``; nothing connects at import time. The same
factory serves ``epix serve``, the demo, the benchmarks and the tests.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import AsyncIterator

import aiohttp
from aiohttp import web

from gateway import api_customs, api_exchange, api_local, api_ops, api_retention, appkeys, hub, tasks, workers
from gateway.collector import tuned_collector
from gateway.config import GatewayConfig
from gateway.customs import customs_resources
from gateway.delivery import DeliveryWorker
from gateway.inbound import InboundService
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.middleware import authenticate, errors, request_context
from gateway.outbound import OutboundService
from gateway.queue import open_queue
from gateway.security import Security
from gateway.store import open_store

log = get_logger("epix.app")


def create_app(config: GatewayConfig, *, security: Security | None = None) -> web.Application:
    app = web.Application(
        middlewares=[request_context, errors, authenticate],
        client_max_size=config.max_body_bytes,
    )
    app[appkeys.CONFIG] = config
    app[appkeys.METRICS] = Metrics(config.party)
    app.cleanup_ctx.append(_resources(security))
    if config.webhook.url and workers.leads():
        app.cleanup_ctx.append(_webhook)
    app.add_routes(api_ops.routes)
    app.add_routes(api_local.routes)
    app.add_routes(api_exchange.routes)
    app.add_routes(api_customs.routes)
    app.add_routes(api_retention.routes)
    app.cleanup_ctx.append(customs_resources)  # after _resources: it uses the store and keys
    if config.retention.enabled and config.retention.interval_s > 0 and workers.leads():
        app.cleanup_ctx.append(_retention)
    app.cleanup_ctx.append(tuned_collector)  # last: it freezes what the others loaded
    return app


def _resources(preloaded: Security | None):
    async def resources(app: web.Application) -> AsyncIterator[None]:
        config = app[appkeys.CONFIG]
        security = preloaded or Security.load(
            party=config.party,
            keys_dir=config.keys_dir,
            passphrase=config.key_passphrase,
            agreements=config.agreements,
        )
        store = await open_store(config.store_url, config.data_dir)
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(8, config.delivery.concurrency)),
            headers={"User-Agent": f"epix-gateway/{config.party}"},
        )
        app[appkeys.SECURITY] = security
        app[appkeys.STORE] = store
        app[appkeys.HTTP] = http
        queue = open_queue(config, store, actor=f"sender:{config.party}")
        if config.start_delivery:
            await queue.open()  # a broker that cannot be reached stops start-up, loudly
        worker = DeliveryWorker(config, store, security, http, app[appkeys.METRICS], queue)
        app[appkeys.DELIVERY] = worker
        app[appkeys.OUTBOUND] = OutboundService(config, store, security, worker)
        app[appkeys.INBOUND] = InboundService(config, store, security, worker)
        background = []
        if config.start_delivery:
            background = tasks.start(
                [(f"delivery-{config.party}", worker.run)]
                + [(f"hub-{config.party}", loop) for loop in (hub.background(config, store, security, http, app[appkeys.INBOUND]) if workers.leads() else [])],
                on_crash=app[appkeys.METRICS].count_crash,
            )
        log.info(
            "gateway.started", party=config.party, role=config.role, store=type(store).__name__, queue=type(queue).__name__
        )
        _warn_of_ending_certificates(security)
        try:
            yield
        finally:
            await tasks.stop(background)
            await queue.close()
            await http.close()
            await store.close()
            log.info("gateway.stopped", party=config.party)

    return resources


CERTIFICATE_WARNING_DAYS = 30


def _warn_of_ending_certificates(security: Security) -> None:
    """Said once at start, and always visible in /metrics (epix_certificate_not_after_seconds)."""
    now = datetime.now(timezone.utc)
    for use, party, cert in security.certificates():
        left = cert.not_valid_after_utc - now
        if left.days < CERTIFICATE_WARNING_DAYS:
            (log.error if left.total_seconds() <= 0 else log.warning)(
                "certificate.ending", use=use, cert_party=party, serial=f"{cert.serial_number:x}",
                not_after=cert.not_valid_after_utc.isoformat(), days_left=left.days,
            )  # fmt: skip


async def _webhook(app: web.Application) -> AsyncIterator[None]:
    """Pushes received permits to the MA system's webhook; runs after the resources it uses exist."""
    from gateway.api_local import inbox_item
    from gateway.webhook import WebhookNotifier

    store = app[appkeys.STORE]
    notifier = WebhookNotifier(app[appkeys.CONFIG], store, app[appkeys.HTTP], lambda m: inbox_item(store, m))
    background = tasks.start([("webhook", notifier.run)], on_crash=app[appkeys.METRICS].count_crash)
    try:
        yield
    finally:
        await tasks.stop(background)


async def _retention(app: web.Application) -> AsyncIterator[None]:
    """Purges what the [retention] policy no longer keeps, every interval_s, beside the gateway's work."""
    from gateway.retention import RetentionWorker

    config = app[appkeys.CONFIG]
    worker = RetentionWorker(config.retention, app[appkeys.STORE], party=config.party, customs=config.customs)
    background = tasks.start([(f"retention-{config.party}", worker.run)], on_crash=app[appkeys.METRICS].count_crash)
    try:
        yield
    finally:
        await tasks.stop(background)
