"""The one logical schema, its versioned migrations, and the SQL both backends share.

DDL is written once with two type holes, ``{blob}`` and ``{ts}``; the few things that cannot be
written the same way in SQLite and PostgreSQL (the triggers that keep the event history, the
customs audit and the ledger as they were written) are listed per dialect in ``_DIALECT_EXTRAS``. Shared statements are written with
PostgreSQL's ``$n`` placeholders; SQLite reads the same text with ``?n`` (``for_sqlite``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from domain.messages import Action, Direction, MessageStatus

from .base import Claim, MessageAlias, MessageEvent, MessageRecord, PermitRecord, sources_of
from .ledger import AUDIT_TRIGGERS, CHECKS_DDL, CHECKS_TRIGGERS, FEED_DDL, FEED_TRIGGERS, LEDGER_DDL, TRUST_MARKS_DDL
from .retention import KEPT_FOR_FEED_DDL, RETENTION_DDL, RETENTION_TRIGGERS, RUNS_TRIGGERS


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    blob: str
    ts: str


SQLITE = Dialect("sqlite", blob="BLOB", ts="TEXT")  # timestamps: fixed-width ISO 8601 in UTC, so text order is time order
POSTGRES = Dialect("postgresql", blob="BYTEA", ts="TIMESTAMPTZ")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    ddl: tuple[str, ...]


_V1 = (
    """
    CREATE TABLE permits (
        issuer      TEXT NOT NULL,
        number      TEXT NOT NULL,
        version     INTEGER NOT NULL,
        -- a hub holds the same version twice: as received, and as forwarded
        direction   TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
        status      TEXT NOT NULL CHECK (status IN ('VALID', 'CANCELLED', 'REPLACED')),
        permit_json {blob} NOT NULL,
        signed_xml  {blob} NOT NULL,
        digest      TEXT NOT NULL,
        sender      TEXT,
        replaces    TEXT,
        replaced_by TEXT,
        created_at  {ts} NOT NULL,
        PRIMARY KEY (issuer, number, version, direction)
    )
    """,
    """
    CREATE TABLE messages (
        message_id        TEXT PRIMARY KEY,
        conversation_id   TEXT NOT NULL,
        direction         TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
        sender            TEXT NOT NULL,
        receiver          TEXT NOT NULL,
        document_type     TEXT NOT NULL,
        action            TEXT NOT NULL,
        issuer            TEXT NOT NULL,
        number            TEXT NOT NULL,
        version           INTEGER NOT NULL,
        status            TEXT NOT NULL,
        attempts          INTEGER NOT NULL DEFAULT 0,
        next_attempt_at   {ts},
        lease_until       {ts},
        -- The queue's single sort key: next_attempt_at while the message waits, lease_until while
        -- a sender holds it, NULL once nothing is pending. One partial index then serves the claim.
        due_at            {ts},
        last_error_code   TEXT,
        last_error_detail TEXT,
        via               TEXT,
        receipt           {blob},
        payload_digest    TEXT,
        -- the exact document to deliver (outbound) or that was delivered (inbound), byte for byte
        payload           {blob},
        -- seq of the newest event, so that appending one needs no MAX() over the history
        last_seq          INTEGER NOT NULL,
        created_at        {ts} NOT NULL,
        updated_at        {ts} NOT NULL
    )
    """,
    "CREATE INDEX messages_due ON messages (due_at) WHERE due_at IS NOT NULL",
    "CREATE INDEX messages_receiver_due ON messages (receiver, due_at) WHERE due_at IS NOT NULL",
    "CREATE INDEX messages_inbox ON messages (receiver, created_at, message_id) WHERE status = 'RECEIVED'",
    "CREATE INDEX messages_created ON messages (created_at, message_id)",
    "CREATE INDEX messages_status_created ON messages (status, created_at, message_id)",
    "CREATE INDEX messages_sender_created ON messages (sender, created_at, message_id)",
    "CREATE INDEX messages_receiver_created ON messages (receiver, created_at, message_id)",
    "CREATE INDEX messages_permit ON messages (issuer, number, version)",
    """
    CREATE TABLE message_events (
        message_id TEXT NOT NULL REFERENCES messages (message_id),
        seq        INTEGER NOT NULL,
        at         {ts} NOT NULL,
        status     TEXT NOT NULL,
        actor      TEXT NOT NULL,
        detail     TEXT,
        error_code TEXT,
        PRIMARY KEY (message_id, seq)
    )
    """,
    """
    CREATE TABLE idempotency_keys (
        principal    TEXT NOT NULL,
        idem_key     TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        message_ids  TEXT NOT NULL,  -- JSON array, in the order accept_outbound returned them
        created_at   {ts} NOT NULL,
        PRIMARY KEY (principal, idem_key)
    )
    """,
)

# The event history is evidence for operators and partners: the database itself refuses to
# change or remove it, so no code path (or hand-typed SQL) can rewrite what happened.
_DIALECT_EXTRAS: dict[str, dict[int, tuple[str, ...]]] = {
    "sqlite": {
        1: (
            """
            CREATE TRIGGER message_events_no_update BEFORE UPDATE ON message_events
            BEGIN SELECT RAISE(ABORT, 'message_events is append-only'); END
            """,
            """
            CREATE TRIGGER message_events_no_delete BEFORE DELETE ON message_events
            BEGIN SELECT RAISE(ABORT, 'message_events is append-only'); END
            """,
        ),
    },
    "postgresql": {
        1: (
            """
            CREATE FUNCTION message_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'message_events is append-only'; END $$
            """,
            """
            CREATE TRIGGER message_events_append_only BEFORE UPDATE OR DELETE ON message_events
            FOR EACH ROW EXECUTE FUNCTION message_events_refuse_change()
            """,
            """
            CREATE TRIGGER message_events_no_truncate BEFORE TRUNCATE ON message_events
            FOR EACH STATEMENT EXECUTE FUNCTION message_events_refuse_change()
            """,
        ),
    },
}

# The outbox relay's marker for a message broker (gateway.queue.rabbit): the last_seq at which the
# message was last published and confirmed. A message in SEND_ENQUEUED whose last_seq is beyond it
# (never published, or queued again since) is published once more; nothing else is.
_V2 = ("ALTER TABLE messages ADD COLUMN published_seq INTEGER",)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "permits, messages, append-only events, idempotency keys", _V1),
    Migration(2, "outbox relay marker: published_seq", _V2),
)

# A hub's delivery reports (ePhyto tracking status) as the original sender last heard them, and
# the index of what a hub holds for members that pull (outbound, never due: due_at IS NULL).
_V3 = (
    """
    CREATE TABLE delivery_reports (
        message_id TEXT PRIMARY KEY REFERENCES messages (message_id),
        status     TEXT NOT NULL,
        reporter   TEXT NOT NULL,
        detail     TEXT,
        report     {blob},
        updated_at {ts} NOT NULL
    )
    """,
    """
    CREATE INDEX messages_held_for_pull ON messages (receiver, created_at, message_id)
    WHERE direction = 'outbound' AND due_at IS NULL AND status IN ('SEND_ENQUEUED', 'SENDING')
    """,
)
MIGRATIONS += (Migration(3, "hub: delivery reports, held-for-pull index", _V3),)

# Customs single window: write-off ledger, balances, verification audit, pre-arrival feed (ledger.py).
MIGRATIONS += (Migration(4, "customs: write-offs, balances, verifications, feed", LEDGER_DDL),)

# Customs verification: what a verdict needs per permit version, worked out once (ledger.py).
MIGRATIONS += (Migration(5, "customs: permit checks kept in step with permits by triggers", CHECKS_DDL),)
for _dialect, _triggers in CHECKS_TRIGGERS.items():
    _DIALECT_EXTRAS[_dialect][5] = _triggers

# Retention: the run log, the indexes a purge walks, and an event history whose DELETE only a
# retention run gets through (retention.py).
MIGRATIONS += (Migration(6, "retention: run log, purge indexes, history deletable only by a retention run", RETENTION_DDL),)
for _dialect, _triggers in RETENTION_TRIGGERS.items():
    _DIALECT_EXTRAS[_dialect][6] = _triggers

# Customs: the verification audit append-only but for a retention run (the mechanism of
# migration 6), write-offs only ever reversed, balances only ever moved (ledger.py).
MIGRATIONS += (Migration(7, "customs: verification audit append-only but for retention, write-offs and balances guarded", ()),)
for _dialect, _triggers in AUDIT_TRIGGERS.items():
    _DIALECT_EXTRAS[_dialect][7] = _triggers

# Customs: the pre-arrival feed's queue, kept by trigger as messages arrive, and its one turn for
# all gateway processes on the store (ledger.py).
MIGRATIONS += (Migration(8, "customs: pre-arrival feed queue and turn", FEED_DDL),)
for _dialect, _triggers in FEED_TRIGGERS.items():
    _DIALECT_EXTRAS[_dialect][8] = _triggers

# The event history against SQLite's REPLACE. INSERT OR REPLACE (and REPLACE INTO, or a REPLACE
# conflict clause anywhere) deletes the row in its way without firing DELETE triggers unless the
# connection turned recursive_triggers on, so migration 1's delete trigger alone lets it rewrite an
# event. The refusal is a BEFORE INSERT trigger in the schema rather than that pragma on our own
# connections: it then holds for every connection (the sqlite3 shell, a script, another program),
# whatever its pragmas, and also during a retention run, whose flag lets a DELETE of old history
# through but gives no right to rewrite it. An upsert (ON CONFLICT DO UPDATE) meets the update
# trigger on both backends, and PostgreSQL has no REPLACE, so it needs nothing here. The audit and
# the ledger have had the same trigger since migration 7 (ledger.py).
_EVENTS_KEPT = "message_events is append-only: an event is never replaced"
_DIALECT_EXTRAS["sqlite"][9] = (
    f"""
    CREATE TRIGGER message_events_no_replace BEFORE INSERT ON message_events
    WHEN EXISTS (SELECT 1 FROM message_events WHERE message_id = NEW.message_id AND seq = NEW.seq)
    BEGIN SELECT RAISE(ABORT, '{_EVENTS_KEPT}'); END
    """,
)
MIGRATIONS += (Migration(9, "events: an insert over a held event refused (SQLite REPLACE)", ()),)

# Retention keeps what the customs feed has yet to hand over; each run records how much (retention.py).
MIGRATIONS += (Migration(10, "retention: runs record what they kept for the customs feed", KEPT_FOR_FEED_DDL),)

# The retention run log guarded like the history it accounts for (retention.py).
MIGRATIONS += (Migration(11, "retention: the run log append-only (a run only moves forward, and an ended one never)", ()),)
for _dialect, _triggers in RUNS_TRIGGERS.items():
    _DIALECT_EXTRAS[_dialect][11] = _triggers

# A permit received is looked up by the one it replaces (schema.MARK_REPLACED_BEFORE): a
# replacement may arrive before the permit it replaces.
_V12 = ("CREATE INDEX permits_replaces ON permits (issuer, replaces) WHERE replaces IS NOT NULL",)
MIGRATIONS += (Migration(12, "permits: looked up by the permit they replace", _V12),)

# A message id a partner gave content held under another of its messages (a resend under a new
# id): kept with the receipt it was answered with, and gone with the message it names.
_V13 = (
    """
    CREATE TABLE message_aliases (
        message_id     TEXT PRIMARY KEY,
        sender         TEXT NOT NULL,
        original_id    TEXT NOT NULL REFERENCES messages (message_id) ON DELETE CASCADE,
        payload_digest TEXT NOT NULL,
        receipt        {blob} NOT NULL,
        received_at    {ts} NOT NULL
    )
    """,
    "CREATE INDEX message_aliases_original ON message_aliases (original_id)",
)
MIGRATIONS += (Migration(13, "messages: ids a partner resent held content under, with their receipts", _V13),)
MIGRATIONS += (Migration(14, "customs: the trust each issuer's permit checks were made under", TRUST_MARKS_DDL),)

ALIAS_COLUMNS = "message_id, sender, original_id, payload_digest, receipt, received_at"
INSERT_ALIAS = f"INSERT INTO message_aliases ({ALIAS_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_id) DO NOTHING"
SELECT_ALIAS = f"SELECT {ALIAS_COLUMNS} FROM message_aliases WHERE message_id = $1"


def alias_values(alias: MessageAlias, enc: Callable[[datetime], Any]) -> tuple:
    return (alias.message_id, alias.sender, alias.original_id, alias.payload_digest, alias.receipt, enc(alias.received_at))


def alias_from_row(row: Any, dec: Callable[[Any], datetime]) -> MessageAlias:
    return MessageAlias(row[0], row[1], row[2], row[3], bytes(row[4]), dec(row[5]))


MIGRATIONS_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version    INTEGER PRIMARY KEY,
        name       TEXT NOT NULL,
        applied_at {ts} NOT NULL
    )
"""


