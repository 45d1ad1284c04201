"""SQLite-only behaviour of the store: how queued writes share a transaction and survive
cancellation of the tasks that asked for them."""

from __future__ import annotations

import asyncio
import threading

import pytest

from domain.messages import MessageStatus
from gateway.store.sqlite import SqliteStore
from tests.integration.records import T0, Clock, accept, permit


@pytest.fixture
async def store(tmp_path):
    store = SqliteStore(tmp_path / "epix.sqlite3", clock=Clock())
    await store.open()
    yield store
    await store.close()


async def _queued(store: SqliteStore, count: int) -> None:
    """Yield to the loop until ``count`` writes wait in the queue."""
    while len(store._queued) < count:
        await asyncio.sleep(0)


async def test_a_write_cancelled_before_it_started_does_not_happen(store):
    async with store._write_lock:  # the writer is busy: the next writes queue up
        first = asyncio.create_task(accept(store, permit("P-1")))
        cancelled = asyncio.create_task(accept(store, permit("P-2")))
        third = asyncio.create_task(accept(store, permit("P-3")))
        await _queued(store, 3)
        cancelled.cancel()
        await asyncio.sleep(0)

    await first
    await third
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert [len(await store.get_permit_versions("CH", n)) for n in ("P-1", "P-2", "P-3")] == [1, 0, 1]


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.001)


async def test_cancelling_the_task_that_leads_a_batch_does_not_strand_the_others(store):
    first_done, second_done = threading.Event(), threading.Event()

    def slow_write(event):
        def write(conn):
            event.wait(timeout=30)
            return "written"

        return write

    busy = asyncio.create_task(store._write(slow_write(first_done)))
    await _until(lambda: store._write_lock.locked() and not store._queued)
    leader = asyncio.create_task(store._write(slow_write(second_done)))
    follower = asyncio.create_task(accept(store, permit("P-F")))
    await _queued(store, 2)
    first_done.set()  # the leader now commits its own write and the follower's in one batch
    await _until(lambda: busy.done() and store._write_lock.locked() and not store._queued)
    leader.cancel()
    await asyncio.sleep(0)
    second_done.set()

    (held,) = await asyncio.wait_for(follower, timeout=30)  # a guard against a hang, not a timing claim
    assert held.status is MessageStatus.SEND_ENQUEUED
    assert await busy == "written"
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert [m.message_id for m in await store.claim_due(limit=5, lease_s=5, now=T0, actor="s")] == [held.message_id]
