"""The customs single window (docs/CUSTOMS.md): verification, write-off ledger, feedback to the
issuer, risk targeting, pre-arrival feed, EPIX-compatible SOAP facade, annual report.

``customs_resources`` is a cleanup context for ``create_app``: it runs after the gateway's own
resources (store, keys, delivery worker) are up, and stops the feed before they close.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, AsyncIterator

from aiohttp import web

from gateway import appkeys

if TYPE_CHECKING:
    from gateway.customs.service import CustomsService

CUSTOMS: web.AppKey["CustomsService"] = web.AppKey("customs")


async def customs_resources(app: web.Application) -> AsyncIterator[None]:
    from gateway.customs.feed import FeedWorker
    from gateway.customs.service import CustomsService

    service = CustomsService(app[appkeys.CONFIG], app[appkeys.STORE], app[appkeys.SECURITY], app[appkeys.DELIVERY].wake)
    app[CUSTOMS] = service
    task = None
    if service.customs.feed_enabled:
        feed = FeedWorker(service, app[appkeys.HTTP])
        task = asyncio.create_task(feed.run(), name=f"customs-feed-{app[appkeys.CONFIG].party}")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
