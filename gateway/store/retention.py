"""Retention: the store's side of removing what a gateway no longer has to keep (README, "Retention").

Each category goes only when the operator's policy gives it a cutoff:

* **payloads** — the document bytes of a final message (a signed permit is ~8 KB). The row stays
  with its digest, its receipt (a partner re-sending the id gets the very same receipt, and the
  sender can still fetch a lost one) and its history, which records the removal as an event.
* **messages** — final messages, with their history, their hub delivery report and their
  customs-feed mark.
* **idempotency keys** and customs **verification** audit rows.

"Final" is the domain's (ACKNOWLEDGED, REJECTED, DELIVERED) and, for a message sent through a hub,
a final delivery report as well: until the hub says where it went the sender is still waiting.
Age counts from ``updated_at``, the last change of status: a message that waited a month before a
partner acknowledged it is kept as long after that as any other. A final message still waiting in
the customs pre-arrival feed's queue (migration 8) is kept whole, payload and history, until the
feed has handed it over (``FeedHold``): a feed down for longer than the retention period would
otherwise lose customs the permit for good. A run counts and records what it kept back for that
reason (``kept_for_feed``); it goes in the first run after customs has it. Permit records (the legal
record), the write-off ledger and balances are never touched: their lifetime is not this policy's.

The event history stays append-only (migration 6): an UPDATE is always refused, and a DELETE is
let through only while a retention run's row says ``purging`` and only for events of a final
message last changed before the message cutoff recorded in that row. A purge transaction sets the
flag and clears it again before it commits, so no other transaction ever sees it set: outside the
retention job (a code path, a hand-typed statement) the history still cannot be removed, and every
removal is accounted for by a run in ``retention_runs`` with its cutoffs and counts. The customs
verification audit is kept the same way (migration 7): no UPDATE, and a DELETE only while a run is
purging and only of rows older than that run's verification cutoff.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from domain.errors import EpixError, ErrorCode
from domain.messages import MessageStatus

from .ledger import same_columns

RETENTION_ACTOR = "retention"  # the actor of the "payload removed" event in a message's history
MAX_BATCH = 10_000


class Category(StrEnum):
    # In the order a run takes them: messages first, so that no payload-removed event is written
    # into a history deleted a moment later.
    MESSAGES = "messages"
    PAYLOADS = "payloads"
    IDEMPOTENCY_KEYS = "idempotency_keys"
    VERIFICATIONS = "verifications"


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """What a run removes: anything older than its cutoff; None keeps that category forever."""

    messages: datetime | None = None
    payloads: datetime | None = None
    idempotency_keys: datetime | None = None
    verifications: datetime | None = None

    def of(self, category: Category) -> datetime | None:
        return getattr(self, category.value)

    @property
    def any(self) -> bool:
        return any(self.of(c) is not None for c in Category)


# Earlier than any message: the floor when the feed hands over everything in its queue.
_EVERY_QUEUED = datetime(1, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True, slots=True)
class FeedHold:
    """What a run keeps for the customs pre-arrival feed: every final message in its queue that it
    will still hand over, i.e. received at or after ``since`` (customs.feed_since; None: all of
    them). ``feeding`` False (NO_FEED): the gateway has no feed, its queue is nobody's work, and
    nothing is kept for it. The default keeps everything queued: a caller that does not say cannot
    purge what customs is owed."""

    feeding: bool = True
    since: datetime | None = None

    @property
    def floor(self) -> datetime | None:
        """The statements' parameter: queued messages received at or after it are kept (None: none)."""
        if not self.feeding:
            return None
        return _EVERY_QUEUED if self.since is None else self.since


NO_FEED = FeedHold(feeding=False)


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    messages: int = 0
    events: int = 0  # the history that went with those messages
    payloads: int = 0
    idempotency_keys: int = 0
    verifications: int = 0

    def __add__(self, other: PurgeCounts) -> PurgeCounts:
        return PurgeCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class PurgeRun:
    """One run of the retention job, as recorded in ``retention_runs`` (a dry run is not recorded:
    it changes nothing, so ``run_id`` is None)."""

    run_id: int | None
    actor: str
    started_at: datetime
    finished_at: datetime | None  # None: still running, or stopped by a crash (an error is recorded with its time)
    cutoffs: Cutoffs
    counts: PurgeCounts
    batches: int
    error: str | None = None
    dry_run: bool = False
    # Final messages past a cutoff (whole, or their payload) kept because the customs feed has not
    # handed them over yet (FeedHold), as the run found them when it finished.
    kept_for_feed: int = 0


