"""Retention on SQLite: each batch is one write on the writer thread, so it takes its turn with the
gateway's own writes (group commit) and holds the file's write lock only for that batch."""

from __future__ import annotations

import contextlib
import json
import sqlite3

from domain.errors import EpixError

from . import retention as rq
from . import schema as q
from . import sqlite as s
from .retention import RETENTION_ACTOR, Category, Cutoffs, FeedHold, PurgeCounts, PurgeRun, Retention, check_batch


def _sql(statement: str) -> str:
    return q.for_sqlite(statement)


_SELECT_PAYLOADS_DUE = _sql(rq.SELECT_PAYLOADS_DUE.format(indexed=rq.SQLITE_PAYLOADS_INDEX))
_COUNT_PAYLOADS_DUE = rq.COUNT_PAYLOADS_DUE.format(indexed=rq.SQLITE_PAYLOADS_INDEX)
_COUNT_PAYLOADS_KEPT_ROWS_DUE = rq.COUNT_PAYLOADS_KEPT_ROWS_DUE.format(indexed=rq.SQLITE_PAYLOADS_INDEX)


class SqliteRetention(Retention):
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
        started = self._clock()
        floor = s._enc(feed.floor)
        if dry_run:
            counts, kept = await self._read(_count_due, _encoded(cutoffs), floor)
            return PurgeRun(None, actor, started, None, cutoffs, counts, 0, dry_run=True, kept_for_feed=kept)
        run_id = await self._write(_begin, rq.run_values(actor, s._enc(started), cutoffs, s._enc))

        async def one_batch(category: Category, cutoff) -> PurgeCounts:
            detail = rq.payload_removed_detail(run_id, cutoff)
            return await self._write(_batch, run_id, category, s._enc(cutoff), batch, s._enc(self._clock()), detail, floor)

        try:
            await rq.run_batches(cutoffs, one_batch, batch=batch, pause_s=pause_s)
        except Exception as exc:
            # Best effort: the error to report is the one that stopped the run, not this one.
            with contextlib.suppress(sqlite3.Error, EpixError, RuntimeError):
                await self._write(s._rowcount, _sql(rq.FINISH_RUN), (run_id, s._enc(self._clock()), str(exc)[:500], 0))
            raise
        await self._write(_finish, run_id, s._enc(self._clock()), _encoded(cutoffs), floor)
        row = await self._read(s._fetchone, _sql(rq.SELECT_RUN), (run_id,))
        return rq.run_from_row(row, s._dec)

    async def purge_runs(self, *, limit: int = 20) -> list[PurgeRun]:
        rows = await self._read(s._fetchall, _sql(rq.SELECT_RUNS), (limit,))
        return [rq.run_from_row(r, s._dec) for r in rows]


def _encoded(cutoffs: Cutoffs) -> dict[Category, str | None]:
    return {c: s._enc(cutoffs.of(c)) for c in Category}


# --- on a connection's thread ---------------------------------------------------------------------


def _count(conn: sqlite3.Connection, sql: str, *args) -> int:
    return conn.execute(_sql(sql), args).fetchone()[0]


def _count_due(conn: sqlite3.Connection, cutoffs: dict[Category, str | None], floor: str | None) -> tuple[PurgeCounts, int]:
    """What a run would remove, and how many messages it would keep for the feed."""
    counts = {}
    if (c := cutoffs[Category.MESSAGES]) is not None:
        counts["messages"] = _count(conn, rq.COUNT_MESSAGES_DUE, c, floor)
        counts["events"] = _count(conn, rq.COUNT_EVENTS_DUE, c, floor)
    if (c := cutoffs[Category.PAYLOADS]) is not None:
        kept_rows = cutoffs[Category.MESSAGES]
        if kept_rows is None:
            counts["payloads"] = _count(conn, _COUNT_PAYLOADS_DUE, c, floor)
        else:
            counts["payloads"] = _count(conn, _COUNT_PAYLOADS_KEPT_ROWS_DUE, c, floor, kept_rows)
    if (c := cutoffs[Category.IDEMPOTENCY_KEYS]) is not None:
        counts["idempotency_keys"] = _count(conn, rq.COUNT_IDEMPOTENCY_DUE, c)
    if (c := cutoffs[Category.VERIFICATIONS]) is not None:
        counts["verifications"] = _count(conn, rq.COUNT_VERIFICATIONS_DUE, c)
    return PurgeCounts(**counts), _kept_for_feed(conn, cutoffs, floor)


