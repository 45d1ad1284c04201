"""The pre-arrival feed: permits addressed to this country handed to its customs as soon as they
arrive, each with its risk assessment, by webhook (JSON POST) or to an AMQP queue.

At least once: a permit is marked sent only after the webhook answered 2xx or the broker
confirmed the publish (routed to the queue: mandatory, a returned message is a failure), so a
crash in between sends it again (customs dedupes on message_id). A failure stops the pass; the
next one, a little later, starts again from the first permit not marked sent, so nothing is
skipped and the order of arrival is kept. What is pending is the store's feed queue (filled by
the database as messages arrive, emptied as they are marked sent), so a feed that was down for
a week, or a gateway stopped for one, starts from the oldest permit not handed over: nothing is
left behind for being old (``feed_since``, when an operator sets it, is the only bound). One
waiting longer than ``feed_backfill_s`` is a warning, with how many there are.

Several gateway processes on one store take turns (the store's feed turn): one hands over at a
time, keeping its turn by handing over (every mark extends it), giving it up on a failure or
when it stops, and losing it if it goes quiet for TURN; so customs gets each permit from one of
them, in order.

The AMQP message (docs/CUSTOMS.md, "Pre-arrival feed"): the JSON item as body, persistent, to
the default exchange with the queue's name as routing key; the inbound message id as AMQP
``message_id`` and in the ``epix-*`` headers with what a consumer may route or filter on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
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
BATCH = 50
TURN = timedelta(seconds=60)  # kept by each mark; longer than any one hand-over (connect + publish + confirm)
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
        # Who holds the feed's turn in the store, named for an operator reading the table.
        self.holder = f"{self.party}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._late_reported = False

    async def run(self) -> None:
        store = self.service.store
        try:
            await self._report_not_fed()
            while True:
                try:
                    await self.run_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 -- a feed outage must not stop the gateway
                    if not isinstance(exc, _HandOverFailed):
                        log.warning("feed.failed", error=f"{type(exc).__name__}: {exc}")
                    await self._close_amqp()
                    # Another process may get through where this one does not; it starts from
                    # the same oldest permit.
                    with contextlib.suppress(Exception):
                        await store.feed_end_turn(self.holder)
                    await asyncio.sleep(min(5.0, self.config.feed_poll_s * 8))
                await asyncio.sleep(self.config.feed_poll_s)
        finally:
            await self._close_amqp()
            with contextlib.suppress(Exception):
                await store.feed_end_turn(self.holder)

    async def run_once(self) -> int:
        """Hand over what is pending, oldest first, if it is this process's turn; how many."""
        store = self.service.store
        since = self.config.feed_since
        # Looking costs a read; the turn, a write: taken only when there is something to hand over.
        if not await store.feed_pending(limit=1, not_before=since):
            self._late_reported = False
            return 0
        now = datetime.now(timezone.utc)
        if not await store.feed_take_turn(self.holder, now=now, until=now + TURN):
            return 0  # another process is handing over; it takes these too
        pending = await store.feed_pending(limit=BATCH, not_before=since)  # again: what it left
        if pending:
            await self._report_late(pending[0], now)
        handed = 0
        for message in pending:
            with structlog.contextvars.bound_contextvars(message_id=message.message_id):
                try:
                    detail = await self.publish(await self.item(message), message)
                except Exception as exc:
                    log.warning("feed.failed", error=f"{type(exc).__name__}: {exc}")
                    raise _HandOverFailed from exc
                at = datetime.now(timezone.utc)
                ours = await store.feed_mark_sent(message.message_id, at=at, detail=detail, holder=self.holder, until=at + TURN)
                log.info("feed.sent", to=detail)
            handed += 1
            if not ours:  # quiet for longer than TURN (a stalled process): another one has taken over
                log.warning("feed.turn_lost", holder=self.holder, handed=handed)
                break
        return handed

    async def _report_late(self, oldest: MessageRecord, now: datetime) -> None:
        """Warn, once until the feed has caught up again, that permits are waiting longer than
        feed_backfill_s: they are handed over all the same, oldest first."""
        backfill = timedelta(seconds=self.config.feed_backfill_s)
        if self._late_reported or oldest.created_at >= now - backfill:
            return
        count, first = await self.service.store.feed_backlog(before=now - backfill, not_before=self.config.feed_since)
        log.warning(
            "feed.late", permits=count, oldest_received_at=first.isoformat() if first else None,
            oldest_message_id=oldest.message_id, backfill_s=self.config.feed_backfill_s,
            reason="received longer than customs.feed_backfill_s ago and not handed to customs yet (a feed or "
            "gateway outage); handing them over now, oldest first",
        )  # fmt: skip
        self._late_reported = True

    async def _report_not_fed(self) -> None:
        """An operator's feed_since leaves permits unfed: say how many, once, at start."""
        if self.config.feed_since is None:
            return
        try:
            count, first = await self.service.store.feed_backlog(before=self.config.feed_since)
        except Exception as exc:  # noqa: BLE001 -- only a report; the feed itself reports its errors
            log.warning("feed.failed", error=f"{type(exc).__name__}: {exc}")
            return
        if count:
            log.warning(
                "feed.not_fed", permits=count, oldest_received_at=first.isoformat() if first else None,
                feed_since=self.config.feed_since.isoformat(),
                reason="received before customs.feed_since: never handed to customs while it is set",
            )  # fmt: skip

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