class Retention(ABC):
    """The retention job's port on the store; ``retention_sqlite`` and ``retention_postgres``
    implement it."""

    @abstractmethod
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
        """Remove what is past its cutoff, but what ``feed`` keeps for customs, ``batch`` rows per
        transaction with a pause between them (the writer is never held for long), and record the
        run. ``dry_run`` counts what would go and changes nothing. On PostgreSQL a second run
        while one is going raises CONFLICT."""

    @abstractmethod
    async def purge_runs(self, *, limit: int = 20) -> list[PurgeRun]:
        """The most recent runs first."""


# --- schema: migration 6 -------------------------------------------------------------------------

_FINAL = ", ".join(f"'{s.value}'" for s in sorted(MessageStatus, key=lambda s: s.value) if s.final)
# ePhyto Hub statuses after which a hub has nothing more to say (gateway.hub.FINAL).
_HUB_FINAL = "'Delivered', 'DeliveredNotReadable', 'DeliveredWithWarnings', 'FailedDelivery'"

RETENTION_DDL = (
    """
    CREATE TABLE retention_runs (
        run_id              INTEGER PRIMARY KEY,
        actor               TEXT NOT NULL,
        started_at          {ts} NOT NULL,
        finished_at         {ts},
        error               TEXT,
        message_cutoff      {ts},
        payload_cutoff      {ts},
        idempotency_cutoff  {ts},
        verification_cutoff {ts},
        messages            INTEGER NOT NULL DEFAULT 0,
        events              INTEGER NOT NULL DEFAULT 0,
        payloads            INTEGER NOT NULL DEFAULT 0,
        idempotency_keys    INTEGER NOT NULL DEFAULT 0,
        verifications       INTEGER NOT NULL DEFAULT 0,
        batches             INTEGER NOT NULL DEFAULT 0,
        -- 1 only inside a purge transaction, which clears it before it commits (module docstring)
        purging             INTEGER NOT NULL DEFAULT 0
    )
    """,
    # The flag the DELETE trigger looks for, found without reading a log that grows by a row a run.
    "CREATE INDEX retention_runs_purging ON retention_runs (run_id) WHERE purging = 1",
    # Payloads still held by final messages, by age: the purge finds the next ones without walking
    # past the (many) messages whose payload is already gone. A row enters it once, when its
    # message becomes final.
    f"CREATE INDEX messages_payload_held ON messages (updated_at) WHERE payload IS NOT NULL AND status IN ({_FINAL})",
    "CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)",
    "CREATE INDEX verifications_at ON verifications (at)",
)

_MAY_DELETE = f"""
    SELECT 1 FROM messages m JOIN retention_runs r ON r.purging = 1
    WHERE m.message_id = OLD.message_id AND m.status IN ({_FINAL}) AND m.updated_at < r.message_cutoff
"""
_REFUSED = "message_events is append-only: only a retention run deletes the history of a final message past its cutoff"

RETENTION_TRIGGERS = {
    "sqlite": (
        "DROP TRIGGER message_events_no_delete",
        f"""
        CREATE TRIGGER message_events_no_delete BEFORE DELETE ON message_events
        WHEN NOT EXISTS ({_MAY_DELETE})
        BEGIN SELECT RAISE(ABORT, '{_REFUSED}'); END
        """,
    ),
    "postgresql": (
        # Migration 1's trigger refused UPDATE and DELETE in one; UPDATE keeps that function.
        "DROP TRIGGER message_events_append_only ON message_events",
        """
        CREATE TRIGGER message_events_no_update BEFORE UPDATE ON message_events
        FOR EACH ROW EXECUTE FUNCTION message_events_refuse_change()
        """,
        f"""
        CREATE FUNCTION message_events_retention_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS ({_MAY_DELETE}) THEN RETURN OLD; END IF;
            RAISE EXCEPTION '{_REFUSED}';
        END $$
        """,
        """
        CREATE TRIGGER message_events_no_delete BEFORE DELETE ON message_events
        FOR EACH ROW EXECUTE FUNCTION message_events_retention_only()
        """,
    ),
}

