"""The embedded store: one SQLite file in WAL mode, one writer, a few readers.

Durability: ``synchronous=FULL`` by default. In WAL mode NORMAL already survives a crash of the
*process* (a committed transaction is in the WAL file before COMMIT returns); what it can lose is
the last transactions before a power cut or kernel crash, because the WAL is only fsync'ed at
checkpoints. This gateway signs receipts that tell a partner "we hold your permit", and answers
an MA system "accepted" — promises to third parties that must outlive the machine, as they do on
PostgreSQL with synchronous_commit=on. FULL costs one fsync per commit (about 0.2 ms here, far
below one RSA signature), so it is the default; ``synchronous="NORMAL"`` is there for throwaway
data directories and benchmarks of everything but the disk.

Writes are serialised by an asyncio lock around the single writer connection, and writes that
queue up meanwhile are committed together (group commit, each in its own savepoint), so sixteen
concurrent requests cost one fsync, not sixteen. A batch's statements run on the event loop's
thread and only its COMMIT (the fsync) on the writer's own thread: statements are short CPU work
in the C library, and on another thread each one would hand the GIL back and forth with a busy
event loop (every hand-back can wait out the interpreter's 5 ms switch interval), which made a
batch take tens of milliseconds. (The exception: a batch of nothing but single statements whose
work is SQLite's own, the verification audit's, runs whole on the writer's thread; see
``_write_off_loop``.) ``BEGIN IMMEDIATE`` serialises against other processes on the
same file: it is tried at once, and only when another process holds the lock is it waited for
(``busy_timeout``) on the writer's thread. The writer never checkpoints: SQLite's automatic
checkpoint runs inside the COMMIT that crosses its threshold, copying megabytes into the
database file and fsyncing it while every write behind it waits (commits of tens of
milliseconds, every fraction of a second under load). A checkpointer connection on its own
thread does it instead, passively (beside the writer and the readers), shortly after commits.
Reads use a few other connections (``readers``), each on its own thread, which WAL lets run
beside the writer; point reads on the hot paths (a verification, a duplicate check) run on the
event loop's own connection (``_read_now``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from domain.errors import EpixError, ErrorCode
from domain.messages import Direction, MessageStatus

from . import schema as q
from .ledger_sqlite import SqliteLedger
from .retention_sqlite import SqliteRetention
from .base import (
    LEASE_EXPIRED_DETAIL,
    PERMIT_STATUSES,
    Clock,
    DeliveryReportRecord,
    MessageEvent,
    MessageAlias,
    MessageFilter,
    MessageRecord,
    PermitRecord,
    Store,
    Unpublished,
    ack_inbox_via,
    Claim,
    as_stored,
    as_utc,
    claimed_at_once,
    pushed,
    check_inbound,
    check_outbound,
    check_page,
    check_relay,
    idempotency_conflict,
    not_cancellable,
    not_found,
    refused_transition,
    unknown_permit_status,
    utc_now,
    version_conflict,
)

T = TypeVar("T")
SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")


def _enc(value: datetime | None) -> str | None:
    # Fixed width (always microseconds, always +00:00) so that comparing text compares instants.
    return None if value is None else as_utc(value).isoformat(timespec="microseconds")


def _dec(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _sql(statement: str) -> str:
    return q.for_sqlite(statement)


class _Connection:
    """One sqlite3 connection with a dedicated thread for what may block (opening, a COMMIT's
    fsync, a wait for another process's lock, a reader's query).

    ``here`` runs a function on the calling thread instead: the writer's statements. Its caller
    makes sure the connection is never used from two threads at once."""

    def __init__(self, path: Path, pragmas: Sequence[str], name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"epix-sqlite-{name}")
        self._path = path
        self._pragmas = pragmas
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self.run(lambda _: None)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; BEGIN/COMMIT are ours and explicit.
        # check_same_thread=False: the writer's statements run on the loop's thread, its COMMIT
        # on this connection's own; the write lock keeps the two from overlapping.
        conn = sqlite3.connect(self._path, isolation_level=None, cached_statements=256, check_same_thread=False)
        for pragma in self._pragmas:
            conn.execute(pragma)
        return conn

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn, *args)

    def here(self, fn: Callable[..., T], *args: Any) -> T:
        return self._call(fn, args)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn, args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.submit(fn, *args)

    async def close(self) -> None:
        def _close(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = None

        try:
            if self._conn is not None:
                await self.run(_close)
        finally:
            self._executor.shutdown(wait=True)


MAX_BATCH = 200  # writes committed together at most; bounds the wait of the first one
WAL_SIZE_LIMIT = 64 * 1024 * 1024
CHECKPOINT_PAUSE_S = 0.05  # between checkpoints: each one takes whatever was committed meanwhile


def _checkpoint(conn: sqlite3.Connection) -> None:
    time.sleep(CHECKPOINT_PAUSE_S)
    try:
        # PASSIVE: copies what no reader still needs, never waits for the writer or a reader.
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.OperationalError:
        pass  # busy (another process checkpointing): the next commit asks again


class _LockedByOther(Exception):
    """BEGIN IMMEDIATE found another process holding the write lock."""


def _begin_now(conn: sqlite3.Connection) -> None:
    # IMMEDIATE takes the write lock up front, so a claim's SELECT and UPDATE see the same rows
    # even when another process writes the same file. The writer's busy timeout is 0: a lock
    # held elsewhere is waited for on the writer's thread (_begin_waiting), not here on the loop.
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise _LockedByOther() from None
        raise


def _begin_waiting(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    try:
        conn.execute("BEGIN IMMEDIATE")
    finally:
        conn.execute("PRAGMA busy_timeout = 0")


def _run_jobs(conn: sqlite3.Connection, jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[_Outcome]:
    """Several store writes in the open transaction (group commit: one fsync for all of them).
    Each runs in its own savepoint, so one that fails leaves no trace and does not disturb the
    others. A single write needs no savepoint: if it fails, the whole transaction is rolled back."""
    if len(jobs) == 1:
        fn, args = jobs[0]
        try:
            return [_Outcome(True, fn(conn, *args))]
        except Exception as e:  # noqa: BLE001 -- handed to the caller that asked for this write
            conn.execute("ROLLBACK")
            return [_Outcome(False, e)]
    outcomes = []
    try:
        for fn, args in jobs:
            conn.execute("SAVEPOINT job")
            try:
                outcomes.append(_Outcome(True, fn(conn, *args)))
            except Exception as e:  # noqa: BLE001 -- as above
                conn.execute("ROLLBACK TO job")
                outcomes.append(_Outcome(False, e))
            conn.execute("RELEASE job")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _commit(conn: sqlite3.Connection) -> None:
    if not conn.in_transaction:  # every job failed and rolled it back already
        return
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    value: Any


@dataclass(frozen=True, slots=True, eq=False)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    done: asyncio.Future[Any]
    off_loop: bool = False  # one statement whose work is all in SQLite's C code (see _write_off_loop)


def _transaction(conn: sqlite3.Connection, jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]], busy_timeout_ms: int) -> list[_Outcome]:
    """A whole write transaction on the writer's thread (see SqliteStore._write_off_loop)."""
    try:
        _begin_now(conn)
    except _LockedByOther:
        _begin_waiting(conn, busy_timeout_ms)
    outcomes = _run_jobs(conn, jobs)
    _commit(conn)
    return outcomes


