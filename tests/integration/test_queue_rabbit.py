"""What only RabbitMQ does, against the real broker: publisher confirms, returned (unroutable)
messages, redelivery after a consumer dies before acking, the delay and parking queues, and a
connection cut mid-run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aio_pika
import pytest

from domain.messages import MessageStatus
from gateway.queue import open_queue
from gateway.store.sqlite import SqliteStore
from tests.conftest import eventually
from tests.integration.queues import RETRY, Harness, gateway_config
from tests.rabbit import AMQP_URL, TcpProxy, delete_everything, require_rabbit, unique_prefix


@pytest.fixture
async def rabbit(tmp_path):
    """(make_harness, prefix): harnesses sharing one store and one queue prefix, as several
    gateway processes behind one database would."""
    await require_rabbit()
    prefix = unique_prefix()
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    made: list[Harness] = []

    def make(url: str = AMQP_URL, **queue) -> Harness:
        config = gateway_config(tmp_path, queue={"url": url, "prefix": prefix, "prefetch": 8, **queue})
        h = Harness(config, store)
        made.append(h)
        return h

    try:
        yield make, prefix
    finally:
        for h in made:
            await h.stop()
        await store.close()
        await delete_everything(prefix)


async def _declared(name: str):
    """The broker's count of the queue's messages and consumers, as a passive declare returns it."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        return (await channel.declare_queue(name, passive=True)).declaration_result
    finally:
        await connection.close()


async def queue_depth(name: str) -> int:
    return (await _declared(name)).message_count


async def consumers(name: str) -> int:
    return (await _declared(name)).consumer_count


async def test_the_relay_marks_a_message_published_only_once_the_broker_confirmed_it(rabbit):
    make, prefix = rabbit
    h = make()
    ids = await h.accept(7)
    h.queue = queue = open_queue(h.config, h.store, actor="t")
    await queue.open()  # connected, topology declared, nobody consuming

    assert len(await h.store.unpublished(limit=100)) == 7
    assert await queue.relay_once() == (7, 0)

    assert await h.store.unpublished(limit=100) == []
    assert await queue.relay_once() == (0, 0)  # published once, not again
    assert await queue_depth(f"{prefix}.CH.deliver.FR") == 7
    assert {(await h.store.get_message(i)).status for i in ids} == {MessageStatus.SEND_ENQUEUED}
    await queue.close()


async def test_a_returned_message_stays_unpublished_and_goes_out_once_its_route_exists_again(rabbit):
    make, prefix = rabbit
    h = make()
    h.queue = queue = open_queue(h.config, h.store, actor="t")
    await queue.open()
    connection = await aio_pika.connect(AMQP_URL)
    await (await connection.channel()).queue_delete(f"{prefix}.CH.deliver.FR")  # the route vanishes
    await connection.close()
    ids = await h.accept(3)

    assert await queue.relay_once() == (0, 3)  # mandatory: returned, not silently dropped
    assert {u.message_id for u in await h.store.unpublished(limit=100)} == set(ids)

    assert await queue.relay_once() == (3, 0)  # the relay declared the route again
    assert await queue_depth(f"{prefix}.CH.deliver.FR") == 3
    await queue.close()


async def test_a_consumer_that_dies_before_acking_leaves_the_message_to_another(rabbit):
    make, _ = rabbit
    proxy = await TcpProxy().start()
    first = make(url=proxy.url())
    await first.start()
    [message_id] = await first.accept(plan=["hang"])
    await asyncio.wait_for(first.worker.hanging.wait(), 10)  # the first consumer holds it, unacked
    second = make()
    await second.start()

    await proxy.stop()  # the first process vanishes from the broker's point of view

    [held] = await second.wait([message_id], {MessageStatus.ACKNOWLEDGED}, timeout=20)
    assert len(second.worker.sent[message_id]) == 1
    events = [e.detail for e in await second.store.message_events(message_id)]
    assert any(d and "delivered it again" in d for d in events)
    assert held.message_id == message_id