def migration_statements(migration: Migration, dialect: Dialect) -> list[str]:
    ddl = [s.format(blob=dialect.blob, ts=dialect.ts) for s in migration.ddl]
    return ddl + list(_DIALECT_EXTRAS[dialect.name].get(migration.version, ()))


def migrations_table(dialect: Dialect) -> str:
    return MIGRATIONS_TABLE.format(ts=dialect.ts)


_PLACEHOLDER = re.compile(r"\$(\d+)")


@lru_cache(maxsize=None)
def for_sqlite(sql: str) -> str:
    """The same statement with SQLite's numbered placeholders (``?1`` binds like ``$1``)."""
    return _PLACEHOLDER.sub(r"?\1", sql)


# --- columns and rows -------------------------------------------------------------------------

PERMIT_COLUMNS = (
    "issuer, number, version, direction, status, permit_json, signed_xml, digest, sender, "
    "replaces, replaced_by, created_at"
)
MESSAGE_COLUMNS = (
    "message_id, conversation_id, direction, sender, receiver, document_type, action, issuer, "
    "number, version, status, attempts, next_attempt_at, lease_until, last_error_code, "
    "last_error_detail, via, receipt, payload_digest, created_at, updated_at, payload"
)
EVENT_COLUMNS = "message_id, seq, at, status, actor, detail, error_code"