# --- schema: migration 10 -------------------------------------------------------------------------

KEPT_FOR_FEED_DDL = ("ALTER TABLE retention_runs ADD COLUMN kept_for_feed INTEGER NOT NULL DEFAULT 0",)

# --- schema: migration 11 -------------------------------------------------------------------------

# The run log is the account of every removal, so it is guarded as the history it accounts for:
# a run's record is never deleted; while it runs only its progress moves (the purging flag, the
# counts, which only grow, and its end); once it has ended it never changes. Its actor, start and
# cutoffs are fixed when it starts: the flag lets through only what is older than the cutoffs the
# run was recorded with, so a flag raised by hand on a finished run, or a cutoff moved, lets
# nothing through. A run starts with nothing counted. SQLite's REPLACE over a run is refused too
# (as for the events, migration 9).
_RUN_FIXED = ["run_id", "actor", "started_at", "message_cutoff", "payload_cutoff", "idempotency_cutoff", "verification_cutoff"]
_RUN_COUNTS = ["messages", "events", "payloads", "idempotency_keys", "verifications", "batches", "kept_for_feed"]
_RUNS_KEPT = "retention_runs is append-only: a run is never deleted, and once ended never changed"
_RUNS_PROGRESS = "retention_runs is append-only: a running run moves only its flag, its counts (up) and its end"
_RUNS_START = "retention_runs is append-only: a run starts unfinished, not purging, with nothing counted"


def _run_moves_forward(sqlite: bool) -> str:
    """A running run's update (an ended one is refused before this is asked)."""
    grows = " AND ".join(f"NEW.{c} >= OLD.{c}" for c in _RUN_COUNTS)
    return f"{same_columns(_RUN_FIXED, sqlite=sqlite)} AND {grows}"


_RUN_STARTS_CLEAN = "NEW.finished_at IS NULL AND NEW.purging = 0 AND " + " AND ".join(f"NEW.{c} = 0" for c in _RUN_COUNTS)

RUNS_TRIGGERS = {
    "sqlite": (
        f"CREATE TRIGGER retention_runs_no_delete BEFORE DELETE ON retention_runs BEGIN SELECT RAISE(ABORT, '{_RUNS_KEPT}'); END",
        f"""
        CREATE TRIGGER retention_runs_ended_final BEFORE UPDATE ON retention_runs
        WHEN OLD.finished_at IS NOT NULL BEGIN SELECT RAISE(ABORT, '{_RUNS_KEPT}'); END
        """,
        f"""
        CREATE TRIGGER retention_runs_progress_only BEFORE UPDATE ON retention_runs
        WHEN OLD.finished_at IS NULL AND NOT ({_run_moves_forward(sqlite=True)}) BEGIN SELECT RAISE(ABORT, '{_RUNS_PROGRESS}'); END
        """,
        f"""
        CREATE TRIGGER retention_runs_no_replace BEFORE INSERT ON retention_runs
        WHEN EXISTS (SELECT 1 FROM retention_runs WHERE run_id = NEW.run_id) BEGIN SELECT RAISE(ABORT, '{_RUNS_KEPT}'); END
        """,
        f"""
        CREATE TRIGGER retention_runs_start_clean BEFORE INSERT ON retention_runs
        WHEN NOT ({_RUN_STARTS_CLEAN}) BEGIN SELECT RAISE(ABORT, '{_RUNS_START}'); END
        """,
    ),
    "postgresql": (
        f"""
        CREATE FUNCTION retention_runs_guard() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                IF {_RUN_STARTS_CLEAN} THEN RETURN NEW; END IF;
                RAISE EXCEPTION '{_RUNS_START}';
            END IF;
            IF OLD.finished_at IS NOT NULL THEN RAISE EXCEPTION '{_RUNS_KEPT}'; END IF;
            IF {_run_moves_forward(sqlite=False)} THEN RETURN NEW; END IF;
            RAISE EXCEPTION '{_RUNS_PROGRESS}';
        END $$
        """,
        """
        CREATE TRIGGER retention_runs_guard BEFORE INSERT OR UPDATE ON retention_runs
        FOR EACH ROW EXECUTE FUNCTION retention_runs_guard()
        """,
        f"""
        CREATE TRIGGER retention_runs_no_delete BEFORE DELETE OR TRUNCATE ON retention_runs
        FOR EACH STATEMENT EXECUTE FUNCTION epix_refuse_change('{_RUNS_KEPT}')
        """,
    ),
}

