"""The operator's one way to replay, on the real broker: ``POST /v1/messages/retry`` on a gateway
whose queue is RabbitMQ sends each parked message again once, with its id, and takes it out of
the parking queue; the parking queue keeps showing what is still parked."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import aio_pika
import pytest

from domain.messages import Direction, MessageStatus
from simulators.network import build_network
from simulators.samples import make_permit
from tests.conftest import eventually
from tests.e2e.conftest import Cluster
from tests.rabbit import AMQP_URL, delete_everything, register, require_rabbit, unique_prefix

PARTIES = ("CH", "FR")


class Broker:
    """CH's queues on the broker: the parking queue's depth, and a tap on the delivery route."""

    def __init__(self, prefix: str) -> None:
        self.exchange = f"{prefix}.CH"
        self.route = f"{prefix}.CH.deliver.FR"
        self.parked = f"{self.route}.parked"
        self.tap = f"{prefix}.tap"
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def open(self) -> None:
        self._connection = await aio_pika.connect(AMQP_URL, timeout=5)

    async def close(self) -> None:
        await self._connection.close()

    async def depth(self, name: str) -> int:
        channel = await self._connection.channel()
        try:
            return (await channel.declare_queue(name, passive=True)).declaration_result.message_count
        finally:
            await channel.close()

    async def tap_route(self) -> None:
        """From now on every publish to the FR route is copied to the tap (a direct exchange
        gives a message to every queue bound with its routing key)."""
        channel = await self._connection.channel()
        queue = await channel.declare_queue(self.tap, durable=True)
        await queue.bind(self.exchange, routing_key=self.route)
        await channel.close()

    async def tapped(self) -> Counter:
        """Message ids published to the route since ``tap_route`` (taken off the tap)."""
        channel = await self._connection.channel()
        queue = await channel.declare_queue(self.tap, passive=True)
        seen = Counter()
        while (entry := await queue.get(no_ack=True, fail=False)) is not None:
            seen[entry.body.decode()] += 1
        await channel.close()
        return seen


@pytest.fixture
async def rabbit_ch(tmp_path):
    """CH sending through RabbitMQ (its own queue prefix, deleted afterwards) to FR; 2 attempts."""
    await require_rabbit()
    prefix = unique_prefix()
    broker = Broker(prefix)
    register(prefix, [broker.route, broker.parked, broker.tap])
    net = build_network(
        tmp_path / "net", PARTIES, queue_urls={"CH": AMQP_URL}, queue_prefix=prefix,
        retry={"max_attempts": 2, "first_delay_s": 0.1, "factor": 2.0, "max_delay_s": 0.2},
    )  # fmt: skip
    await broker.open()
    try:
        async with Cluster(net).running(PARTIES) as cluster:
            yield cluster, broker
    finally:
        await broker.close()
        await delete_everything(prefix)


async def _parked_while_fr_is_down(cluster, broker, n: int) -> list[str]:
    await cluster.stop("FR")
    ids = []
    for i in range(n):
        permit = make_permit(random.Random(300 + i), issuer="CH", importer_country="FR", number=f"CH26-PARK{i}")
        status, body = await cluster.submit(permit)
        assert status == 202, body
        ids.append(body["messages"][0]["message_id"])
    for message_id in ids:
        await cluster.wait_status("CH", message_id, {MessageStatus.SEND_FAILURE})
    await eventually(lambda: broker.depth(broker.parked), n)
    return ids


async def test_bulk_retry_sends_each_parked_message_once_with_its_id_and_empties_the_parking_queue(rabbit_ch):
    cluster, broker = rabbit_ch
    ids = await _parked_while_fr_is_down(cluster, broker, 3)
    await broker.tap_route()

    status, err = await cluster.post_json("CH", "/v1/messages/retry", {"receiver": "FR"})  # an MA token
    assert status == 403 and err["code"] == "FORBIDDEN"
    assert await broker.depth(broker.parked) == 3

    await cluster.start("FR")
    status, body = await cluster.post_json("CH", "/v1/messages/retry", {"receiver": "FR"}, operator=True)

    assert status == 202 and sorted(body["retried"]) == sorted(ids) and body["unparked"] == 3
    for message_id in ids:
        await cluster.wait_status("CH", message_id, {MessageStatus.ACKNOWLEDGED})
        assert (await cluster.store("FR").get_message(message_id)).direction is Direction.INBOUND
    assert await broker.depth(broker.parked) == 0
    await asyncio.sleep(0.5)
    assert await broker.tapped() == Counter(ids)  # on the route once each, no more

    status, body = await cluster.post_json("CH", "/v1/messages/retry", {}, operator=True)
    assert status == 202 and body == {"retried": [], "count": 0, "unparked": 0, "payload_removed": []}
    assert await broker.tapped() == Counter()


async def test_a_replayed_message_that_fails_again_is_parked_once_not_twice(rabbit_ch):
    cluster, broker = rabbit_ch
    ids = await _parked_while_fr_is_down(cluster, broker, 3)
    await broker.tap_route()

    status, body = await cluster.post_json("CH", "/v1/messages/retry", {"receiver": "FR"}, operator=True)  # FR still down

    assert status == 202 and sorted(body["retried"]) == sorted(ids)
    for message_id in ids:  # its attempts were used up already: the first failure parks it again
        await eventually(lambda: _status(cluster, message_id), MessageStatus.SEND_FAILURE)
    # The parking publish follows the stored SEND_FAILURE (and its confirm may take a while): wait
    # for the new parking of each, then make sure nothing more comes (the old one was dropped).
    await eventually(lambda: broker.depth(broker.parked), 3)
    await asyncio.sleep(0.5)
    assert await broker.depth(broker.parked) == 3
    assert await broker.tapped() == Counter(ids)

    # One by one works the same way.
    await cluster.start("FR")
    async with cluster.http.post(
        f"{cluster.url('CH')}/v1/messages/{ids[0]}/retry", headers=cluster.headers("CH", operator=True)
    ) as resp:
        assert resp.status == 202
    await cluster.wait_status("CH", ids[0], {MessageStatus.ACKNOWLEDGED})
    assert await broker.depth(broker.parked) == 2
    assert await broker.tapped() == Counter(ids[:1])


async def _status(cluster, message_id: str) -> MessageStatus:
    return (await cluster.store("CH").get_message(message_id)).status
