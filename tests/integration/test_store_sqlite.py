"""SQLite-only behaviour of the store: how queued writes share a transaction and survive
cancellation of the tasks that asked for them."""

from __future__ import annotations

import asyncio
import threading

import pytest

from domain.messages import MessageStatus
from gateway.store import sqlite as sqlite_store
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


async def test_cancelling_the_task_that_leads_a_batch_does_not_strand_the_others(store, monkeypatch):
    # A batch's statements run on the loop; its COMMIT (the fsync) on the writer's thread, where
    # it can be held back here to cancel the task that started the batch while it commits.
    first_done, second_done = threading.Event(), threading.Event()
    gates = [first_done, second_done]
    real_commit = sqlite_store._commit

    def held_commit(conn):
        if gates:
            gates.pop(0).wait(timeout=30)
        real_commit(conn)

    monkeypatch.setattr(sqlite_store, "_commit", held_commit)
    busy = asyncio.create_task(accept(store, permit("P-B")))
    await _until(lambda: store._write_lock.locked() and not store._queued)
    leader = asyncio.create_task(accept(store, permit("P-L")))
    follower = asyncio.create_task(accept(store, permit("P-F")))
    await _queued(store, 2)
    first_done.set()  # the leader now commits its own write and the follower's in one batch
    await _until(lambda: busy.done() and store._write_lock.locked() and not store._queued)
    leader.cancel()
    await asyncio.sleep(0)
    second_done.set()

    (held,) = await asyncio.wait_for(follower, timeout=30)  # a guard against a hang, not a timing claim
    assert held.status is MessageStatus.SEND_ENQUEUED
    assert (await busy)[0].status is MessageStatus.SEND_ENQUEUED
    with pytest.raises(asyncio.CancelledError):
        await leader
    # The leader's write was in the committed batch: cancelling its caller did not undo it.
    assert [len(await store.get_permit_versions("CH", n)) for n in ("P-B", "P-L", "P-F")] == [1, 1, 1]


async def test_a_write_lock_held_by_another_process_is_waited_for_off_the_loop(store, tmp_path):
    # Another connection (as another process would) holds the write lock for a moment: the
    # gateway's write waits on the writer's thread, and the loop stays free meanwhile.
    import sqlite3

    other = sqlite3.connect(tmp_path / "epix.sqlite3", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    write = asyncio.create_task(accept(store, permit("P-W")))
    ticks = 0
    while ticks < 20:  # the loop keeps running while the write waits for the lock
        await asyncio.sleep(0.005)
        ticks += 1
    assert not write.done()
    other.execute("COMMIT")
    other.close()
    (held,) = await asyncio.wait_for(write, timeout=30)
    assert held.status is MessageStatus.SEND_ENQUEUED
