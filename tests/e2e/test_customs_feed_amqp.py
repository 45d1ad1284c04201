"""The pre-arrival feed over AMQP, against the real broker: CH issues permits to FR, whose gateway
hands each to FR customs' queue exactly once, persistent, with its risk assessment, and keeps
what it could not hand over (broker down, queue gone, queue full) until the broker confirms it."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aio_pika
import aiormq
import pytest

from domain.messages import MessageStatus
from tests.conftest import eventually
from tests.e2e.conftest import STORES, customs_network, customs_permit
from tests.rabbit import AMQP_URL, TcpProxy, delete_everything, register, require_rabbit, unique_prefix

PARTIES = ("CH", "FR")


class CustomsQueue:
    """FR customs' side of the feed: reads the queue the gateway publishes to."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: list[aio_pika.abc.AbstractIncomingMessage] = []
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def open(self) -> None:
        self._connection = await aio_pika.connect(AMQP_URL, timeout=5)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def take(self, count: int, timeout: float = 15.0) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Wait until ``count`` messages in all were taken (acked) from the queue; all of them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        channel = await self._connection.channel()
        try:
            while len(self.received) < count:
                assert loop.time() < deadline, f"{len(self.received)} of {count} feed messages in {self.name}"
                try:
                    queue = await channel.declare_queue(self.name, passive=True)
                    if (message := await queue.get(no_ack=False, fail=False)) is not None:
                        await message.ack()
                        self.received.append(message)
                        continue
                except aio_pika.exceptions.ChannelNotFoundEntity:
                    pass  # the queue does not exist yet
                except aiormq.exceptions.ConnectionInternalError:
                    # A quorum queue just declared (or declared again) has no leader for a moment:
                    # RabbitMQ answers a get with "noproc" and closes the connection. Ask again.
                    await self.close()
                    await self.open()
                if channel.is_closed:
                    channel = await self._connection.channel()
                await asyncio.sleep(0.05)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return self.received

    async def depth(self) -> int:
        channel = await self._connection.channel()
        try:
            return (await channel.declare_queue(self.name, passive=True)).declaration_result.message_count
        finally:
            await channel.close()

    def bodies(self) -> list[dict]:
        return [json.loads(m.body) for m in self.received]


@pytest.fixture(params=STORES)
async def feed(request, tmp_path):
    """CH and FR; FR's feed goes to its own queue on the broker through a TCP proxy (a test can
    take the broker away). Yields (cluster, customs queue, proxy); the queue is deleted afterwards."""
    await require_rabbit()
    prefix = unique_prefix()
    name = f"{prefix}.customs.pre-arrival"
    register(prefix, [name])
    proxy = await TcpProxy().start()
    customs = CustomsQueue(name)
    await customs.open()
    settings = [f'feed_amqp_url = "{proxy.url()}"', f'feed_queue = "{name}"', "feed_poll_s = 0.05"]
    try:
        async with customs_network(tmp_path / "net", request.param, feed=settings, feed_only="FR", parties=PARTIES) as c:
            async with c.running(PARTIES):
                yield c, customs, proxy
    finally:
        await customs.close()
        await proxy.stop()
        await delete_everything(prefix)


async def _deliver(cluster, number: str) -> str:
    """CH issues a permit to FR; its message id once FR has stored it."""
    status, body = await cluster.submit(customs_permit(number))
    assert status == 202, body
    [message] = body["messages"]
    await cluster.wait_status("CH", message["message_id"], {MessageStatus.ACKNOWLEDGED})
    return message["message_id"]


async def _pending(cluster) -> list[str]:
    """FR's received permits not yet marked as handed to customs."""
    return [m.message_id for m in await cluster.store("FR").feed_pending(limit=100)]