Encode = Callable[[datetime | None], Any]
Decode = Callable[[Any], datetime | None]

INSERT_PERMIT = f"""
    INSERT INTO permits ({PERMIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    ON CONFLICT DO NOTHING
"""
# A message stored already claimed (base.Claim) has two events, SEND_ENQUEUED and SENDING.
INSERT_MESSAGE = f"""
    INSERT INTO messages ({MESSAGE_COLUMNS}, due_at, last_seq)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
            $21, $22, $23, CASE WHEN $11 = 'SENDING' THEN 2 ELSE 1 END)
"""
INSERT_EVENT = f"INSERT INTO message_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
INSERT_IDEMPOTENCY = """
    INSERT INTO idempotency_keys (principal, idem_key, request_hash, message_ids, created_at)
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING
"""
SELECT_IDEMPOTENCY = "SELECT request_hash, message_ids FROM idempotency_keys WHERE principal = $1 AND idem_key = $2"
SELECT_PERMIT_DIGEST = "SELECT digest FROM permits WHERE issuer = $1 AND number = $2 AND version = $3 AND direction = $4"
SELECT_PERMIT_VERSIONS = f"""
    SELECT {PERMIT_COLUMNS} FROM permits WHERE issuer = $1 AND number = $2
    ORDER BY version, direction DESC
"""
UPDATE_PERMIT_STATUS = """
    UPDATE permits SET status = $3, replaced_by = COALESCE($4, replaced_by)
    WHERE issuer = $1 AND number = $2
      AND version = (SELECT MAX(version) FROM permits WHERE issuer = $1 AND number = $2)
"""
SELECT_MESSAGE = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = $1"
# PostgreSQL: a message and an alias held under one id, in one round trip (Store.find_received).
SELECT_RECEIVED = f"""
    SELECT {", ".join("m." + c.strip() for c in MESSAGE_COLUMNS.split(","))},
           {", ".join("a." + c.strip() for c in ALIAS_COLUMNS.split(","))}
    FROM (SELECT $1::text AS id) k
    LEFT JOIN messages m ON m.message_id = k.id
    LEFT JOIN message_aliases a ON a.message_id = k.id
"""
MESSAGE_COLUMN_COUNT = len(MESSAGE_COLUMNS.split(","))
SELECT_STATUS = "SELECT status FROM messages WHERE message_id = $1"
SELECT_VERSION_MESSAGES = f"""
    SELECT {MESSAGE_COLUMNS} FROM messages
    WHERE issuer = $1 AND number = $2 AND version = $3 AND direction = $4
    ORDER BY created_at, message_id
"""
SELECT_PERMIT_MESSAGES = f"""
    SELECT {MESSAGE_COLUMNS} FROM messages WHERE issuer = $1 AND number = $2
    ORDER BY created_at, message_id
"""
SELECT_SAME_INBOUND = f"""
    SELECT {MESSAGE_COLUMNS} FROM messages
    WHERE issuer = $1 AND number = $2 AND version = $3 AND direction = 'inbound'
      AND action = $4 AND payload_digest = $5
    ORDER BY created_at, message_id LIMIT 1
"""
SELECT_FIRST_INBOUND_OF_VERSION = f"""
    SELECT {MESSAGE_COLUMNS} FROM messages
    WHERE issuer = $1 AND number = $2 AND version = $3 AND direction = 'inbound'
    ORDER BY created_at, message_id LIMIT 1
"""
SELECT_EVENTS = f"SELECT {EVENT_COLUMNS} FROM message_events WHERE message_id = $1 ORDER BY seq"
SELECT_INBOX = f"""
    SELECT {MESSAGE_COLUMNS} FROM messages
    WHERE status = 'RECEIVED' AND receiver = $1 AND direction = 'inbound'
    ORDER BY created_at, message_id LIMIT $2
"""
SELECT_INBOX_AFTER = f"""
    SELECT {MESSAGE_COLUMNS} FROM messages
    WHERE status = 'RECEIVED' AND receiver = $1 AND direction = 'inbound'
      AND (created_at > $2 OR (created_at = $2 AND message_id > $3))
    ORDER BY created_at, message_id LIMIT $4
"""
# The effects of a replacement or a cancellation on the permit they concern, in the same
# transaction as the message that carries them.
MARK_REPLACED = """
    UPDATE permits SET status = 'REPLACED', replaced_by = $3
    WHERE issuer = $1 AND number = $2 AND direction = $4 AND status = 'VALID'
"""
MARK_CANCELLED = """
    UPDATE permits SET status = 'CANCELLED'
    WHERE issuer = $1 AND number = $2 AND direction = $3 AND status = 'VALID'
"""
# The same effects for a permit that arrives after its cancellation or its replacement did: each
# message has its own retry clock, so a partner's cancellation (or replacement) can overtake the
# permit it concerns, which must not then be held as VALID.
MARK_CANCELLED_BEFORE = """
    UPDATE permits SET status = 'CANCELLED'
    WHERE issuer = $1 AND number = $2 AND direction = $3 AND status = 'VALID'
      AND EXISTS (SELECT 1 FROM messages m WHERE m.issuer = $1 AND m.number = $2 AND m.direction = $3 AND m.action = 'cancel')
"""
MARK_REPLACED_BEFORE = """
    UPDATE permits SET status = 'REPLACED',
        replaced_by = (SELECT r.number FROM permits r WHERE r.issuer = $1 AND r.replaces = $2 AND r.direction = $3
                       ORDER BY r.created_at, r.number LIMIT 1)
    WHERE issuer = $1 AND number = $2 AND direction = $3 AND status = 'VALID'
      AND EXISTS (SELECT 1 FROM permits r WHERE r.issuer = $1 AND r.replaces = $2 AND r.direction = $3)
"""
SELECT_COUNTS = "SELECT status, COUNT(*) FROM messages GROUP BY status"
SELECT_NEXT_DUE = "SELECT MIN(due_at) FROM messages WHERE due_at IS NOT NULL"
# The outbox relay: queued messages not published since they were last queued, and the marker.
SELECT_UNPUBLISHED = """
    SELECT message_id, receiver, via, last_seq FROM messages
    WHERE status = 'SEND_ENQUEUED' AND direction = 'outbound' AND due_at IS NOT NULL
      AND (published_seq IS NULL OR published_seq < last_seq)
    ORDER BY created_at, message_id LIMIT $1
"""
MARK_PUBLISHED = """
    UPDATE messages SET published_seq = $2
    WHERE message_id = $1 AND (published_seq IS NULL OR published_seq < $2)
"""