# --- statements (PostgreSQL placeholders; SQLite reads them through schema.for_sqlite) ----------

# A message is settled when it is final and, if it went through a hub, the hub reported its end.
_SETTLED = f"""m.status IN ({_FINAL}) AND (m.via IS NULL OR EXISTS (
        SELECT 1 FROM delivery_reports d WHERE d.message_id = m.message_id AND d.status IN ({_HUB_FINAL})))"""


def _for_feed(floor: str) -> str:
    """Still owed to customs: in the feed's queue (a row goes when the feed marks it sent), received
    at or after ``floor`` (a placeholder holding FeedHold.floor; NULL matches nothing)."""
    return f"EXISTS (SELECT 1 FROM customs_feed_queue f WHERE f.message_id = m.message_id AND f.created_at >= {floor})"


# updated_at >= created_at, so the created_at term only lets the (status, created_at) index serve.
def _messages_due(floor: str) -> str:
    return f"{_SETTLED} AND m.created_at < $1 AND m.updated_at < $1 AND NOT {_for_feed(floor)}"


# The terms of messages_payload_held's WHERE appear as they are written there, so that the index
# may serve. SQLite still prefers the (status, created_at) index, which walks every message whose
# payload is gone: ``{indexed}`` is its ``INDEXED BY messages_payload_held`` (PostgreSQL: empty).
def _payloads_due(floor: str) -> str:
    return f"m.payload IS NOT NULL AND m.status IN ({_FINAL}) AND m.updated_at < $1 AND {_SETTLED} AND NOT {_for_feed(floor)}"


SQLITE_PAYLOADS_INDEX = " INDEXED BY messages_payload_held"

# $1 the cutoff, $2 the batch, $3 the feed's floor.
SELECT_MESSAGES_DUE = f"SELECT m.message_id FROM messages m WHERE {_messages_due('$3')} LIMIT $2"
SELECT_PAYLOADS_DUE = f"SELECT m.message_id FROM messages m{{indexed}} WHERE {_payloads_due('$3')} ORDER BY m.updated_at LIMIT $2"
DELETE_IDEMPOTENCY_DUE = """
    DELETE FROM idempotency_keys WHERE (principal, idem_key) IN (
        SELECT principal, idem_key FROM idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2)
"""
DELETE_VERIFICATIONS_DUE = """
    DELETE FROM verifications WHERE id IN (SELECT id FROM verifications WHERE at < $1 ORDER BY at LIMIT $2)
"""

# $1 the cutoff, $2 the feed's floor.
COUNT_MESSAGES_DUE = f"SELECT COUNT(*) FROM messages m WHERE {_messages_due('$2')}"
COUNT_EVENTS_DUE = f"SELECT COUNT(*) FROM message_events e JOIN messages m ON m.message_id = e.message_id WHERE {_messages_due('$2')}"
COUNT_PAYLOADS_DUE = f"SELECT COUNT(*) FROM messages m{{indexed}} WHERE {_payloads_due('$2')}"
# A dry run with a message cutoff ($3): the payloads of messages that go whole are not counted twice.
COUNT_PAYLOADS_KEPT_ROWS_DUE = COUNT_PAYLOADS_DUE + " AND m.updated_at >= $3"
# What a run kept for the feed: due whole ($1, the message cutoff) or for its payload ($2), each
# message once; a NULL cutoff matches nothing. Walked from the queue, which holds only what customs
# is still owed (usually nothing), not from messages. $3 the feed's floor.
COUNT_KEPT_FOR_FEED = f"""
    SELECT COUNT(*) FROM customs_feed_queue f JOIN messages m ON m.message_id = f.message_id
    WHERE f.created_at >= $3 AND {_SETTLED}
      AND ((m.created_at < $1 AND m.updated_at < $1) OR (m.payload IS NOT NULL AND m.updated_at < $2))
"""
COUNT_IDEMPOTENCY_DUE = "SELECT COUNT(*) FROM idempotency_keys WHERE created_at < $1"
COUNT_VERIFICATIONS_DUE = "SELECT COUNT(*) FROM verifications WHERE at < $1"