async def _marked(cluster, timeout: float = 5.0) -> None:
    """Wait until FR marked everything it received as handed over (the confirm reached it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending := await _pending(cluster):
        assert loop.time() < deadline, f"not marked as handed over: {pending}"
        await asyncio.sleep(0.05)


async def test_a_received_permit_reaches_customs_once_as_a_persistent_message_with_its_assessment(feed):
    cluster, customs, _ = feed
    message_id = await _deliver(cluster, "CH26-300001")

    [message] = await customs.take(1)

    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == message_id and message.content_type == "application/json"
    assert message.content_encoding == "utf-8" and message.type == "permit.pre-arrival" and message.app_id == "epix-gateway/FR"
    held = await cluster.store("FR").get_message(message_id)
    assert message.correlation_id == held.conversation_id and message.timestamp is not None
    item = json.loads(message.body)
    assert {k: v for k, v in message.headers.items() if k.startswith("epix-")} == {
        "epix-message-id": message_id, "epix-event": "permit.pre-arrival", "epix-action": "issue",
        "epix-issuer": "CH", "epix-number": "CH26-300001", "epix-version": 1, "epix-risk-channel": item["risk"]["channel"],
    }  # fmt: skip
    assert {k: item[k] for k in ("event", "message_id", "action", "issuer", "number")} == {
        "event": "permit.pre-arrival", "message_id": message_id, "action": "issue", "issuer": "CH", "number": "CH26-300001",
    }  # fmt: skip
    permit = item["permit"]
    assert permit["number"] == "CH26-300001" and permit["importer"]["country"] == "FR" and permit["status"] == "VALID"
    assert [line["item"] for line in permit["lines"]] == ["A", "B"] and all(line["used"] == "0" for line in permit["lines"])
    assert item["signer"]["verified"] is True and item["signer"]["party"] == "CH"
    assert item["risk"]["channel"] in ("green", "yellow", "red") and item["risk"]["score"] >= 15
    assert "first_shipment" in {r["rule"] for r in item["risk"]["reasons"]}  # no write-off of this exporter yet
    assert all(set(r) == {"rule", "points", "reason"} for r in item["risk"]["reasons"])
    assert item["verification_url"] == "/v1/verifications/CH/CH26-300001" and item["received_at"]

    await _marked(cluster)  # the confirm reached FR: its mark follows the hand-over
    await asyncio.sleep(0.5)  # ten passes of the feed later: nothing more
    assert await customs.depth() == 0 and await _pending(cluster) == []
    # The gateway made the queue durable and quorum: declaring it otherwise would fail (PRECONDITION_FAILED).
    connection = await aio_pika.connect(AMQP_URL)
    try:
        await (await connection.channel()).declare_queue(customs.name, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        await connection.close()


async def test_a_broker_down_at_publish_time_loses_nothing_and_doubles_nothing(feed):
    cluster, customs, proxy = feed
    first = await _deliver(cluster, "CH26-300020")
    await customs.take(1)
    await _marked(cluster)  # confirmed and marked, before the broker goes

    await proxy.stop()  # the broker is gone: connections dropped, nobody listening
    second = await _deliver(cluster, "CH26-300021")
    third = await _deliver(cluster, "CH26-300022")
    await asyncio.sleep(1.0)  # several passes fail meanwhile
    assert await _pending(cluster) == [second, third]  # kept, in the order they arrived

    await proxy.start()  # the broker is back on the same address
    await customs.take(3)
    await _marked(cluster)
    await asyncio.sleep(0.5)
    assert [m.message_id for m in customs.received] == [first, second, third]
    assert await customs.depth() == 0 and await _pending(cluster) == []


async def test_a_queue_deleted_under_the_feed_is_declared_again_and_the_permit_not_dropped(feed):
    cluster, customs, _ = feed
    await _deliver(cluster, "CH26-300030")
    await customs.take(1)
    await _marked(cluster)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        await (await connection.channel()).queue_delete(customs.name)  # the feed's channel stays open
    finally:
        await connection.close()

    message_id = await _deliver(cluster, "CH26-300031")

    # Published to no queue: the broker returns it (mandatory) and the feed declares the queue again.
    [_, again] = await customs.take(2)
    assert again.message_id == message_id
    await _marked(cluster)
    await asyncio.sleep(0.5)
    assert await customs.depth() == 0 and await _pending(cluster) == []


async def test_a_full_queue_customs_declared_refuses_the_publish_and_the_permit_waits(feed):
    cluster, customs, _ = feed
    connection = await aio_pika.connect(AMQP_URL)
    try:
        # Customs' own queue, holding one message at most: the broker nacks the next publish.
        channel = await connection.channel()
        await channel.declare_queue(customs.name, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    finally:
        await connection.close()
    first = await _deliver(cluster, "CH26-300040")
    second = await _deliver(cluster, "CH26-300041")
    await eventually(lambda: _pending(cluster), [second])  # the first went in, confirmed and marked
    await asyncio.sleep(1.0)  # several passes of the second fail meanwhile
    assert await customs.depth() == 1 and await _pending(cluster) == [second]

    await customs.take(2)  # customs takes the first; the second goes in at a later pass

    assert [m.message_id for m in customs.received] == [first, second]
    await _marked(cluster)
    await asyncio.sleep(0.5)
    assert await customs.depth() == 0 and await _pending(cluster) == []


async def test_a_restarted_gateway_does_not_publish_again_what_the_broker_confirmed(feed):
    cluster, customs, _ = feed
    first = await _deliver(cluster, "CH26-300050")
    await customs.take(1)
    await _marked(cluster)

    await cluster.stop("FR")
    await cluster.start("FR")  # same store: the feed starts again from its queue, which the confirm emptied
    second = await _deliver(cluster, "CH26-300051")

    await customs.take(2)
    await _marked(cluster)
    await asyncio.sleep(0.5)
    assert [m.message_id for m in customs.received] == [first, second]
    assert await customs.depth() == 0