async def test_retries_wait_in_delay_queues_and_the_last_failure_is_parked_then_replayed(rabbit):
    make, prefix = rabbit
    h = make()
    await h.start()
    [message_id] = await h.accept(plan=["retry"] * RETRY["max_attempts"])

    await h.wait([message_id], {MessageStatus.SEND_FAILURE})
    names = h.queue.queue_names()
    assert f"{prefix}.CH.deliver.FR.retry.300" in names and f"{prefix}.CH.deliver.FR.retry.600" in names
    await eventually(lambda: queue_depth(f"{prefix}.CH.deliver.FR.parked"), 1)

    # An operator's retry, as POST /v1/messages/retry does it: the store first, then the parking queue.
    retried = await _operator_retry(h.store, message_id)
    h.queue.notify()
    assert await h.queue.unpark([retried]) == 1

    [held] = await h.wait([message_id], {MessageStatus.ACKNOWLEDGED})
    assert held.attempts == RETRY["max_attempts"] + 1
    assert await queue_depth(f"{prefix}.CH.deliver.FR.parked") == 0
    assert await h.queue.unpark([held]) == 0


async def test_unpark_drops_the_entries_the_store_has_moved_past_and_keeps_the_others(rabbit):
    make, prefix = rabbit
    h = make()
    h.queue = queue = open_queue(h.config, h.store, actor="t")
    await queue.open()  # nobody consuming: the parking queue holds exactly what the test puts in
    parked = f"{prefix}.CH.deliver.FR.parked"
    retried, failed_again, untouched = await h.accept(3)
    for message_id in (retried, failed_again, untouched):
        await _fail(h.store, message_id)
        await queue._publish(message_id, parked, attempts=1)
    await queue._publish(retried, parked, attempts=1)  # parked twice (a redelivery parks it again)
    await queue._publish(untouched, parked, attempts=1)
    first = await _operator_retry(h.store, retried)
    second = await _operator_retry(h.store, failed_again)
    await _fail(h.store, failed_again)  # sent again, failed again before the parking queue was drained
    await queue._publish(failed_again, parked, attempts=2)

    # retried x2, failed_again's first parking, untouched's second entry
    assert await queue.unpark([first, second]) == 4

    assert sorted(await _entries(parked)) == sorted([(failed_again, 2), (untouched, 1)])
    await queue.close()


async def _operator_retry(store, message_id: str):
    return await store.transition(
        message_id, MessageStatus.SEND_ENQUEUED, actor="operator:test", detail="manual retry", next_attempt_at=datetime.now(UTC)
    )


async def _fail(store, message_id: str) -> None:
    await store.transition(message_id, MessageStatus.SENDING, actor="t")
    await store.transition(message_id, MessageStatus.SEND_FAILURE, actor="t", error_code="PARTNER_UNAVAILABLE", increment_attempts=True)


async def _entries(name: str) -> list[tuple[str, int]]:
    """Take every entry off a queue: (message id, attempts when parked)."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        queue = await (await connection.channel()).declare_queue(name, passive=True)
        taken = []
        while (entry := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append((entry.body.decode(), entry.headers["epix-attempts"]))
        return taken
    finally:
        await connection.close()


async def test_a_connection_cut_mid_run_loses_nothing(rabbit):
    make, _ = rabbit
    proxy = await TcpProxy().start()
    h = make(url=proxy.url())
    await h.start()
    ids = await h.accept(30)
    await _until_some_acknowledged(h, ids)

    assert proxy.cut() >= 1  # the broker connection drops mid-run; the proxy still listens
    ids += await h.accept(30)  # accepted while the gateway reconnects

    await h.wait(ids, {MessageStatus.ACKNOWLEDGED}, timeout=40)
    assert sorted(h.worker.sent) == sorted(ids)
    await proxy.stop()




async def test_the_queue_says_it_is_unhealthy_while_the_broker_is_out_of_reach(rabbit):
    make, _ = rabbit
    proxy = await TcpProxy().start()
    h = make(url=proxy.url())
    await h.start()

    async def health():
        return h.queue.health()

    assert await health() is None
    await proxy.stop()  # the broker out of reach: connection dropped, reconnection refused

    async def unhealthy():
        said = h.queue.health()
        return said is not None and f"RabbitMQ at 127.0.0.1:{proxy.port}" in said.replace("amqp://", "") and "guest" not in said

    await eventually(unhealthy, True)
    ids = await h.accept(5)  # accepted while the broker is away: they wait, and are not lost
    await proxy.start()  # the same port again
    await eventually(health, None, timeout=40)
    await h.wait(ids, {MessageStatus.ACKNOWLEDGED}, timeout=40)
    assert sorted(h.worker.sent) == sorted(ids)
    # The delivery loop failed while the broker was away and was started again, each time said,
    # and consumes its route once, not once per start.
    assert h.crashes
    assert await consumers(h.queue.names.route("FR")) == 1
    await proxy.stop()


async def _until_some_acknowledged(h: Harness, ids, timeout: float = 10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not any(h.worker.sent.get(i) for i in ids):
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
