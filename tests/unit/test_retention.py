"""The retention job without a database: cutoffs from the policy, the report ``epix purge``
prints, and a background task that outlives a failed run."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from domain.errors import EpixError, ErrorCode
from gateway.config import RetentionConfig
from gateway.customs.config import CustomsConfig
from gateway.retention import RetentionWorker, cutoffs, feed_hold, purge, report_lines, run_view
from gateway.store.retention import NO_FEED, Cutoffs, FeedHold, PurgeCounts, PurgeRun

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


def test_what_is_kept_for_customs_is_reported_and_shown():
    policy = RetentionConfig(message_days=365)
    run = PurgeRun(5, "epix purge", NOW, NOW, cutoffs(policy, NOW), PurgeCounts(messages=2, events=6), 1, kept_for_feed=3)
    lines = report_lines(run, policy)
    assert lines[-1].split()[:2] == ["kept_for_feed", "3"] and "has not handed over yet" in lines[-1]
    assert run_view(run)["kept"] == {"customs_feed": 3} and run_view(run)["removed"]["messages"] == 2
    # Nothing kept: the report is as it always was.
    assert not any("kept_for_feed" in line for line in report_lines(replace(run, kept_for_feed=0), policy))


def test_only_a_gateway_with_a_feed_keeps_anything_for_it():
    since = NOW - timedelta(days=10)
    assert feed_hold(None) == NO_FEED and feed_hold(CustomsConfig()) == NO_FEED and NO_FEED.floor is None
    assert feed_hold(CustomsConfig(feed_url="http://customs/pre-arrival")) == FeedHold()
    assert feed_hold(CustomsConfig(feed_amqp_url="amqp://customs", feed_since=since)) == FeedHold(since=since)
    assert FeedHold(since=since).floor == since
    assert FeedHold().floor < datetime(1970, 1, 1, tzinfo=UTC)  # before every message: all of the queue


class KeepingStore:
    """Keeps back two messages for the feed, and records what it was asked to keep."""

    def __init__(self) -> None:
        self.feeds = []

    async def purge(self, limits, *, actor, batch, dry_run, feed):
        self.feeds.append(feed)
        return PurgeRun(None if dry_run else 1, actor, NOW, NOW, limits, PurgeCounts(), 1, dry_run=dry_run, kept_for_feed=2)


async def test_a_run_that_keeps_messages_for_the_feed_says_so_in_the_log():
    store = KeepingStore()
    customs = CustomsConfig(feed_url="http://customs/pre-arrival")
    with capture_logs() as logs:
        run = await purge(store, RetentionConfig(message_days=365), actor="t", customs=customs, now=NOW)
    assert run.kept_for_feed == 2 and store.feeds == [FeedHold()]
    [done] = [e for e in logs if e["event"] == "retention.purged"]
    assert done["kept_for_feed"] == 2
    [warning] = [e for e in logs if e["event"] == "retention.kept_for_feed"]
    assert warning["log_level"] == "warning" and warning["messages"] == 2 and "pre-arrival feed" in warning["reason"]


class FlakyStore:
    """Fails its first purge, finds another process purging on the second, then works."""

    def __init__(self) -> None:
        self.calls = 0
        self.feeds = []

    async def purge(self, limits, *, actor, batch, dry_run, feed):
        self.feeds.append(feed)
        self.calls += 1
        if self.calls == 1:
            raise OSError("disk on fire")
        if self.calls == 2:
            raise EpixError(ErrorCode.CONFLICT, "Another gateway process is purging this database right now.")
        return PurgeRun(self.calls, actor, NOW, NOW, limits, PurgeCounts(), 1)


async def test_the_background_task_outlives_a_failed_run():
    store = FlakyStore()
    customs = CustomsConfig(feed_url="http://customs/pre-arrival", feed_since=NOW)
    worker = RetentionWorker(RetentionConfig(message_days=365, interval_s=0.001), store, party="CH", customs=customs)
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(5):  # a task that died on the first failure would never get here
        while store.calls < 4:
            await asyncio.sleep(0.001)
    assert not task.done()
    assert set(store.feeds) == {FeedHold(since=NOW)}  # every run keeps what the gateway's feed still owes customs
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