def _settle(batch: list[_Job], outcomes: list[_Outcome]) -> None:
    for job, outcome in zip(batch, outcomes):
        if job.done.done():  # its caller was cancelled after the write started; the write stands
            continue
        if outcome.ok:
            job.done.set_result(outcome.value)
        else:
            job.done.set_exception(outcome.value)


class SqliteStore(SqliteLedger, SqliteRetention, Store):
    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 10_000,
        clock: Clock = utc_now,
        readers: int = 2,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise EpixError(
                ErrorCode.CONFIG_INVALID,
                f"SQLite synchronous mode {synchronous!r} is not one of {', '.join(SYNCHRONOUS_MODES)}.",
            )
        self.path = Path(path)
        self._clock = clock
        common = (f"PRAGMA busy_timeout = {int(busy_timeout_ms)}", "PRAGMA foreign_keys = ON")
        self._busy_timeout_ms = int(busy_timeout_ms)
        wal = ("PRAGMA journal_mode = WAL", f"PRAGMA synchronous = {synchronous.upper()}")
        # The WAL file keeps the size its longest stretch between checkpoints needed; past this
        # it is cut back once it has been checkpointed.
        limit = (f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}",)
        self._writer = _Connection(
            self.path, (*wal, *common, *limit, "PRAGMA busy_timeout = 0", "PRAGMA wal_autocheckpoint = 0"), "writer"
        )
        self._checkpointer = _Connection(self.path, (*wal, *common, *limit), "checkpoint")
        self._checkpointing: asyncio.Future[Any] | None = None
        # Several readers, which WAL lets read side by side: a slow read (a report, a long list)
        # no longer holds up every other read behind it. (More threads do not make quick reads
        # quicker: each waits for the GIL while the event loop is busy; see _read_now.)
        self._readers = [
            _Connection(self.path, (*common, "PRAGMA query_only = ON"), f"reader{i}") for i in range(max(1, readers))
        ]
        self._reads_pending = [0] * len(self._readers)
        self._inline_pragmas = (f"PRAGMA busy_timeout = {min(int(busy_timeout_ms), 100)}", "PRAGMA query_only = ON", "PRAGMA cache_size = -65536")
        self._inline: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._queued: list[_Job] = []
        self._batch: asyncio.Future[None] | None = None  # the write transaction in progress

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            await self._writer.open()
            await self._write(_migrate, _enc(self._clock()))
            await self._checkpointer.open()
            for reader in self._readers:
                await reader.open()
        except (OSError, sqlite3.Error) as e:
            raise EpixError(
                ErrorCode.STORE_UNAVAILABLE, f"The SQLite database {self.path} could not be opened: {e}"
            ) from e

    async def close(self) -> None:
        async with self._write_lock:
            if self._batch is not None and not self._batch.done():
                await asyncio.wait([self._batch])
            await self._writer.close()
        if self._checkpointing is not None:
            await asyncio.wait([self._checkpointing])
        await self._checkpointer.close()  # the last connection to close checkpoints what is left
        for reader in self._readers:
            await reader.close()
        if self._inline is not None:
            self._inline.close()
            self._inline = None

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a write transaction and return once it is committed.

        Writes queue up while the writer is busy; whoever takes the lock next runs everything
        queued so far in one transaction (see ``_run_jobs``) and commits it once, so concurrent
        requests share fsyncs instead of waiting for one each.
        """
        return await self._queue_write(_Job(fn, args, asyncio.get_running_loop().create_future()))

    async def _write_off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``_write`` for a single statement whose work is SQLite's own (a batch of audit rows
        inserted from one JSON text): a batch made only of such writes runs BEGIN, the statements
        and COMMIT on the writer's thread, where the sqlite3 module lets go of the GIL while
        SQLite works, so the event loop goes on beside it. (Three GIL hand-backs per batch: BEGIN,
        INSERT, COMMIT. Ordinary writes run many statements each, which is why they stay on the
        loop; see the module's docstring.)"""
        return await self._queue_write(_Job(fn, args, asyncio.get_running_loop().create_future(), off_loop=True))

    async def _queue_write(self, job: _Job) -> Any:
        self._queued.append(job)
        try:
            async with self._write_lock:
                while not job.done.done():
                    if self._batch is not None and not self._batch.done():
                        # A caller cancelled mid-batch let go of the lock; that batch goes on.
                        await asyncio.wait([self._batch])
                        continue
                    batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
                    # Its own task: cancelling this caller neither stops the batch nor leaves
                    # the other callers in it without an answer.
                    self._batch = asyncio.ensure_future(self._run_batch(batch))
                    await asyncio.wait([self._batch])
        except asyncio.CancelledError:
            if any(queued is job for queued in self._queued):
                self._queued = [queued for queued in self._queued if queued is not job]  # never started
            job.done.cancel()
            raise
        return await job.done

    async def _run_batch(self, batch: list[_Job]) -> None:
        """BEGIN, the batch's statements here on the loop, COMMIT on the writer's thread (all three
        there for a batch of ``_write_off_loop`` writes only); then every caller in the batch hears
        how its write ended (none before the COMMIT returned)."""
        try:
            jobs = [(j.fn, j.args) for j in batch]
            if all(j.off_loop for j in batch):
                outcomes = await self._writer.run(_transaction, jobs, self._busy_timeout_ms)
            else:
                try:
                    self._writer.here(_begin_now)
                except _LockedByOther:
                    await self._writer.run(_begin_waiting, self._busy_timeout_ms)
                outcomes = self._writer.here(_run_jobs, jobs)
                await self._writer.run(_commit)
            self._checkpoint_soon()
        except BaseException as e:
            # The transaction as a whole failed (lock timeout, disk full, I/O error) or was
            # interrupted at shutdown: nothing of it can be taken as kept.
            failure = e if isinstance(e, Exception) else EpixError(ErrorCode.STORE_UNAVAILABLE, "The SQLite write was interrupted.")
            _settle(batch, [_Outcome(False, failure)] * len(batch))
            if not isinstance(e, Exception):
                raise
            return
        _settle(batch, outcomes)

    def _checkpoint_soon(self) -> None:
        """Copy committed WAL frames into the database file, on the checkpointer's thread; one
        checkpoint at a time, and the commits meanwhile are taken by the next one."""
        if self._checkpointing is None or self._checkpointing.done():
            self._checkpointing = self._checkpointer.submit(_checkpoint)

    def _read_now(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` right here, on the event loop's thread, with a connection of
        its own. Only for a read that is a few primary-key lookups on small rows (a verification:
        about 20 µs): handing it to a reader thread costs ten times that in thread wake-ups and
        GIL hand-offs while the loop is busy. WAL readers do not wait for writers."""
        if self._inline is None:
            conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=64)
            for pragma in self._inline_pragmas:
                conn.execute(pragma)
            self._inline = conn
        return fn(self._inline, *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        i = self._reads_pending.index(min(self._reads_pending))  # the least busy reader
        self._reads_pending[i] += 1
        try:
            return await self._readers[i].run(fn, *args)
        finally:
            self._reads_pending[i] -= 1

    # --- permits and outbound ----------------------------------------------------------------

    async def accept_outbound(
        self,
        permit: PermitRecord,
        messages: Sequence[MessageRecord],
        *,
        actor: str,
        idempotency_key: str | None = None,
        principal: str | None = None,
        request_hash: str | None = None,
        claim: Claim | None = None,
    ) -> list[MessageRecord]:
        check_outbound(permit, messages)
        now = self._clock()
        held = claimed_at_once([as_stored(m, due=m.next_attempt_at or now) for m in messages], claim)
        key = None if idempotency_key is None else (principal or "", idempotency_key, request_hash or "")
        return await self._write(_accept, permit, held, actor, key, _enc(now), claim)

    async def accept_cancellation(
        self, issuer: str, number: str, messages: Sequence[MessageRecord], *, actor: str
    ) -> list[MessageRecord]:
        now = self._clock()
        held = [as_stored(m, due=m.next_attempt_at or now) for m in messages]
        return await self._write(_accept_cancellation, issuer, number, held, actor, _enc(now))

    async def idempotency_lookup(self, principal: str, key: str) -> tuple[str, list[str]] | None:
        row = await self._read(_fetchone, _sql(q.SELECT_IDEMPOTENCY), (principal, key))
        return None if row is None else (row[0], json.loads(row[1]))

    async def get_permit_versions(self, issuer: str, number: str) -> list[PermitRecord]:
        rows = await self._read(_fetchall, _sql(q.SELECT_PERMIT_VERSIONS), (issuer, number))
        return [q.permit_from_row(r, _dec) for r in rows]

    async def set_permit_status(
        self, issuer: str, number: str, status: str, *, replaced_by: str | None = None
    ) -> None:
        if status not in PERMIT_STATUSES:
            raise unknown_permit_status(status)
        changed = await self._write(_rowcount, _sql(q.UPDATE_PERMIT_STATUS), (issuer, number, status, replaced_by))
        if changed == 0:
            raise EpixError(ErrorCode.NOT_FOUND, f"No permit {issuer}/{number} is held.", issuer=issuer, number=number)

    # --- messages ----------------------------------------------------------------------------

    async def get_message(self, message_id: str) -> MessageRecord | None:
        # A primary-key lookup, on every inbound message (the duplicate check): on the loop.
        row = self._read_now(_fetchone, _sql(q.SELECT_MESSAGE), (message_id,))
        return None if row is None else q.message_from_row(row, _dec)

    async def record_alias(self, alias: MessageAlias) -> MessageAlias:
        row = await self._write(_insert_alias, q.alias_values(alias, _enc))
        return q.alias_from_row(row, _dec)

    async def get_alias(self, message_id: str) -> MessageAlias | None:
        # A primary-key lookup on every new inbound message, as get_message: on the loop.
        row = self._read_now(_fetchone, _sql(q.SELECT_ALIAS), (message_id,))
        return None if row is None else q.alias_from_row(row, _dec)

    async def list_messages(self, f: MessageFilter) -> list[MessageRecord]:
        check_page(f)
        sql, args = q.list_query(
            status=None if f.status is None else f.status.value,
            direction=None if f.direction is None else f.direction.value,
            sender=f.sender, receiver=f.receiver, issuer=f.issuer, number=f.number,
            before=_enc(f.before), before_id=f.before_id, limit=f.limit,
        )  # fmt: skip
        rows = await self._read(_fetchall, _sql(sql), tuple(args))
        return [q.message_from_row(r, _dec) for r in rows]

    async def message_events(self, message_id: str) -> list[MessageEvent]:
        rows = await self._read(_fetchall, _sql(q.SELECT_EVENTS), (message_id,))
        return [q.event_from_row(r, _dec) for r in rows]

    async def messages_for_permit(self, issuer: str, number: str) -> list[MessageRecord]:
        rows = await self._read(_fetchall, _sql(q.SELECT_PERMIT_MESSAGES), (issuer, number))
        return [q.message_from_row(r, _dec) for r in rows]

    async def transition(
        self,
        message_id: str,
        new: MessageStatus,
        *,
        actor: str,
        detail: str | None = None,
        error_code: str | None = None,
        receipt: bytes | None = None,
        next_attempt_at: datetime | None = None,
        increment_attempts: bool = False,
    ) -> MessageRecord:
        now = self._clock()
        sql, names = q.transition_update(new, error_code is not None, receipt is not None)
        values = {
            "message_id": message_id,
            "increment": 1 if increment_attempts else 0,
            "now": _enc(now),
            "next_attempt_at": _enc(next_attempt_at or now),
            "error_code": error_code,
            "detail": detail,
            "receipt": receipt,
        }
        event = (_enc(now), new.value, actor, detail, error_code)
        return await self._write(_transition, message_id, new, _sql(sql), tuple(values[n] for n in names), event)

    # --- the embedded queue ------------------------------------------------------------------

    async def claim_due(
        self, *, limit: int, lease_s: float, now: datetime, actor: str, receiver: str | None = None
    ) -> list[MessageRecord]:
        if limit < 1:
            return []
        lease_until = as_utc(now) + timedelta(seconds=lease_s)
        return await self._write(_claim, limit, _enc(now), _enc(lease_until), actor, receiver)

    async def next_due_at(self) -> datetime | None:
        row = await self._read(_fetchone, q.SELECT_NEXT_DUE, ())
        return _dec(row[0])

    async def unpublished(self, *, limit: int) -> list[Unpublished]:
        rows = await self._read(_fetchall, _sql(q.SELECT_UNPUBLISHED), (limit,))
        return [Unpublished(r[0], r[1], r[2], r[3]) for r in rows]

    async def mark_published(self, message_id: str, seq: int) -> None:
        await self._write(_rowcount, _sql(q.MARK_PUBLISHED), (message_id, seq))

    # --- inbound -----------------------------------------------------------------------------

    async def store_inbound(
        self, permit: PermitRecord | None, message: MessageRecord, *, actor: str
    ) -> tuple[bool, MessageRecord]:
        check_inbound(permit, message)
        held = as_stored(message, due=None)
        return await self._write(_store_inbound, permit, held, actor, _enc(self._clock()))

    async def inbox(
        self, receiver: str, *, limit: int = 100, after: tuple[datetime, str] | None = None
    ) -> list[MessageRecord]:
        check_page(MessageFilter(limit=limit))
        if after is None:
            rows = await self._read(_fetchall, _sql(q.SELECT_INBOX), (receiver, limit))
        else:
            rows = await self._read(_fetchall, _sql(q.SELECT_INBOX_AFTER), (receiver, _enc(after[0]), after[1], limit))
        return [q.message_from_row(r, _dec) for r in rows]

    async def ack_inbox(self, message_id: str, *, actor: str) -> MessageRecord:
        return await ack_inbox_via(self, message_id, actor=actor)

    # --- hub: relaying, pull, delivery reports -----------------------------------------------

    async def accept_relay(
        self, message: MessageRecord, *, actor: str, detail: str, claim: Claim | None = None
    ) -> tuple[bool, MessageRecord]:
        check_relay(message)
        [held] = claimed_at_once([as_stored(message, due=message.next_attempt_at)], pushed(message, claim))
        return await self._write(_accept_relay, held, actor, detail, _enc(self._clock()), claim)

    async def held_for_pull(self, receiver: str, *, limit: int = 100) -> list[MessageRecord]:
        check_page(MessageFilter(limit=limit))
        rows = await self._read(_fetchall, _sql(q.SELECT_HELD_FOR_PULL), (receiver, limit))
        return [q.message_from_row(r, _dec) for r in rows]

    async def record_event(
        self, message_id: str, *, actor: str, detail: str, error_code: str | None = None
    ) -> None:
        await self._write(_record_event, message_id, actor, detail, error_code, _enc(self._clock()))

    async def save_delivery_report(self, report: DeliveryReportRecord, *, actor: str) -> bool:
        return await self._write(_save_report, report, actor, _enc(self._clock()))

    async def delivery_report(self, message_id: str) -> DeliveryReportRecord | None:
        row = await self._read(_fetchone, _sql(q.SELECT_REPORT), (message_id,))
        return None if row is None else _report_from_row(row)

    async def awaiting_delivery_report(self, *, limit: int = 100) -> list[MessageRecord]:
        check_page(MessageFilter(limit=limit))
        rows = await self._read(_fetchall, _sql(q.SELECT_AWAITING_REPORT), (limit,))
        return [q.message_from_row(r, _dec) for r in rows]

    # --- operations --------------------------------------------------------------------------

    async def counts_by_status(self) -> dict[str, int]:
        rows = await self._read(_fetchall, q.SELECT_COUNTS, ())
        return {status: count for status, count in rows}

    def unavailable(self, error: BaseException) -> bool:
        # The file, the disk or a lock another process holds past the busy timeout: not a bug here.
        return isinstance(error, sqlite3.OperationalError) and any(
            words in str(error) for words in ("database is locked", "disk I/O error", "unable to open", "disk is full")
        )

    async def ping(self) -> None:
        try:
            await self._read(_fetchone, "SELECT COUNT(*) FROM schema_migrations", ())
        except (sqlite3.Error, RuntimeError) as e:  # RuntimeError: the connection's thread is shut down
            raise EpixError(ErrorCode.STORE_UNAVAILABLE, f"The SQLite database {self.path} does not answer: {e}") from e


# --- the functions below run on a connection's thread --------------------------------------------


def _insert_alias(conn: sqlite3.Connection, values: tuple[Any, ...]) -> Any:
    conn.execute(_sql(q.INSERT_ALIAS), values)
    return conn.execute(_sql(q.SELECT_ALIAS), values[:1]).fetchone()


def _fetchone(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> Any:
    return conn.execute(sql, args).fetchone()


def _fetchall(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[Any]:
    return conn.execute(sql, args).fetchall()


def _rowcount(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> int:
    return conn.execute(sql, args).rowcount


def _migrate(conn: sqlite3.Connection, now: str) -> None:
    conn.execute(q.migrations_table(q.SQLITE))
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for migration in q.MIGRATIONS:
        if migration.version in applied:
            continue
        for statement in q.migration_statements(migration, q.SQLITE):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, now),
        )


def _messages_by_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> list[MessageRecord]:
    sql = _sql(q.SELECT_MESSAGE)
    found = (conn.execute(sql, (i,)).fetchone() for i in ids)
    return [q.message_from_row(r, _dec) for r in found if r is not None]


def _accept(
    conn: sqlite3.Connection,
    permit: PermitRecord,
    messages: list[MessageRecord],
    actor: str,
    key: tuple[str, str, str] | None,
    now: str,
    claim: Claim | None = None,
) -> list[MessageRecord]:
    if key is not None:
        row = conn.execute(_sql(q.SELECT_IDEMPOTENCY), key[:2]).fetchone()
        if row is not None:
            if row[0] != key[2]:
                raise idempotency_conflict(key[1])
            return _messages_by_ids(conn, json.loads(row[1]))
    if conn.execute(_sql(q.INSERT_PERMIT), q.permit_values(permit, _enc)).rowcount == 0:
        held_digest = conn.execute(
            _sql(q.SELECT_PERMIT_DIGEST), (permit.issuer, permit.number, permit.version, Direction.OUTBOUND.value)
        ).fetchone()[0]
        if held_digest != permit.digest:
            raise version_conflict(permit.issuer, permit.number, permit.version)
        rows = conn.execute(
            _sql(q.SELECT_VERSION_MESSAGES), (permit.issuer, permit.number, permit.version, Direction.OUTBOUND.value)
        ).fetchall()
        held = [q.message_from_row(r, _dec) for r in rows]
    else:
        _insert_outbound(conn, messages, actor, now, claim)
        if permit.replaces:
            conn.execute(
                _sql(q.MARK_REPLACED), (permit.issuer, permit.replaces, permit.number, Direction.OUTBOUND.value)
            )
        held = messages
    if key is not None:
        ids = json.dumps([m.message_id for m in held])
        conn.execute(_sql(q.INSERT_IDEMPOTENCY), (*key, ids, now))
    return held


def _insert_outbound(
    conn: sqlite3.Connection, messages: Sequence[MessageRecord], actor: str, now: str, claim: Claim | None = None
) -> None:
    conn.executemany(_sql(q.INSERT_MESSAGE), [q.message_values(m, _enc) for m in messages])
    conn.executemany(_sql(q.INSERT_EVENT), [e for m in messages for e in q.first_events(m, now, actor, "accepted", claim)])


def _accept_cancellation(
    conn: sqlite3.Connection, issuer: str, number: str, messages: list[MessageRecord], actor: str, now: str
) -> list[MessageRecord]:
    if conn.execute(_sql(q.MARK_CANCELLED), (issuer, number, Direction.OUTBOUND.value)).rowcount == 0:
        raise not_cancellable(issuer, number)
    _insert_outbound(conn, messages, actor, now)
    return messages


def _transition(
    conn: sqlite3.Connection,
    message_id: str,
    new: MessageStatus,
    sql: str,
    args: tuple[Any, ...],
    event: tuple[Any, ...],
) -> MessageRecord:
    row = conn.execute(sql, args).fetchone()
    if row is None:
        current = conn.execute(_sql(q.SELECT_STATUS), (message_id,)).fetchone()
        if current is None:
            raise not_found(message_id)
        raise refused_transition(message_id, MessageStatus(current[0]), new)
    conn.execute(_sql(q.INSERT_EVENT), (message_id, row[-1], *event))
    return q.message_from_row(row, _dec)


_CLAIM_SELECT = """
    SELECT message_id, status FROM messages
    WHERE due_at IS NOT NULL AND due_at <= ?1 AND direction = 'outbound'{receiver}
    ORDER BY due_at LIMIT ?2
"""
_CLAIM_UPDATE = f"""
    UPDATE messages SET status = 'SENDING', lease_until = ?1, due_at = ?1, next_attempt_at = NULL,
        updated_at = ?2, last_seq = last_seq + CASE status WHEN 'SENDING' THEN 2 ELSE 1 END
    WHERE message_id IN (SELECT value FROM json_each(?3))
    RETURNING {q.MESSAGE_COLUMNS}, last_seq
"""


def _claim(
    conn: sqlite3.Connection, limit: int, now: str, lease_until: str, actor: str, receiver: str | None
) -> list[MessageRecord]:
    if receiver is None:
        due = conn.execute(_CLAIM_SELECT.format(receiver=""), (now, limit)).fetchall()
    else:
        due = conn.execute(_CLAIM_SELECT.format(receiver=" AND receiver = ?3"), (now, limit, receiver)).fetchall()
    if not due:
        return []
    rows = conn.execute(_CLAIM_UPDATE, (lease_until, now, json.dumps([d[0] for d in due]))).fetchall()
    reclaimed = {d[0] for d in due if d[1] == MessageStatus.SENDING.value}
    events = []
    for row in rows:
        message_id, seq = row[0], row[-1]
        if message_id in reclaimed:
            # SENDING -> SEND_ENQUEUED -> SENDING, as domain.messages allows, so the history
            # shows that the first sender lost the message.
            events.append((message_id, seq - 1, now, MessageStatus.SEND_ENQUEUED.value, actor, LEASE_EXPIRED_DETAIL, None))
        events.append((message_id, seq, now, MessageStatus.SENDING.value, actor, None, None))
    conn.executemany(_sql(q.INSERT_EVENT), events)
    order = {d[0]: i for i, d in enumerate(due)}
    return sorted((q.message_from_row(r, _dec) for r in rows), key=lambda m: order[m.message_id])


def _store_inbound(
    conn: sqlite3.Connection, permit: PermitRecord | None, message: MessageRecord, actor: str, now: str
) -> tuple[bool, MessageRecord]:
    row = conn.execute(_sql(q.SELECT_MESSAGE), (message.message_id,)).fetchone()
    if row is not None:
        return False, q.message_from_row(row, _dec)
    if permit is not None:
        if conn.execute(_sql(q.INSERT_PERMIT), q.permit_values(permit, _enc)).rowcount == 0:
            key = (permit.issuer, permit.number, permit.version)
            if conn.execute(_sql(q.SELECT_PERMIT_DIGEST), (*key, Direction.INBOUND.value)).fetchone()[0] != permit.digest:
                raise version_conflict(*key)
            original = conn.execute(_sql(q.SELECT_FIRST_INBOUND_OF_VERSION), key).fetchone()
            if original is not None:
                return False, q.message_from_row(original, _dec)
    elif message.payload_digest is not None:
        # A cancellation carries no permit: the same action on the same version with the same
        # payload under a new message id is the partner resending it.
        original = conn.execute(
            _sql(q.SELECT_SAME_INBOUND),
            (message.issuer, message.number, message.version, message.action.value, message.payload_digest),
        ).fetchone()
        if original is not None:
            return False, q.message_from_row(original, _dec)
    conn.execute(_sql(q.INSERT_MESSAGE), q.message_values(message, _enc))
    conn.execute(
        _sql(q.INSERT_EVENT),
        (message.message_id, 1, now, MessageStatus.RECEIVED.value, actor, None, None),
    )
    for sql, args in q.inbound_effects(permit, message):
        conn.execute(_sql(sql), args)
    return True, message


def _accept_relay(
    conn: sqlite3.Connection, message: MessageRecord, actor: str, detail: str, now: str, claim: Claim | None
) -> tuple[bool, MessageRecord]:
    row = conn.execute(_sql(q.SELECT_MESSAGE), (message.message_id,)).fetchone()
    if row is not None:
        return False, q.message_from_row(row, _dec)
    conn.execute(_sql(q.INSERT_MESSAGE), q.message_values(message, _enc))
    conn.executemany(_sql(q.INSERT_EVENT), q.first_events(message, now, actor, detail, claim))
    return True, message


def _record_event(
    conn: sqlite3.Connection, message_id: str, actor: str, detail: str, error_code: str | None, now: str
) -> None:
    row = conn.execute(_sql(q.BUMP_SEQ), (message_id, now)).fetchone()
    if row is None:
        raise not_found(message_id)
    conn.execute(_sql(q.INSERT_EVENT), (message_id, row[0], now, row[1], actor, detail, error_code))


def _save_report(conn: sqlite3.Connection, report: DeliveryReportRecord, actor: str, now: str) -> bool:
    held = conn.execute(_sql(q.SELECT_REPORT), (report.message_id,)).fetchone()
    conn.execute(
        _sql(q.UPSERT_REPORT),
        (report.message_id, report.status, report.reporter, report.detail, report.report, _enc(as_utc(report.updated_at))),
    )
    if held is not None and held[1] == report.status:
        return False
    detail = f"{report.reporter} reports {report.status}" + (f": {report.detail}" if report.detail else "")
    _record_event(conn, report.message_id, actor, detail, None, now)
    return True


def _report_from_row(r: Any) -> DeliveryReportRecord:
    return DeliveryReportRecord(
        message_id=r[0], status=r[1], reporter=r[2], detail=r[3],
        report=None if r[4] is None else bytes(r[4]), updated_at=_dec(r[5]),
    )  # fmt: skip
