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


def _verification(vid: str):
    from gateway.store.ledger import VerificationRecord

    return VerificationRecord(vid, "CH", "P-1", "VALID", ("ok",), "customs-fr", None, False, T0)


async def test_audit_batches_alone_run_on_the_writers_thread_and_mixed_batches_on_the_loop(store, monkeypatch):
    threads: list[list[str]] = []
    real = sqlite_store._run_jobs

    def recorded(conn, jobs):
        threads.append([threading.current_thread().name, len(jobs)])
        return real(conn, jobs)

    monkeypatch.setattr(sqlite_store, "_run_jobs", recorded)
    await store.record_verifications([_verification("v-1"), _verification("v-2")])
    async with store._write_lock:  # both queue up and are committed in one batch
        audit = asyncio.create_task(store.record_verifications([_verification("v-3")]))
        accepted = asyncio.create_task(accept(store, permit("P-1")))
        await _queued(store, 2)
    await audit
    await accepted

    loop_thread = threading.current_thread().name
    assert threads[0][0].startswith("epix-sqlite-writer") and threads[0][1] == 1
    assert threads[1] == [loop_thread, 2]
    assert [v.id for v in await store.list_verifications("CH", "P-1")] == ["v-3", "v-2", "v-1"]  # same time: by id
    assert len(await store.get_permit_versions("CH", "P-1")) == 1


async def test_a_refused_audit_batch_writes_none_of_its_rows_and_the_next_write_goes_through(store):
    import sqlite3

    await store.record_verifications([_verification("v-1")])
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):  # v-1 again: an audit row is never replaced
        await store.record_verifications([_verification("v-2"), _verification("v-1")])

    assert [v.id for v in await store.list_verifications("CH", "P-1")] == ["v-1"]
    await store.record_verifications([_verification("v-2")])
    assert {v.id for v in await store.list_verifications("CH", "P-1")} == {"v-1", "v-2"}
