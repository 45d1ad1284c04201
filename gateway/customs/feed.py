"""The pre-arrival feed: permits addressed to this country handed to its customs as soon as they
arrive, each with its risk assessment, by webhook (JSON POST) or to an AMQP queue.

At least once: a permit is marked sent only after the webhook answered 2xx or the broker
confirmed the publish, so a crash in between sends it again (customs dedupes on message_id).
The worker looks a little behind its last position on every pass, so a message committed late
by a concurrent transaction is not skipped; what was sent is never sent twice because the feed
table remembers it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import aiohttp

from gateway import paths
from gateway.logs import get_logger

if TYPE_CHECKING:
    from gateway.customs.service import CustomsService

log = get_logger("epix.customs.feed")
LOOK_BACK = timedelta(seconds=10)
BATCH = 50


class FeedWorker:
    def __init__(self, service: "CustomsService", http: aiohttp.ClientSession) -> None:
        self.service = service
        self.http = http
        self.config = service.customs
        self._amqp = None
        self._channel = None

    async def run(self) -> None:
        since = datetime.now(timezone.utc) - timedelta(seconds=self.config.feed_backfill_s)
        try:
            while True:
                try:
                    since = await self.run_once(since)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 -- a feed outage must not stop the gateway
                    log.warning("feed.failed", error=str(exc))
                    await self._close_amqp()
                    await asyncio.sleep(min(5.0, self.config.feed_poll_s * 8))
                await asyncio.sleep(self.config.feed_poll_s)
        finally:
            await self._close_amqp()

    async def run_once(self, since: datetime) -> datetime:
        pending = await self.service.store.feed_pending(since, limit=BATCH)
        newest = since
        for message in pending:
            item = await self.item(message)
            await self.publish(item)
            await self.service.store.feed_mark_sent(
                message.message_id, at=datetime.now(timezone.utc), detail="amqp" if self.config.feed_amqp_url else "webhook"
            )
            newest = max(newest, message.created_at)
        return max(since, newest - LOOK_BACK) if pending else since

    async def item(self, message) -> dict[str, Any]:
        from gateway.customs.service import balance_view, permit_summary

        held = await self.service.held(message.issuer, message.number)
        if held is None:
            return {"message_id": message.message_id, "issuer": message.issuer, "number": message.number, "permit": None}
        balances = await self.service.balances(held)
        now = datetime.now(timezone.utc)
        risk = await self.service.assess(held, balances, key=f"{message.issuer}/{message.number}", now=now)
        signature = self.service.signature(held.record)
        return {
            "event": "permit.pre-arrival",
            "message_id": message.message_id,
            "action": message.action.value,
            "received_at": message.created_at.isoformat(),
            "issuer": message.issuer,
            "number": message.number,
            "permit": permit_summary(held, balances),
            "balances": [balance_view(b) for b in balances],
            "signer": signature.view(),
            "risk": risk.to_dict(),
            "verification_url": paths.verification_url(message.issuer, message.number),
        }

    async def publish(self, item: dict[str, Any]) -> None:
        body = json.dumps(item, default=str).encode("utf-8")
        if self.config.feed_amqp_url:
            await self._publish_amqp(body, item["message_id"])
            return
        async with self.http.post(
            self.config.feed_url, data=body, headers={"Content-Type": "application/json"}, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"customs webhook answered {resp.status}")

    async def _publish_amqp(self, body: bytes, message_id: str) -> None:
        import aio_pika

        if self._channel is None:
            self._amqp = await aio_pika.connect_robust(self.config.feed_amqp_url)
            self._channel = await self._amqp.channel(publisher_confirms=True)
            await self._channel.declare_queue(self.config.feed_queue, durable=True)
        await self._channel.default_exchange.publish(
            aio_pika.Message(body, message_id=message_id, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=self.config.feed_queue,
        )

    async def _close_amqp(self) -> None:
        if self._amqp is not None:
            amqp, self._amqp, self._channel = self._amqp, None, None
            try:
                await amqp.close()
            except Exception:  # noqa: BLE001 -- closing a broken connection
                pass
