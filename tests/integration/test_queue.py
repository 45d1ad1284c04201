"""The queue's behaviour, the same tests on both backends: the embedded store queue and RabbitMQ.

The sender is the real DeliveryWorker (its outcome logic: retry, park, reject) with the HTTP call
replaced by a script, so each test decides what the partner answers and counts what was sent.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from domain.messages import MessageStatus
from gateway.store.sqlite import SqliteStore
from tests.integration.queues import RETRY, Harness, ScriptedWorker, gateway_config
from tests.rabbit import AMQP_URL, delete_everything, require_rabbit, unique_prefix


@pytest.fixture(params=["embedded", "rabbit"])
async def harness(request, tmp_path):
    queue = None
    if request.param == "rabbit":
        await require_rabbit()
        queue = {"url": AMQP_URL, "prefix": unique_prefix(), "prefetch": 8, "confirm_timeout_s": 5.0}
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    h = Harness(gateway_config(tmp_path, queue=queue), store)
    h.kind = request.param
    try:
        yield h
    finally:
        await h.stop()
        await store.close()
        if queue:
            await delete_everything(queue["prefix"])


async def test_every_accepted_message_is_sent_once_and_acknowledged(harness):
    await harness.start()
    ids = await harness.accept(40)

    held = await harness.wait(ids, {MessageStatus.ACKNOWLEDGED})

    assert {i: len(harness.worker.sent[i]) for i in ids} == {i: 1 for i in ids}
    assert all(m.attempts == 1 for m in held)


async def test_messages_accepted_before_the_queue_starts_are_sent(harness):
    ids = await harness.accept(5)  # e.g. accepted just before a crash
    await harness.start()

    await harness.wait(ids, {MessageStatus.ACKNOWLEDGED})

    assert sorted(harness.worker.sent) == sorted(ids)


async def test_a_retry_waits_longer_each_time_then_succeeds(harness):
    await harness.start()
    [message_id] = await harness.accept(plan=["retry", "retry"])

    [held] = await harness.wait([message_id], {MessageStatus.ACKNOWLEDGED})

    times = harness.worker.sent[message_id]
    assert len(times) == 3 and held.attempts == 3
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    assert first_gap >= RETRY["first_delay_s"] * 0.9
    assert second_gap >= RETRY["first_delay_s"] * RETRY["factor"] * 0.9


async def test_after_the_last_attempt_it_is_parked_and_an_operator_retry_keeps_the_id(harness):
    await harness.start()
    [message_id] = await harness.accept(plan=["retry"] * RETRY["max_attempts"])

    [parked] = await harness.wait([message_id], {MessageStatus.SEND_FAILURE})
    assert parked.attempts == RETRY["max_attempts"]
    await asyncio.sleep(0.5)
    assert len(harness.worker.sent[message_id]) == RETRY["max_attempts"]  # parked means nobody sends it

    await harness.store.transition(
        message_id, MessageStatus.SEND_ENQUEUED, actor="operator:test", detail="manual retry", next_attempt_at=datetime.now(UTC)
    )
    harness.worker.wake()

    [done] = await harness.wait([message_id], {MessageStatus.ACKNOWLEDGED})
    assert done.message_id == message_id
    assert len(harness.worker.sent[message_id]) == RETRY["max_attempts"] + 1


async def test_a_rejection_is_final_and_never_sent_again(harness):
    await harness.start()
    [message_id] = await harness.accept(plan=["reject"])

    [held] = await harness.wait([message_id], {MessageStatus.REJECTED})
    await asyncio.sleep(0.5)

    assert held.last_error_code == "SCHEMA_INVALID"
    assert len(harness.worker.sent[message_id]) == 1


async def test_a_graceful_stop_hands_back_what_is_in_flight_and_a_restart_sends_it(harness):
    await harness.start()
    [message_id] = await harness.accept(plan=["hang"])
    await asyncio.wait_for(harness.worker.hanging.wait(), 10)

    await harness.stop()
    harness.worker = ScriptedWorker(harness.config, harness.store)  # a new process: answers "ack"
    await harness.start()

    # The lease is 60 s: only the hand-back (embedded) or the broker's redelivery (RabbitMQ)
    # can make this quick.
    [held] = await harness.wait([message_id], {MessageStatus.ACKNOWLEDGED}, timeout=15)
    assert held.message_id == message_id
    assert len(harness.worker.sent[message_id]) == 1


async def test_messages_the_sender_takes_as_they_are_accepted_are_sent_once(harness):
    await harness.start()
    ids = await harness.accept(40, hand_over=True)

    held = await harness.wait(ids, {MessageStatus.ACKNOWLEDGED})

    assert {i: len(harness.worker.sent[i]) for i in ids} == {i: 1 for i in ids}
    assert all(m.attempts == 1 for m in held)
    histories = [[e.status for e in await harness.store.message_events(i)] for i in ids]
    assert all(h == [MessageStatus.SEND_ENQUEUED, MessageStatus.SENDING, MessageStatus.ACKNOWLEDGED] for h in histories)


@pytest.fixture
async def embedded(tmp_path):
    """The embedded queue alone: only it takes messages at accept (RabbitMQ's relay feeds the broker)."""
    store = SqliteStore(tmp_path / "store.db")
    await store.open()
    h = Harness(gateway_config(tmp_path), store)
    try:
        yield h
    finally:
        await h.stop()
        await store.close()


async def test_only_free_slots_are_taken_at_accept_and_the_rest_waits_for_the_queue(embedded):
    harness = embedded
    await harness.start()
    await asyncio.sleep(0.05)  # the queue's loop runs and can take hand-overs
    hung = await harness.accept(8, plan=["hang"], hand_over=True)  # concurrency is 8: all slots busy
    assert [m.status for m in [await harness.store.get_message(i) for i in hung]] == [MessageStatus.SENDING] * 8
    [waiting] = await harness.accept(1, hand_over=True)

    assert (await harness.store.get_message(waiting)).status is MessageStatus.SEND_ENQUEUED
    assert harness.queue.reserve(1) == 0


async def test_a_graceful_stop_hands_back_a_message_taken_at_accept(harness):
    await harness.start()
    await asyncio.sleep(0.05)
    [message_id] = await harness.accept(plan=["hang"], hand_over=True)
    await asyncio.wait_for(harness.worker.hanging.wait(), 10)

    await harness.stop()
    harness.worker = ScriptedWorker(harness.config, harness.store)
    await harness.start()

    [held] = await harness.wait([message_id], {MessageStatus.ACKNOWLEDGED}, timeout=15)
    assert len(harness.worker.sent[message_id]) == 1


async def test_a_message_taken_at_accept_while_the_sender_stops_is_handed_back_not_left_to_its_lease(embedded):
    harness = embedded
    await harness.start()
    await asyncio.sleep(0.05)  # the queue's loop runs and can take hand-overs
    store, gate = harness.store, asyncio.Event()

    async def accept_outbound(permit, messages, *, actor, claim):
        assert claim is not None  # the sender took it
        await gate.wait()  # the accepting transaction is still on its way when the stop begins
        return await store.accept_outbound(permit, messages, actor=actor, claim=claim)

    store_accept = store.accept_outbound
    store.accept_outbound = accept_outbound
    accepting = asyncio.create_task(harness.accept(hand_over=True))
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(harness.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # the stop waits for the accept to store what it took
    store.accept_outbound = store_accept
    gate.set()
    [message_id] = await accepting
    await stopping

    held = await store.get_message(message_id)
    # Released at once (the lease is 60 s): a restart, or another instance, sends it now.
    assert held.status is MessageStatus.SEND_ENQUEUED and held.lease_until is None, held
    assert (await store.message_events(message_id))[-1].detail == "sender stopped; released for another attempt"


class GatedStore(SqliteStore):
    """Holds the answer to the queue's ``next_due_at`` (the read it makes on its way to sleep)
    until let go: what is stored meanwhile comes after that read."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.answered = asyncio.Event()
        self.gate = asyncio.Event()

    async def next_due_at(self):
        due = await super().next_due_at()
        self.answered.set()
        await self.gate.wait()
        return due


async def test_a_wake_up_that_comes_while_the_queue_is_on_its_way_to_sleep_is_not_lost(tmp_path):
    store = GatedStore(tmp_path / "store.db")
    await store.open()
    h = Harness(gateway_config(tmp_path, poll_s=60.0), store)  # only a wake-up can be in time
    try:
        await h.start()
        await asyncio.wait_for(store.answered.wait(), 10)  # nothing due: "nothing" is its answer
        [message_id] = await h.accept(1)  # stored, then notify(), before the queue naps
        store.gate.set()

        await h.wait([message_id], {MessageStatus.ACKNOWLEDGED}, timeout=10)
    finally:
        store.gate.set()
        await h.stop()
        await store.close()