# Run ids are given out under the writer (SQLite) or the retention lock (PostgreSQL).
INSERT_RUN = """
    INSERT INTO retention_runs (run_id, actor, started_at, message_cutoff, payload_cutoff, idempotency_cutoff, verification_cutoff)
    SELECT COALESCE(MAX(run_id), 0) + 1, $1, $2, $3, $4, $5, $6 FROM retention_runs
    RETURNING run_id
"""
START_PURGING = "UPDATE retention_runs SET purging = 1 WHERE run_id = $1"
# Ends every purge transaction: the flag goes, the batch's counts are added.
END_BATCH = """
    UPDATE retention_runs SET purging = 0, batches = batches + 1, messages = messages + $2, events = events + $3,
        payloads = payloads + $4, idempotency_keys = idempotency_keys + $5, verifications = verifications + $6
    WHERE run_id = $1
"""
FINISH_RUN = "UPDATE retention_runs SET finished_at = $2, error = $3, kept_for_feed = $4 WHERE run_id = $1"
RUN_COLUMNS = (
    "run_id, actor, started_at, finished_at, error, message_cutoff, payload_cutoff, idempotency_cutoff, "
    "verification_cutoff, messages, events, payloads, idempotency_keys, verifications, batches, kept_for_feed"
)
SELECT_RUNS = f"SELECT {RUN_COLUMNS} FROM retention_runs ORDER BY run_id DESC LIMIT $1"
SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM retention_runs WHERE run_id = $1"


def payload_removed_detail(run_id: int, cutoff: datetime) -> str:
    return f"payload removed by retention run {run_id} (final since before {cutoff.isoformat()}); digest and receipt kept"


def run_from_row(r: Any, ts: Callable[[Any], datetime | None]) -> PurgeRun:
    return PurgeRun(
        run_id=r[0], actor=r[1], started_at=ts(r[2]), finished_at=ts(r[3]), error=r[4],
        cutoffs=Cutoffs(messages=ts(r[5]), payloads=ts(r[6]), idempotency_keys=ts(r[7]), verifications=ts(r[8])),
        counts=PurgeCounts(messages=r[9], events=r[10], payloads=r[11], idempotency_keys=r[12], verifications=r[13]),
        batches=r[14], kept_for_feed=r[15],
    )  # fmt: skip


def run_values(actor: str, now: Any, cutoffs: Cutoffs, ts: Callable[[datetime | None], Any]) -> tuple[Any, ...]:
    """INSERT_RUN's parameters in order."""
    return (
        actor, now, ts(cutoffs.messages), ts(cutoffs.payloads), ts(cutoffs.idempotency_keys), ts(cutoffs.verifications),
    )  # fmt: skip


def batch_values(run_id: int, counts: PurgeCounts) -> tuple[Any, ...]:
    """END_BATCH's parameters in order."""
    c = counts
    return (run_id, c.messages, c.events, c.payloads, c.idempotency_keys, c.verifications)


def check_batch(batch: int) -> None:
    if not 1 <= batch <= MAX_BATCH:
        raise EpixError(ErrorCode.CONFLICT, f"A purge batch holds 1 to {MAX_BATCH} rows, not {batch}.", batch=batch)


async def run_batches(
    cutoffs: Cutoffs,
    one_batch: Callable[[Category, datetime], Awaitable[PurgeCounts]],
    *,
    batch: int,
    pause_s: float,
) -> tuple[PurgeCounts, int]:
    """Every category with a cutoff, in Category order, one ``one_batch`` (one transaction) at a
    time until a batch comes back short; (total counts, batches run)."""
    total, batches = PurgeCounts(), 0
    for category in Category:
        cutoff = cutoffs.of(category)
        if cutoff is None:
            continue
        while True:
            counts = await one_batch(category, cutoff)
            total, batches = total + counts, batches + 1
            if getattr(counts, category.value) < batch:
                break
            await asyncio.sleep(pause_s)  # let the gateway's own writes through between batches
    return total, batches
