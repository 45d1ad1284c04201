"""The pre-arrival feed: permits addressed to this country handed to its customs as soon as they
arrive, each with its risk assessment, by webhook (JSON POST) or to an AMQP queue.

At least once: a permit is marked sent only after the webhook answered 2xx or the broker
confirmed the publish (routed to the queue: mandatory, a returned message is a failure), so a
crash in between sends it again (customs dedupes on message_id). A failure stops the pass; the
next one, a little later, starts again from the first permit not marked sent, so nothing is
skipped and the order of arrival is kept. The worker looks a little behind its last position on
every pass, so a message committed late by a concurrent transaction is not skipped; what was
sent is never sent again, on this run or after a restart, because the feed table remembers it.

The AMQP message (docs/CUSTOMS.md, "Pre-arrival feed"): the JSON item as body, persistent, to
the default exchange with the queue's name as routing key; the inbound message id as AMQP
``message_id`` and in the ``epix-*`` headers with what a consumer may route or filter on.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from gateway import paths
from gateway.logs import get_logger
from gateway.store.base import MessageRecord

if TYPE_CHECKING:
    from gateway.customs.service import CustomsService

log = get_logger("epix.customs.feed")
LOOK_BACK = timedelta(seconds=10)
BATCH = 50
EVENT = "permit.pre-arrival"
TIMEOUT_S = 10.0  # a webhook answer, a broker connection or a publisher confirm
QUORUM = {"x-queue-type": "quorum"}


class _HandOverFailed(Exception):
    """One permit could not be handed to customs (already logged with its message id)."""


class FeedWorker:
    def __init__(self, service: "CustomsService", http: aiohttp.ClientSession) -> None:
        self.service = service
        self.http = http
        self.config = service.customs
        self.party = service.config.party
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
                    if not isinstance(exc, _HandOverFailed):
                        log.warning("feed.failed", error=f"{type(exc).__name__}: {exc}")
                    await self._close_amqp()
                    await asyncio.sleep(min(5.0, self.config.feed_poll_s * 8))
                await asyncio.sleep(self.config.feed_poll_s)
        finally:
            await self._close_amqp()

    async def run_once(self, since: datetime) -> datetime:
        """Hand over what is pending, oldest first; the position to look from next time."""
        pending = await self.service.store.feed_pending(since, limit=BATCH)
        newest = since
        for message in pending:
            with structlog.contextvars.bound_contextvars(message_id=message.message_id):
                try:
                    detail = await self.publish(await self.item(message), message)
                except Exception as exc:
                    log.warning("feed.failed", error=f"{type(exc).__name__}: {exc}")
                    raise _HandOverFailed from exc
                await self.service.store.feed_mark_sent(message.message_id, at=datetime.now(timezone.utc), detail=detail)
                log.info("feed.sent", to=detail)
            newest = max(newest, message.created_at)
        return max(since, newest - LOOK_BACK) if pending else since

    async def item(self, message: MessageRecord) -> dict[str, Any]:
        from gateway.customs.service import balance_view, permit_summary

        head = {
            "event": EVENT,
            "message_id": message.message_id,
            "action": message.action.value,
            "received_at": message.created_at.isoformat(),
            "issuer": message.issuer,
            "number": message.number,
        }
        held = await self.service.held(message.issuer, message.number)
        if held is None:  # stored with its message in one transaction: only a record deleted since
            return {**head, "permit": None, "balances": [], "signer": None, "risk": None, "verification_url": None}
        balances = await self.service.balances(held)
        now = datetime.now(timezone.utc)
        risk = await self.service.assess(held, balances, key=f"{message.issuer}/{message.number}", now=now)
        signature = self.service.signature(held.record)
        return {
            **head,
            "permit": permit_summary(held, balances),
            "balances": [balance_view(b) for b in balances],
            "signer": signature.view(),
            "risk": risk.to_dict(),
            "verification_url": paths.verification_url(message.issuer, message.number),
        }

    async def publish(self, item: dict[str, Any], message: MessageRecord) -> str:
        """Hand one item over; what to record as how it went. Raises unless customs has it."""
        body = json.dumps(item, default=str).encode("utf-8")
        if self.config.feed_amqp_url:
            await self._publish_amqp(body, item, message)
            return f"amqp {self.config.feed_queue}"
        async with self.http.post(
            self.config.feed_url, data=body, headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
        ) as resp:  # fmt: skip
            if resp.status >= 300:
                raise RuntimeError(f"customs webhook answered {resp.status}")
            return f"webhook {resp.status}"

    async def _publish_amqp(self, body: bytes, item: dict[str, Any], message: MessageRecord) -> None:
        import aio_pika
        from pamqp.commands import Basic

        channel = await self._open_amqp()
        headers = {
            "epix-message-id": message.message_id,
            "epix-event": EVENT,
            "epix-action": message.action.value,
            "epix-issuer": message.issuer,
            "epix-number": message.number,
            "epix-version": message.version,
        }
        if item.get("risk"):
            headers["epix-risk-channel"] = item["risk"]["channel"]
        confirmation = await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                message_id=message.message_id,
                correlation_id=message.conversation_id,
                type=EVENT,
                app_id=f"epix-gateway/{self.party}",
                timestamp=datetime.now(timezone.utc),
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=headers,
            ),
            routing_key=self.config.feed_queue,
            mandatory=True,  # no such queue: returned (raises), not confirmed and dropped
            timeout=TIMEOUT_S,
        )
        if not isinstance(confirmation, Basic.Ack):
            raise RuntimeError(f"RabbitMQ did not confirm the feed message: {confirmation!r}")

    async def _open_amqp(self):
        """The publishing channel, connecting and making sure the queue exists first.

        A plain connection, not a robust one: this worker reconnects by itself after any failure,
        and a robust connection would hold a publish until the broker is back instead of failing.
        """
        import aio_pika

        if self._channel is not None:
            return self._channel
        self._amqp = await aio_pika.connect(
            self.config.feed_amqp_url, timeout=TIMEOUT_S,
            client_properties={"connection_name": f"epix-gateway {self.party} customs feed"},
        )  # fmt: skip
        queue = self.config.feed_queue
        channel = await self._amqp.channel(publisher_confirms=True, on_return_raises=True)
        try:
            # Customs may own the queue, declared with its own arguments (length limit, dead
            # letters): use it as it is, as declaring it with other arguments would fail.
            await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:  # it closed the channel
            channel = await self._amqp.channel(publisher_confirms=True, on_return_raises=True)
            await channel.declare_queue(queue, durable=True, arguments=QUORUM)
        self._channel = channel
        return channel

    async def _close_amqp(self) -> None:
        if self._amqp is not None:
            amqp, self._amqp, self._channel = self._amqp, None, None
            try:
                await amqp.close()
            except Exception:  # noqa: BLE001 -- closing a broken connection
                pass