# --- hub: relayed messages held for pull, delivery reports ---------------------------------------

# Held for pull: queued outbound with no due time, so neither claim_due nor next_due_at sees it.
SELECT_HELD_FOR_PULL = f"""
    SELECT {MESSAGE_COLUMNS} FROM messages
    WHERE direction = 'outbound' AND receiver = $1 AND due_at IS NULL
      AND status IN ('SEND_ENQUEUED', 'SENDING')
    ORDER BY created_at, message_id LIMIT $2
"""
FINAL_DELIVERY_STATUSES = ("Delivered", "DeliveredWithWarnings", "DeliveredNotReadable", "FailedDelivery")
SELECT_AWAITING_REPORT = f"""
    SELECT {MESSAGE_COLUMNS} FROM messages m
    WHERE m.status = 'ACKNOWLEDGED' AND m.direction = 'outbound' AND m.via IS NOT NULL
      AND NOT EXISTS (
        SELECT 1 FROM delivery_reports r WHERE r.message_id = m.message_id
          AND r.status IN ({", ".join(f"'{s}'" for s in FINAL_DELIVERY_STATUSES)}))
    ORDER BY m.created_at, m.message_id LIMIT $1
"""
REPORT_COLUMNS = "message_id, status, reporter, detail, report, updated_at"
SELECT_REPORT = f"SELECT {REPORT_COLUMNS} FROM delivery_reports WHERE message_id = $1"
UPSERT_REPORT = f"""
    INSERT INTO delivery_reports ({REPORT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (message_id) DO UPDATE SET status = excluded.status, reporter = excluded.reporter,
        detail = excluded.detail, report = excluded.report, updated_at = excluded.updated_at
"""
# Appending an event that records something without changing the status (a fetch, a report).
BUMP_SEQ = "UPDATE messages SET last_seq = last_seq + 1, updated_at = $2 WHERE message_id = $1 RETURNING last_seq, status"

