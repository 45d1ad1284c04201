"""The RabbitMQ queue (aio-pika): durable quorum queues per route, fed by an outbox relay.

The store stays the source of truth; the broker only carries message ids.

- **Outbox relay.** Accepted messages are rows in SEND_ENQUEUED (written with their permit in one
  transaction). The relay publishes each one, *persistent* and *mandatory*, and waits for the
  publisher confirm (with a timeout) before it records ``published_seq``. A message the broker
  returned (no queue bound for its route) or did not confirm stays unmarked and is published again
  later; it is never dropped. A crash between confirm and mark publishes it twice: harmless.
- **Topology** (names start with ``<prefix>.<party>``, one direct exchange of that name):
  ``.deliver.<hop>`` the route queue of a next hop (receiver, or the hub it goes via);
  ``.deliver.<hop>.retry.<ms>`` delay queues whose message TTL dead-letters back into the route
  queue (at-least-once dead-lettering); ``.deliver.<hop>.parked`` after the last attempt.
  All are durable quorum queues.
- **Consumers** (prefetch from ``[queue]``) load the message from the store, skip it if already
  final, claim it (SENDING), send it through ``DeliveryWorker.deliver``, which stores the outcome,
  publish it to a delay queue or to the parking queue when the outcome asks for it (confirmed),
  and only THEN ack. A consumer that dies before acking leaves the delivery unacked; the broker
  gives it again (``redelivered``) and the next consumer reclaims the message.
- **Safety net.** A message left SENDING longer than the delivery lease with no broker copy to
  come back (it should not happen) is released to SEND_ENQUEUED, so the relay publishes it again.
- **Replay.** The parking queues mirror the SEND_FAILURE rows of the store; the store decides. An
  operator retry (``POST /v1/messages/{id}/retry`` or, in bulk, ``/v1/messages/retry``) moves
  SEND_FAILURE/REJECTED to SEND_ENQUEUED in the store (same message id), the relay publishes it to
  its route once, and ``unpark`` then drops its parking entries, so a parking queue shows what is
  still parked and a replay never puts a message on its route twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from pamqp.commands import Basic

from domain.errors import EpixError, ErrorCode
from domain.messages import Direction, MessageStatus
from gateway import tasks
from gateway.config import GatewayConfig
from gateway.logs import get_logger
from gateway.store.base import LEASE_EXPIRED_DETAIL, MessageFilter, MessageRecord, Store

from .base import Deliver, DeliveryQueue

log = get_logger("epix.queue")

REDELIVERED_DETAIL = "the broker delivered it again: the previous consumer stopped before storing an outcome"
QUORUM = {"x-queue-type": "quorum"}
RELAY_BATCH = 256


class Topology:
    """Names of the exchange and queues of one gateway (``prefix.party``)."""

    def __init__(self, prefix: str, party: str) -> None:
        self.exchange = f"{prefix}.{party}"

    def route(self, hop: str) -> str:
        return f"{self.exchange}.deliver.{hop}"

    def retry(self, hop: str, delay_ms: int) -> str:
        return f"{self.route(hop)}.retry.{delay_ms}"

    def parked(self, hop: str) -> str:
        return f"{self.route(hop)}.parked"


def hop_of(message: MessageRecord) -> str:
    return message.via or message.receiver


class RabbitQueue(DeliveryQueue):
    def __init__(self, config: GatewayConfig, store: Store, *, actor: str) -> None:
        if config.queue.url is None:
            raise EpixError(ErrorCode.CONFIG_INVALID, "RabbitQueue needs [queue] url = \"amqp://...\".")
        self.config = config
        self.store = store
        self.actor = actor
        self.names = Topology(config.queue.prefix, config.party)
        self._wake = asyncio.Event()
        self._connection: AbstractRobustConnection | None = None
        self._publisher: aio_pika.abc.AbstractExchange | None = None
        self._consumer_channel: aio_pika.abc.AbstractChannel | None = None
        self._route_queues: dict[str, AbstractQueue] = {}  # on the current connection's channel
        self._hops_declared: set[str] = set()  # ever, on any connection (queue_names)
        self._retry_queues: set[str] = set()
        self._consumers: dict[str, tuple[AbstractQueue, str]] = {}
        self._declare_lock = asyncio.Lock()
        self._inflight: set[asyncio.Task] = set()
        self._deliver: Deliver | None = None
        self._stopping = False

    # --- connection and topology ----------------------------------------------------------------

    async def open(self) -> None:
        await self.connect()

    async def connect(self) -> None:
        """Connect (robustly: aio-pika reconnects and restores queues and consumers) and declare
        the routes of every partner this gateway pushes to."""
        if self._connection is not None:
            return
        try:
            self._connection = await aio_pika.connect_robust(
                self.config.queue.url,
                client_properties={"connection_name": f"epix-gateway {self.config.party}"},
                timeout=self.config.queue.confirm_timeout_s,
            )
        except (OSError, asyncio.TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            raise EpixError(
                ErrorCode.CONFIG_INVALID if "ACCESS_REFUSED" in str(exc) else ErrorCode.QUEUE_UNAVAILABLE,
                f"RabbitMQ at {_safe(self.config.queue.url)} cannot be reached: {type(exc).__name__}: {exc}",
            ) from None
        publish_channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._publisher = await publish_channel.declare_exchange(
            self.names.exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._consumer_channel = await self._connection.channel()
        await self._consumer_channel.set_qos(prefetch_count=self.config.queue.prefetch)
        for agreement in self.config.agreements:
            if agreement.endpoint:
                await self._declare_route(agreement.party)

    async def _declare_route(self, hop: str) -> AbstractQueue:
        async with self._declare_lock:
            if hop in self._route_queues:
                return self._route_queues[hop]
            assert self._consumer_channel is not None
            exchange = await self._consumer_channel.declare_exchange(
                self.names.exchange, aio_pika.ExchangeType.DIRECT, durable=True
            )
            queue = await self._consumer_channel.declare_queue(self.names.route(hop), durable=True, arguments=QUORUM)
            await queue.bind(exchange, routing_key=self.names.route(hop))
            parked = await self._consumer_channel.declare_queue(self.names.parked(hop), durable=True, arguments=QUORUM)
            await parked.bind(exchange, routing_key=self.names.parked(hop))
            self._route_queues[hop] = queue
            self._hops_declared.add(hop)
            if self._deliver is not None:
                self._consumers[hop] = (queue, await queue.consume(self._on_delivery))
            return queue

    async def _declare_retry(self, hop: str, delay_ms: int) -> str:
        name = self.names.retry(hop, delay_ms)
        if name in self._retry_queues:
            return name
        async with self._declare_lock:
            assert self._consumer_channel is not None
            exchange = await self._consumer_channel.declare_exchange(
                self.names.exchange, aio_pika.ExchangeType.DIRECT, durable=True
            )
            queue = await self._consumer_channel.declare_queue(
                name,
                durable=True,
                arguments={
                    **QUORUM,
                    "x-message-ttl": delay_ms,
                    "x-dead-letter-exchange": self.names.exchange,
                    "x-dead-letter-routing-key": self.names.route(hop),
                    # The TTL expiry moves the message with confirms inside the broker, so a
                    # delayed retry is not lost on the way back (needs reject-publish overflow).
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
            await queue.bind(exchange, routing_key=name)
            self._retry_queues.add(name)
        return name

    def health(self) -> str | None:
        if self._connection is None:
            return f"not connected to RabbitMQ at {_safe(self.config.queue.url)} (connecting)"
        if self._connection.is_closed or not self._connection.connected.is_set():
            # A robust connection clears ``connected`` while it tries to connect again.
            return f"the connection to RabbitMQ at {_safe(self.config.queue.url)} is closed (reconnecting)"
        return None

    def queue_names(self) -> list[str]:
        """Every queue this gateway declared so far (tests delete them afterwards)."""
        routes = [n for hop in sorted(self._hops_declared) for n in (self.names.route(hop), self.names.parked(hop))]
        return routes + sorted(self._retry_queues)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None
        # What belonged to that connection's channels: the next connect() declares them anew.
        self._publisher = self._consumer_channel = None
        self._route_queues.clear()

    # --- publishing -----------------------------------------------------------------------------

    async def _publish(self, message_id: str, routing_key: str, *, attempts: int = 0) -> None:
        """Publish and wait for the broker's confirm; raises if it is returned, nacked or late."""
        assert self._publisher is not None
        body = aio_pika.Message(
            message_id.encode("ascii"),
            message_id=message_id,
            content_type="text/plain",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={"epix-message-id": message_id, "epix-attempts": attempts},
        )
        confirmation = await self._publisher.publish(
            body, routing_key=routing_key, mandatory=True, timeout=self.config.queue.confirm_timeout_s
        )
        if not isinstance(confirmation, Basic.Ack):
            raise EpixError(ErrorCode.QUEUE_UNAVAILABLE, f"RabbitMQ did not confirm message {message_id}: {confirmation!r}")

    def notify(self) -> None:
        self._wake.set()

    async def relay_once(self) -> tuple[int, int]:
        """Publish the queued messages the broker has not confirmed yet: (confirmed, not confirmed)."""
        batch = await self.store.unpublished(limit=RELAY_BATCH)

        async def one(item) -> bool:
            hop = item.via or item.receiver
            try:
                if hop not in self._route_queues:
                    await self._declare_route(hop)
                await self._publish(item.message_id, self.names.route(hop))
            except aio_pika.exceptions.DeliveryError:
                # Returned: no queue is bound for this route (deleted under us?). Declare it again
                # and publish on the next round; the row stays unmarked, so nothing is dropped.
                log.warning("queue.returned", message_id=item.message_id, hop=hop)
                self._route_queues.pop(hop, None)
                return False
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # connection lost, confirm late: the next round tries again
                log.warning("queue.publish_failed", message_id=item.message_id, error=f"{type(exc).__name__}: {exc}")
                return False
            await self.store.mark_published(item.message_id, item.seq)
            return True

        results = await asyncio.gather(*(one(item) for item in batch))
        return sum(results), len(results) - sum(results)

    async def _relay(self) -> None:
        backoff = 0.05
        while True:
            self._wake.clear()
            confirmed, failed = await _quietly(self.relay_once(), default=(0, 1))
            if failed:  # something could not be published: try again soon, not at once
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
                continue
            backoff = 0.05
            if confirmed >= RELAY_BATCH:
                continue
            await tasks.nap(self._wake, self.config.delivery.poll_s)

    async def _sweep(self) -> None:
        """The safety net: release what a crash left SENDING longer than the lease."""
        lease = self.config.delivery.lease_s
        while True:
            await asyncio.sleep(max(0.5, lease / 2))
            await _quietly(self.release_expired(lease))

    async def release_expired(self, lease_s: float) -> int:
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=lease_s)
        held = await self.store.list_messages(
            MessageFilter(status=MessageStatus.SENDING, direction=Direction.OUTBOUND, limit=1000)
        )
        released = 0
        for m in held:
            if m.receiver in self.config.agreements and self.config.agreements.get(m.receiver).delivery == "pull":
                continue  # a hub holds it for the member to pull: not ours to send
            if m.updated_at < cutoff:
                with contextlib.suppress(EpixError):
                    await self.store.transition(m.message_id, MessageStatus.SEND_ENQUEUED, actor=self.actor, detail=LEASE_EXPIRED_DETAIL)
                    released += 1
        if released:
            self.notify()
        return released

    # --- consuming ------------------------------------------------------------------------------

    async def run(self, deliver: Deliver) -> None:
        """Consume and relay until cancelled. However it ends (cancelled, or the broker gone in
        the middle of setting up), the connection is closed, so the next run (tasks.start runs
        it again after a failure) starts from a fresh one."""
        helpers: list[asyncio.Task] = []
        self._stopping = False
        try:
            await self.connect()
            self._deliver = deliver
            for hop, queue in list(self._route_queues.items()):
                self._consumers[hop] = (queue, await queue.consume(self._on_delivery))
            log.info("queue.rabbit.started", exchange=self.names.exchange, routes=sorted(self._route_queues))
            helpers = [asyncio.create_task(self._relay()), asyncio.create_task(self._sweep())]
            await asyncio.gather(*helpers)
        finally:
            self._stopping = True
            for task in helpers:
                task.cancel()
            for queue, tag in list(self._consumers.values()):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(queue.cancel(tag), 1.0)
            self._consumers.clear()
            # In-flight deliveries stop unacked: the broker gives them again, and the next consumer
            # reclaims the messages from SENDING (nothing is released twice).
            for task in list(self._inflight):
                task.cancel()
            await asyncio.gather(*helpers, *self._inflight, return_exceptions=True)
            self._deliver = None  # the next run's connect() declares routes without consuming yet
            await self.close()

    async def _on_delivery(self, delivery: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        message_id = delivery.body.decode("ascii", "replace")
        structlog.contextvars.bind_contextvars(message_id=message_id)
        try:
            if self._stopping:
                await delivery.nack(requeue=True)
                return
            try:
                await self.handle(message_id, redelivered=bool(delivery.redelivered))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The store or the broker failed us: give it back for another try, a little later.
                if self.store.unavailable(exc):
                    log.warning("queue.store_unavailable", error=f"{type(exc).__name__}: {exc}")
                else:
                    log.exception("queue.handle_failed")
                await asyncio.sleep(0.5)
                await delivery.nack(requeue=True)
                return
            await delivery.ack()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await delivery.nack(requeue=True)
            raise
        except Exception as exc:  # the channel went away: the broker redelivers it
            log.warning("queue.ack_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._inflight.discard(task)
            structlog.contextvars.unbind_contextvars("message_id")

    async def handle(self, message_id: str, *, redelivered: bool) -> MessageStatus | None:
        """Everything one delivery does before it is acked; the status it leaves in the store."""
        assert self._deliver is not None
        message = await self.store.get_message(message_id)
        if message is None or message.direction is not Direction.OUTBOUND:
            log.warning("queue.unknown_message")
            return None
        status = message.status
        if status.final:
            return status
        if status is MessageStatus.SEND_FAILURE:
            await self._park(message)  # a crash came between storing the outcome and parking it
            return status
        if status is MessageStatus.REJECTED:
            return status
        if status is MessageStatus.WAITING_FOR_RETRY and message.next_attempt_at is not None:
            if message.next_attempt_at > datetime.now(timezone.utc) + timedelta(milliseconds=100):
                await self._retry_later(message)  # crashed before the delay queue had it
                return status
        if status is MessageStatus.SENDING:
            if not redelivered:
                return status  # another delivery of it is in progress; that one settles it
            message = await self.store.transition(message_id, MessageStatus.SEND_ENQUEUED, actor=self.actor, detail=REDELIVERED_DETAIL)
        try:
            claimed = await self.store.transition(message_id, MessageStatus.SENDING, actor=self.actor)
            structlog.contextvars.bind_contextvars(receiver=claimed.receiver)
            stored = await self._deliver(claimed)
        except EpixError as exc:
            if exc.code is not ErrorCode.CONFLICT:
                raise
            # Someone else moved it meanwhile (a redelivered copy, the sweeper): theirs stands.
            held = await self.store.get_message(message_id)
            return None if held is None else held.status
        if stored.status is MessageStatus.WAITING_FOR_RETRY:
            await self._retry_later(stored)
        elif stored.status is MessageStatus.SEND_FAILURE:
            await self._park(stored)
        return stored.status

    async def _retry_later(self, message: MessageRecord) -> None:
        policy = self.config.agreements.get(message.receiver).retry
        due = message.next_attempt_at or datetime.now(timezone.utc)
        wanted = max(policy.delay_after(max(1, message.attempts)), (due - datetime.now(timezone.utc)).total_seconds())
        delay_ms = max(1, round(min(wanted, policy.max_delay_s) * 1000))
        name = await self._declare_retry(hop_of(message), delay_ms)
        await self._publish(message.message_id, name, attempts=message.attempts)

    async def _park(self, message: MessageRecord) -> None:
        hop = hop_of(message)
        if hop not in self._route_queues:
            await self._declare_route(hop)
        await self._publish(message.message_id, self.names.parked(hop), attempts=message.attempts)

    async def unpark(self, messages: Sequence[MessageRecord]) -> int:
        """Drain the parking queues of the hops of ``messages`` and drop every entry the store has
        moved past: its message is no longer SEND_FAILURE, or failed again since with more
        attempts (it is parked anew), or is unknown, or the entry repeats one already kept. The
        rest go back to the end of their queue. Nothing is published to a route here: the relay
        does that once per operator retry, from the store."""
        await self.connect()
        assert self._connection is not None
        channel = await self._connection.channel()  # its own: gets and acks apart from the consumers
        dropped = 0
        try:
            for hop in sorted({hop_of(m) for m in messages}):
                parked = await channel.declare_queue(self.names.parked(hop), durable=True, arguments=QUORUM)
                held_back: list[tuple[AbstractIncomingMessage, int]] = []
                kept: set[tuple[str, int]] = set()
                # Entries taken stay unacked until the queue is empty, so none is seen twice.
                while (entry := await parked.get(no_ack=False, fail=False)) is not None:
                    message_id = entry.body.decode("ascii", "replace")
                    parked_at = int((entry.headers or {}).get("epix-attempts") or 0)
                    held = await self.store.get_message(message_id)
                    if (
                        held is not None
                        and held.status is MessageStatus.SEND_FAILURE
                        and held.attempts <= parked_at
                        and (message_id, parked_at) not in kept
                    ):
                        kept.add((message_id, parked_at))
                        held_back.append((entry, parked_at))
                        continue
                    await entry.ack()
                    dropped += 1
                for entry, parked_at in held_back:
                    # Published again rather than requeued: a requeue counts as a delivery, and a
                    # quorum queue's delivery limit would drop an entry kept through many replays.
                    await self._publish(entry.body.decode("ascii", "replace"), self.names.parked(hop), attempts=parked_at)
                    await entry.ack()
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        if dropped:
            log.info("queue.unparked", entries=dropped)
        return dropped


async def _quietly(coro, default=0):
    try:
        return await coro
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("queue.background_failed", error=f"{type(exc).__name__}: {exc}")
        return default


def _safe(url: str | None) -> str:
    """The URL without its password, for messages and logs."""
    if not url or "@" not in url:
        return str(url)
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[1]}"
