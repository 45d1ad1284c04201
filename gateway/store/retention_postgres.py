"""Retention on PostgreSQL: one connection holds a session advisory lock for the whole run, so
that of several gateway processes on one database only one purges at a time; each batch is a
short transaction that locks only the rows it removes (``FOR UPDATE SKIP LOCKED``: a message an
operator is retrying right now is left for the next run)."""

from __future__ import annotations

import contextlib
from datetime import datetime

import asyncpg

from domain.errors import EpixError, ErrorCode

from . import retention as rq
from . import schema as q
from .base import as_utc
from .retention import RETENTION_ACTOR, Category, Cutoffs, FeedHold, PurgeCounts, PurgeRun, Retention, check_batch

_LOCK = "SELECT pg_try_advisory_lock(hashtext('epix-retention:' || current_schema()))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext('epix-retention:' || current_schema()))"
_LOCKED = " FOR UPDATE OF m SKIP LOCKED"
_COUNT_PAYLOADS_DUE = rq.COUNT_PAYLOADS_DUE.format(indexed="")
_COUNT_PAYLOADS_KEPT_ROWS_DUE = rq.COUNT_PAYLOADS_KEPT_ROWS_DUE.format(indexed="")
_DROP_PAYLOADS = f"""
    WITH due AS ({rq.SELECT_PAYLOADS_DUE.format(indexed="")}{_LOCKED}), dropped AS (
        UPDATE messages SET payload = NULL, last_seq = messages.last_seq + 1
        FROM due WHERE messages.message_id = due.message_id
        RETURNING messages.message_id, messages.last_seq, messages.status
    )
    INSERT INTO message_events ({q.EVENT_COLUMNS})
    SELECT message_id, last_seq, $4::timestamptz, status, '{RETENTION_ACTOR}', $5::text, NULL FROM dropped
"""