_WAITING = (MessageStatus.SEND_ENQUEUED, MessageStatus.WAITING_FOR_RETRY)


@lru_cache(maxsize=None)
def transition_update(new: MessageStatus, with_error: bool, with_receipt: bool) -> tuple[str, tuple[str, ...]]:
    """The UPDATE ... RETURNING that moves one message to ``new`` only if the move is allowed,
    and the names of its parameters in ``$n`` order (PostgreSQL wants exactly the ones used).

    The guard on the current status is part of the statement, so a concurrent move cannot slip
    between a check and the write.
    """
    names: list[str] = []

    def p(name: str) -> str:
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    key = p("message_id")
    sets = [f"status = '{new.value}'", f"attempts = attempts + {p('increment')}", f"updated_at = {p('now')}"]
    sets.append("last_seq = last_seq + 1")
    if new in _WAITING:
        sets += [f"next_attempt_at = {p('next_attempt_at')}", "lease_until = NULL", f"due_at = {p('next_attempt_at')}"]
    elif new is MessageStatus.SENDING:
        # Only claim_due grants a lease; a direct move keeps whatever lease (and so reclaim time) exists.
        sets += ["next_attempt_at = NULL", "due_at = lease_until"]
    else:
        sets += ["next_attempt_at = NULL", "lease_until = NULL", "due_at = NULL"]
    if with_error:
        sets += [f"last_error_code = {p('error_code')}", f"last_error_detail = {p('detail')}"]
    if with_receipt:
        sets.append(f"receipt = {p('receipt')}")
    sources = ", ".join(f"'{s.value}'" for s in sorted(sources_of(new)))
    guard = f"status IN ({sources})" if sources else "FALSE"
    sql = (
        f"UPDATE messages SET {', '.join(sets)} WHERE message_id = {key} AND {guard} "
        f"RETURNING {MESSAGE_COLUMNS}, last_seq"
    )
    return sql, tuple(names)


