"""The retention job without a database: cutoffs from the policy, the report ``epix purge``
prints, and a background task that outlives a failed run."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from domain.errors import EpixError, ErrorCode
from gateway.config import RetentionConfig
from gateway.retention import RetentionWorker, cutoffs, report_lines
from gateway.store.retention import Cutoffs, PurgeCounts, PurgeRun

NOW = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


def test_each_setting_is_a_cutoff_and_a_missing_one_keeps_forever():
    c = cutoffs(RetentionConfig(payload_days=30, message_days=365, verification_days=90), NOW)
    assert c == Cutoffs(
        messages=NOW - timedelta(days=365), payloads=NOW - timedelta(days=30), idempotency_keys=None,
        verifications=NOW - timedelta(days=90),
    )  # fmt: skip
    assert not cutoffs(RetentionConfig(), NOW).any


def test_the_report_names_every_category_and_its_setting():
    policy = RetentionConfig(payload_days=30, message_days=365)
    run = PurgeRun(4, "epix purge", NOW, NOW, cutoffs(policy, NOW), PurgeCounts(messages=2, events=9, payloads=7), 3)
    lines = report_lines(run, policy)
    assert lines[0] == "retention run 4 (3 batches) removed:"
    assert lines[1].split()[:2] == ["messages", "2"] and "(message_days = 365)" in lines[1]
    assert lines[2].split()[:2] == ["events", "9"]
    assert lines[3].split()[:2] == ["payloads", "7"] and "receipts, history kept" in lines[3]
    assert lines[4].split()[:2] == ["idempotency_keys", "-"] and "kept forever" in lines[4]
    dry = report_lines(PurgeRun(None, "x", NOW, None, run.cutoffs, run.counts, 0, dry_run=True), policy)
    assert dry[0].startswith("dry run, nothing removed") and dry[1:] == lines[1:]


class FlakyStore:
    """Fails its first purge, finds another process purging on the second, then works."""

    def __init__(self) -> None:
        self.calls = 0

    async def purge(self, limits, *, actor, batch, dry_run):
        self.calls += 1
        if self.calls == 1:
            raise OSError("disk on fire")
        if self.calls == 2:
            raise EpixError(ErrorCode.CONFLICT, "Another gateway process is purging this database right now.")
        return PurgeRun(self.calls, actor, NOW, NOW, limits, PurgeCounts(), 1)


async def test_the_background_task_outlives_a_failed_run():
    store = FlakyStore()
    worker = RetentionWorker(RetentionConfig(message_days=365, interval_s=0.001), store, party="CH")
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(5):  # a task that died on the first failure would never get here
        while store.calls < 4:
            await asyncio.sleep(0.001)
    assert not task.done()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
