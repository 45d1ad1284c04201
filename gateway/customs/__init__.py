"""The customs single window (docs/CUSTOMS.md): verification, write-off ledger, feedback to the
issuer, risk targeting, pre-arrival feed, EPIX-compatible SOAP facade, annual report.

``customs_resources`` is a cleanup context for ``create_app``: it runs after the gateway's own
resources (store, keys, delivery worker) are up, and stops the permit check worker and the feed
before they close.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, AsyncIterator

from aiohttp import web

from gateway import appkeys, tasks, workers
from gateway.logs import get_logger

if TYPE_CHECKING:
    from gateway.customs.service import CustomsService

CUSTOMS: web.AppKey["CustomsService"] = web.AppKey("customs")

log = get_logger("epix.customs")


async def customs_resources(app: web.Application) -> AsyncIterator[None]:
    from gateway.customs.checks import CheckWorker
    from gateway.customs.feed import FeedWorker
    from gateway.customs.service import CustomsService

    party = app[appkeys.CONFIG].party
    service = CustomsService(app[appkeys.CONFIG], app[appkeys.STORE], app[appkeys.SECURITY], app[appkeys.DELIVERY].wake)
    app[CUSTOMS] = service
    # Before any verification reads a check: one made under a trust since changed (a partner's
    # certificate withdrawn, added or replaced in the agreements) is dropped and made again.
    trust = app[appkeys.SECURITY].trust
    for issuer, queued in (await service.store.retrust(trust.marks(), now=datetime.now(timezone.utc))).items():
        log.info("customs.trust_changed", issuer=issuer, rechecks_queued=queued)
    background = []
    # Precomputed checks only pay off where customs clients verify; without a customs token the
    # rare operator verification makes its check on demand, and the exchange path keeps its CPU.
    if any(token.role == "customs" for token in app[appkeys.CONFIG].tokens) and workers.leads():
        background += tasks.start([(f"customs-checks-{party}", CheckWorker(service).run)], on_crash=app[appkeys.METRICS].count_crash)
    if service.customs.feed_enabled:
        feed = FeedWorker(service, app[appkeys.HTTP])
        background += tasks.start([(f"customs-feed-{party}", feed.run)], on_crash=app[appkeys.METRICS].count_crash)
    try:
        yield
    finally:
        await tasks.stop(background)