def permit_values(p: PermitRecord, ts: Encode) -> tuple[Any, ...]:
    return (
        p.issuer, p.number, p.version, p.direction.value, p.status, p.permit_json, p.signed_xml,
        p.digest, p.sender, p.replaces, p.replaced_by, ts(p.created_at),
    )  # fmt: skip


def first_events(m: MessageRecord, now: Any, actor: str, detail: str | None, claim: Claim | None) -> list[tuple[Any, ...]]:
    """INSERT_EVENT rows of a message as it is first stored: SEND_ENQUEUED, and SENDING when it
    was stored already claimed (base.Claim)."""
    events = [(m.message_id, 1, now, MessageStatus.SEND_ENQUEUED.value, actor, detail, None)]
    if m.status is MessageStatus.SENDING:
        events.append((m.message_id, 2, now, MessageStatus.SENDING.value, claim.actor, None, None))
    return events


def message_values(m: MessageRecord, ts: Encode) -> tuple[Any, ...]:
    """Column values in MESSAGE_COLUMNS order, then due_at."""
    due = m.next_attempt_at if m.status in _WAITING else m.lease_until if m.status is MessageStatus.SENDING else None
    return (
        m.message_id, m.conversation_id, m.direction.value, m.sender, m.receiver, m.document_type,
        m.action.value, m.issuer, m.number, m.version, m.status.value, m.attempts,
        ts(m.next_attempt_at), ts(m.lease_until), m.last_error_code, m.last_error_detail, m.via,
        m.receipt, m.payload_digest, ts(m.created_at), ts(m.updated_at), m.payload, ts(due),
    )  # fmt: skip