def _ts(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _affected(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PostgresRetention(Retention):
    async def purge(
        self,
        cutoffs: Cutoffs,
        *,
        actor: str,
        batch: int = 200,
        pause_s: float = 0.05,
        dry_run: bool = False,
        feed: FeedHold = FeedHold(),
    ) -> PurgeRun:
        check_batch(batch)
        started = as_utc(self._clock())
        floor = _ts(feed.floor)
        if dry_run:
            async with self.pool.acquire() as conn:
                counts = await _count_due(conn, cutoffs, floor)
                kept = await _kept_for_feed(conn, cutoffs, floor)
            return PurgeRun(None, actor, started, None, cutoffs, counts, 0, dry_run=True, kept_for_feed=kept)
        async with self.pool.acquire() as conn:
            if not await conn.fetchval(_LOCK):
                raise EpixError(
                    ErrorCode.CONFLICT,
                    "Another gateway process is purging this database right now; its run is in GET /v1/retention.",
                )
            try:
                run_id = await conn.fetchval(rq.INSERT_RUN, *rq.run_values(actor, started, cutoffs, _ts))

                async def one_batch(category: Category, cutoff: datetime) -> PurgeCounts:
                    async with conn.transaction():
                        counts = await self._retention_batch(conn, run_id, category, as_utc(cutoff), batch, floor)
                        await conn.execute(rq.END_BATCH, *rq.batch_values(run_id, counts))
                    return counts

                try:
                    await rq.run_batches(cutoffs, one_batch, batch=batch, pause_s=pause_s)
                except Exception as exc:
                    # Best effort: the error to report is the one that stopped the run, not this one.
                    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                        await conn.execute(rq.FINISH_RUN, run_id, as_utc(self._clock()), str(exc)[:500], 0)
                    raise
                kept = await _kept_for_feed(conn, cutoffs, floor)
                await conn.execute(rq.FINISH_RUN, run_id, as_utc(self._clock()), None, kept)
                return rq.run_from_row(await conn.fetchrow(rq.SELECT_RUN, run_id), _ts)
            finally:
                # Also released when the pool resets the connection; said here so it is not a surprise.
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await conn.execute(_UNLOCK)

    async def purge_runs(self, *, limit: int = 20) -> list[PurgeRun]:
        return [rq.run_from_row(r, _ts) for r in await self.pool.fetch(rq.SELECT_RUNS, limit)]

    async def _retention_batch(
        self, conn: asyncpg.Connection, run_id: int, category: Category, cutoff: datetime, limit: int,
        floor: datetime | None,
    ) -> PurgeCounts:  # fmt: skip
        if category is Category.MESSAGES:
            # Set here and cleared by END_BATCH in the same transaction (or undone with it).
            await conn.execute(rq.START_PURGING, run_id)
            ids = [r[0] for r in await conn.fetch(rq.SELECT_MESSAGES_DUE + _LOCKED, cutoff, limit, floor)]
            if not ids:
                return PurgeCounts()
            events = _affected(await conn.execute("DELETE FROM message_events WHERE message_id = ANY($1::text[])", ids))
            await conn.execute("DELETE FROM delivery_reports WHERE message_id = ANY($1::text[])", ids)
            await conn.execute("DELETE FROM customs_feed WHERE message_id = ANY($1::text[])", ids)
            # Only what the feed will never hand over is still queued here (before feed_since, or no feed).
            await conn.execute("DELETE FROM customs_feed_queue WHERE message_id = ANY($1::text[])", ids)
            messages = _affected(await conn.execute("DELETE FROM messages WHERE message_id = ANY($1::text[])", ids))
            return PurgeCounts(messages=messages, events=events)
        if category is Category.PAYLOADS:
            detail = rq.payload_removed_detail(run_id, cutoff)
            now = as_utc(self._clock())
            return PurgeCounts(payloads=_affected(await conn.execute(_DROP_PAYLOADS, cutoff, limit, floor, now, detail)))
        if category is Category.IDEMPOTENCY_KEYS:
            return PurgeCounts(idempotency_keys=_affected(await conn.execute(rq.DELETE_IDEMPOTENCY_DUE, cutoff, limit)))
        await conn.execute(rq.START_PURGING, run_id)  # the audit's DELETE trigger looks for it (migration 7)
        return PurgeCounts(verifications=_affected(await conn.execute(rq.DELETE_VERIFICATIONS_DUE, cutoff, limit)))


async def _count_due(conn: asyncpg.Connection, cutoffs: Cutoffs, floor: datetime | None) -> PurgeCounts:
    counts = {}
    if (c := _ts(cutoffs.messages)) is not None:
        counts["messages"] = await conn.fetchval(rq.COUNT_MESSAGES_DUE, c, floor)
        counts["events"] = await conn.fetchval(rq.COUNT_EVENTS_DUE, c, floor)
    if (c := _ts(cutoffs.payloads)) is not None:
        if cutoffs.messages is None:
            counts["payloads"] = await conn.fetchval(_COUNT_PAYLOADS_DUE, c, floor)
        else:
            counts["payloads"] = await conn.fetchval(_COUNT_PAYLOADS_KEPT_ROWS_DUE, c, floor, _ts(cutoffs.messages))
    if (c := _ts(cutoffs.idempotency_keys)) is not None:
        counts["idempotency_keys"] = await conn.fetchval(rq.COUNT_IDEMPOTENCY_DUE, c)
    if (c := _ts(cutoffs.verifications)) is not None:
        counts["verifications"] = await conn.fetchval(rq.COUNT_VERIFICATIONS_DUE, c)
    return PurgeCounts(**counts)


async def _kept_for_feed(conn: asyncpg.Connection, cutoffs: Cutoffs, floor: datetime | None) -> int:
    if floor is None:
        return 0
    return await conn.fetchval(rq.COUNT_KEPT_FOR_FEED, _ts(cutoffs.messages), _ts(cutoffs.payloads), floor)
