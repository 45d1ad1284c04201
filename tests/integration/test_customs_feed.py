"""The pre-arrival feed's worker over a real store, on both backends: it starts from the oldest
permit not handed over however long the feed was down (warning when that is longer than
feed_backfill_s), an operator's feed_since is the only bound, and several gateway processes on
one store hand each permit over once, in order, taking turns."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from domain.messages import Direction
from gateway.customs.config import CustomsConfig
from gateway.customs.feed import FeedWorker
from gateway.store import Store, schema
from simulators.network import free_port
from tests.integration.records import accept, message, permit

DAY = timedelta(days=1)


class Customs:
    """A customs webhook that can be down (503) or slow, and records what it was handed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.down = False
        self.delay_s = 0.0
        self.received: list[str] = []
        self.received_at: list[datetime] = []  # when each of ``received`` came in
        self.refused = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/pre-arrival"

    async def start(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            item = await request.json()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.down:
                self.refused += 1
                return web.Response(status=503)
            self.received.append(item["message_id"])
            self.received_at.append(datetime.now(UTC))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/pre-arrival", receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self._runner.cleanup()


class Worker(FeedWorker):
    """The real worker, handing over an item that names the message only (what goes in an item is
    tested end to end in tests/e2e)."""

    async def item(self, message):
        return {"event": "permit.pre-arrival", "message_id": message.message_id}


@pytest.fixture
async def customs():
    c = Customs()
    await c.start()
    yield c
    await c.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def _worker(store: Store, http, customs: Customs, **settings) -> Worker:
    config = CustomsConfig(feed_url=customs.url, feed_poll_s=0.01, **settings)
    service = SimpleNamespace(store=store, customs=config, config=SimpleNamespace(party="FR"))
    return Worker(service, http)


@contextlib.asynccontextmanager
async def running(*workers: Worker):
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _received(store: Store, number: str, *, at: datetime) -> str:
    """FR stores a permit CH issued, as received at ``at``; its message id."""
    p = replace(permit(number, direction=Direction.INBOUND, sender="CH"), created_at=at)
    m = replace(message(p, created_at=at), payload=p.signed_xml)
    is_new, held = await store.store_inbound(p, m, actor="partner:CH")
    assert is_new
    return held.message_id


async def _until(condition, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_permit_that_waited_longer_than_the_backfill_through_an_outage_is_still_handed_over(backend, http, customs):
    store = await backend()
    now = datetime.now(UTC)
    old = await _received(store, "P-OLD", at=now - 2 * DAY)  # received while the feed was failing
    customs.down = True
    async with running(_worker(store, http, customs)):
        await _until(lambda: customs.refused >= 2)  # the feed fails, pass after pass ...
    # ... the gateway is stopped for a while; a day and more after the first permit, another one.
    recent = await _received(store, "P-NEW", at=now - timedelta(minutes=5))
    customs.down = False

    with capture_logs() as logs:
        async with running(_worker(store, http, customs, feed_backfill_s=DAY.total_seconds())):
            await _until(lambda: len(customs.received) == 2)
            await _marked(store)  # the worker stores each hand-over after customs' answer
            await asyncio.sleep(0.1)  # passes later, nothing more

    assert customs.received == [old, recent]  # the oldest first, each once
    assert await store.feed_pending(limit=10) == []
    [late] = [entry for entry in logs if entry["event"] == "feed.late"]
    assert late["log_level"] == "warning" and late["permits"] == 1 and late["oldest_message_id"] == old
    assert late["oldest_received_at"] == (now - 2 * DAY).isoformat()


async def test_a_restarted_gateway_hands_over_nothing_twice(backend, http, customs):
    store = await backend()
    first = await _received(store, "P-1", at=datetime.now(UTC))
    async with running(_worker(store, http, customs)):
        await _until(lambda: customs.received == [first])
        await _marked(store)  # stopped after the mark (before it, a copy is expected: at least once)
    second = await _received(store, "P-2", at=datetime.now(UTC))

    async with running(_worker(store, http, customs)):
        await _until(lambda: len(customs.received) == 2)
        await asyncio.sleep(0.1)

    assert customs.received == [first, second]


async def test_feed_since_is_the_only_bound_and_what_it_leaves_out_is_said(backend, http, customs):
    store = await backend()
    now = datetime.now(UTC)
    before = await _received(store, "P-BEFORE", at=now - 30 * DAY)
    after = await _received(store, "P-AFTER", at=now - 10 * DAY)  # far older than the backfill, still fed

    with capture_logs() as logs:
        async with running(_worker(store, http, customs, feed_since=now - 20 * DAY)):
            await _until(lambda: customs.received == [after])
            await _marked(store, leaving=1)  # all but the one before feed_since: after's hand-over is stored
            await asyncio.sleep(0.1)

    assert customs.received == [after]
    assert [m.message_id for m in await store.feed_pending(limit=10)] == [before]  # kept, should the bound move
    [not_fed] = [entry for entry in logs if entry["event"] == "feed.not_fed"]
    assert not_fed["log_level"] == "warning" and not_fed["permits"] == 1
    [late] = [entry for entry in logs if entry["event"] == "feed.late"]
    assert late["permits"] == 1 and late["oldest_message_id"] == after


async def test_gateway_processes_on_one_store_hand_each_permit_over_once_in_order(backend, http, customs):
    stores = [await backend(), await backend()]  # two gateway processes' stores on one database
    customs.delay_s = 0.005  # hand-overs take a moment, so that the passes of both overlap
    workers = [_worker(s, http, customs) for s in stores]
    sent: list[str] = []
    start = datetime.now(UTC)
    async with running(*workers):
        for i in range(30):
            # Received by either process, as a load balancer would spread them.
            sent.append(await _received(stores[i % 2], f"P-{i:03d}", at=start + timedelta(milliseconds=i)))
            if i % 5 == 0:
                await asyncio.sleep(0.02)
        await _until(lambda: len(customs.received) >= 30)
        await asyncio.sleep(0.2)  # passes of both later, nothing more
        assert await _holder(stores[0]) in {w.holder for w in workers}

    assert customs.received == sent
    assert await _holder(stores[1]) is None  # given up on the way out


async def test_a_turn_held_by_a_process_that_went_quiet_lapses(backend, http, customs):
    stores = [await backend(), await backend()]
    now = datetime.now(UTC)
    lapses = now + timedelta(seconds=0.5)
    # A process took the turn and stopped answering, without giving it up.
    assert await stores[0].feed_take_turn("FR@crashed", now=now, until=lapses)
    assert not await stores[1].feed_take_turn("FR@other", now=now, until=now + timedelta(seconds=60))
    first = await _received(stores[1], "P-1", at=now)

    async with running(_worker(stores[1], http, customs)):
        await _until(lambda: customs.received == [first])

    # Not its turn before the held one lapsed: customs got it only after. (Checked on the time it
    # arrived, not by looking a fixed while after the start, which a slow machine can outlast.)
    assert customs.received_at[0] >= lapses
    assert await _holder(stores[1]) is None  # given up on the way out


async def test_the_upgrade_queues_what_an_earlier_feed_never_handed_over(backend, monkeypatch):
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(m for m in schema.MIGRATIONS if m.version < 8))
    earlier = await backend()  # a store as the gateway before the feed's queue left it
    now = datetime.now(UTC)
    skipped = await _received(earlier, "P-SKIPPED", at=now - 3 * DAY)  # before that feed's 24-hour start
    sent = await _received(earlier, "P-SENT", at=now - timedelta(hours=1))
    waiting = await _received(earlier, "P-WAITING", at=now - timedelta(minutes=1))
    await accept(earlier, permit("P-OUT"))  # outbound: never customs' here
    await _execute(earlier, f"INSERT INTO customs_feed (message_id, sent_at, detail) VALUES ('{sent}', {_literal(now)}, 'webhook 204')")
    monkeypatch.undo()

    upgraded = await backend()

    assert [m.message_id for m in await upgraded.feed_pending(limit=10)] == [skipped, waiting]
    assert await upgraded.feed_backlog(before=now - DAY) == (1, now - 3 * DAY)


def _literal(at: datetime) -> str:
    return "'" + at.astimezone(UTC).isoformat(timespec="microseconds") + "'"


async def _execute(store: Store, sql: str) -> None:
    if hasattr(store, "pool"):
        await store.pool.execute(sql)
        return
    conn = sqlite3.connect(store.path, isolation_level=None)
    try:
        conn.execute(sql)
    finally:
        conn.close()


async def _marked(store: Store, timeout: float = 10.0, *, leaving: int = 0) -> None:
    """Wait until no more than ``leaving`` permits are pending (not marked as handed over)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(await store.feed_pending(limit=leaving + 1)) > leaving:
        assert loop.time() < deadline, "not marked as handed over"
        await asyncio.sleep(0.01)


async def _holder(store: Store) -> str | None:
    sql = "SELECT holder FROM customs_feed_turn"
    if hasattr(store, "pool"):
        return await store.pool.fetchval(sql)
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()