def permit_from_row(r: Any, ts: Decode) -> PermitRecord:
    return PermitRecord(
        issuer=r[0], number=r[1], version=r[2], direction=Direction(r[3]), status=r[4],
        permit_json=bytes(r[5]), signed_xml=bytes(r[6]), digest=r[7], sender=r[8], replaces=r[9],
        replaced_by=r[10], created_at=ts(r[11]),
    )  # fmt: skip


def message_from_row(r: Any, ts: Decode) -> MessageRecord:
    return MessageRecord(
        message_id=r[0], conversation_id=r[1], direction=Direction(r[2]), sender=r[3], receiver=r[4],
        document_type=r[5], action=Action(r[6]), issuer=r[7], number=r[8], version=r[9],
        status=MessageStatus(r[10]), attempts=r[11], next_attempt_at=ts(r[12]), lease_until=ts(r[13]),
        last_error_code=r[14], last_error_detail=r[15], via=r[16],
        receipt=None if r[17] is None else bytes(r[17]), payload_digest=r[18],
        created_at=ts(r[19]), updated_at=ts(r[20]), payload=None if r[21] is None else bytes(r[21]),
    )  # fmt: skip


def event_from_row(r: Any, ts: Decode) -> MessageEvent:
    return MessageEvent(
        message_id=r[0], seq=r[1], at=ts(r[2]), status=MessageStatus(r[3]), actor=r[4], detail=r[5],
        error_code=r[6],
    )  # fmt: skip


def list_query(
    *,
    status: str | None,
    direction: str | None,
    sender: str | None,
    receiver: str | None,
    issuer: str | None,
    number: str | None,
    before: Any,
    before_id: str | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """SELECT for list_messages with only the conditions asked for (so the planner picks the
    matching index), newest first. ``before`` arrives already encoded for the backend."""
    where: list[str] = []
    args: list[Any] = []

    def add(condition: str, value: Any) -> None:
        args.append(value)
        where.append(condition.replace("?", f"${len(args)}"))

    for column, value in (
        ("status", status), ("direction", direction), ("sender", sender), ("receiver", receiver),
        ("issuer", issuer), ("number", number),
    ):  # fmt: skip
        if value is not None:
            add(f"{column} = ?", value)
    if before is not None and before_id is not None:
        args += [before, before_id]
        n = len(args)
        where.append(f"(created_at < ${n - 1} OR (created_at = ${n - 1} AND message_id < ${n}))")
    elif before is not None:
        add("created_at < ?", before)
    args.append(limit)
    sql = f"SELECT {MESSAGE_COLUMNS} FROM messages"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY created_at DESC, message_id DESC LIMIT ${len(args)}"
    return sql, args


def inbound_effects(permit: PermitRecord | None, message: MessageRecord) -> list[tuple[str, tuple[Any, ...]]]:
    """What a newly received message does to the permits already held (same transaction)."""
    effects: list[tuple[str, tuple[Any, ...]]] = []
    if message.action is Action.CANCEL:
        effects.append((MARK_CANCELLED, (message.issuer, message.number, Direction.INBOUND.value)))
    if permit is not None and permit.replaces:
        effects.append((MARK_REPLACED, (permit.issuer, permit.replaces, permit.number, Direction.INBOUND.value)))
    if permit is not None:
        effects.append((MARK_CANCELLED_BEFORE, (permit.issuer, permit.number, Direction.INBOUND.value)))
        effects.append((MARK_REPLACED_BEFORE, (permit.issuer, permit.number, Direction.INBOUND.value)))
    return effects