def _kept_for_feed(conn: sqlite3.Connection, cutoffs: dict[Category, str | None], floor: str | None) -> int:
    if floor is None:
        return 0
    return _count(conn, rq.COUNT_KEPT_FOR_FEED, cutoffs[Category.MESSAGES], cutoffs[Category.PAYLOADS], floor)


def _begin(conn: sqlite3.Connection, values: tuple) -> int:
    return conn.execute(_sql(rq.INSERT_RUN), values).fetchone()[0]


def _finish(conn: sqlite3.Connection, run_id: int, now: str, cutoffs: dict[Category, str | None], floor: str | None) -> None:
    kept = _kept_for_feed(conn, cutoffs, floor)
    conn.execute(_sql(rq.FINISH_RUN), (run_id, now, None, kept))


_IDS = "(SELECT value FROM json_each(?1))"
_DROP_PAYLOADS = f"""
    UPDATE messages SET payload = NULL, last_seq = last_seq + 1
    WHERE message_id IN {_IDS} AND payload IS NOT NULL
    RETURNING message_id, last_seq, status
"""


def _batch(
    conn: sqlite3.Connection, run_id: int, category: Category, cutoff: str, limit: int, now: str, detail: str,
    floor: str | None,
) -> PurgeCounts:  # fmt: skip
    if category is Category.MESSAGES:
        counts = _delete_messages(conn, run_id, cutoff, limit, floor)
    elif category is Category.PAYLOADS:
        ids = [r[0] for r in conn.execute(_SELECT_PAYLOADS_DUE, (cutoff, limit, floor))]
        dropped = conn.execute(_DROP_PAYLOADS, (json.dumps(ids),)).fetchall() if ids else []
        conn.executemany(
            _sql(q.INSERT_EVENT), [(m, seq, now, status, RETENTION_ACTOR, detail, None) for m, seq, status in dropped]
        )
        counts = PurgeCounts(payloads=len(dropped))
    elif category is Category.IDEMPOTENCY_KEYS:
        counts = PurgeCounts(idempotency_keys=conn.execute(_sql(rq.DELETE_IDEMPOTENCY_DUE), (cutoff, limit)).rowcount)
    else:
        conn.execute(_sql(rq.START_PURGING), (run_id,))  # the audit's DELETE trigger looks for it (migration 7)
        counts = PurgeCounts(verifications=conn.execute(_sql(rq.DELETE_VERIFICATIONS_DUE), (cutoff, limit)).rowcount)
    conn.execute(_sql(rq.END_BATCH), rq.batch_values(run_id, counts))
    return counts


def _delete_messages(conn: sqlite3.Connection, run_id: int, cutoff: str, limit: int, floor: str | None) -> PurgeCounts:
    # Set here and cleared by END_BATCH in the same transaction (or undone with it).
    conn.execute(_sql(rq.START_PURGING), (run_id,))
    ids = [r[0] for r in conn.execute(_sql(rq.SELECT_MESSAGES_DUE), (cutoff, limit, floor))]
    if not ids:
        return PurgeCounts()
    doomed = (json.dumps(ids),)
    events = conn.execute(f"DELETE FROM message_events WHERE message_id IN {_IDS}", doomed).rowcount
    conn.execute(f"DELETE FROM delivery_reports WHERE message_id IN {_IDS}", doomed)
    conn.execute(f"DELETE FROM customs_feed WHERE message_id IN {_IDS}", doomed)
    # Only what the feed will never hand over is still queued here (before feed_since, or no feed).
    conn.execute(f"DELETE FROM customs_feed_queue WHERE message_id IN {_IDS}", doomed)
    messages = conn.execute(f"DELETE FROM messages WHERE message_id IN {_IDS}", doomed).rowcount
    return PurgeCounts(messages=messages, events=events)
