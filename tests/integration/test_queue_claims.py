"""The embedded queue under a backlog: one claim (one write transaction) takes several messages,
and nothing is sent twice or left behind."""

from __future__ import annotations

import asyncio

from domain.messages import MessageStatus
from gateway.queue.embedded import EmbeddedQueue
from gateway.store.sqlite import SqliteStore
from tests.integration.queues import Harness, gateway_config


class CountingStore(SqliteStore):
    def __init__(self, path) -> None:
        super().__init__(path)
        self.claims: list[int] = []  # how many messages each claim took

    async def claim_due(self, **kwargs):
        claimed = await super().claim_due(**kwargs)
        if claimed:
            self.claims.append(len(claimed))
        return claimed


async def test_a_backlog_is_claimed_several_messages_at_a_time(tmp_path):
    store = CountingStore(tmp_path / "store.db")
    await store.open()
    h = Harness(gateway_config(tmp_path), store)  # concurrency 8: claims of at least 2 under a backlog
    try:
        ids = await h.accept(60)  # all due before the sender starts: a backlog
        await h.start()
        assert isinstance(h.queue, EmbeddedQueue)
        await h.wait(ids, {MessageStatus.ACKNOWLEDGED})
    finally:
        await h.stop()
        await store.close()
    assert {i: len(h.worker.sent[i]) for i in ids} == {i: 1 for i in ids}
    assert sum(store.claims) == 60
    # Only the last claim of the backlog may take fewer than a refill's worth (here 2 of 8 slots).
    assert all(n >= 2 for n in store.claims[:-1]), store.claims
    assert len(store.claims) <= 60 // 2 + 1


async def test_without_a_backlog_a_message_is_claimed_at_once(tmp_path):
    store = CountingStore(tmp_path / "store.db")
    await store.open()
    h = Harness(gateway_config(tmp_path), store)
    try:
        await h.start()
        for _ in range(3):  # one at a time, each alone in the queue
            [message_id] = await h.accept(1)
            await h.wait([message_id], {MessageStatus.ACKNOWLEDGED}, timeout=5.0)
            await asyncio.sleep(0)
    finally:
        await h.stop()
        await store.close()
    assert store.claims == [1, 1, 1]
