"""The shared store: PostgreSQL through an asyncpg pool, for several gateway processes at once.

Round trips are the cost here, so each store call is as few statements as it can be: accepting a
permit with its messages and their first events is one statement (data-modifying CTEs), a
transition is one statement whose WHERE clause carries the allowed-from statuses, and a claim is
one statement using ``FOR UPDATE SKIP LOCKED`` so that concurrent senders in any number of
processes each take different messages without waiting for one another. asyncpg prepares and
caches every statement per connection.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import asyncpg

from domain.errors import EpixError, ErrorCode
from domain.messages import Direction, MessageStatus

from . import schema as q
from .ledger_postgres import PostgresLedger
from .retention_postgres import PostgresRetention
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
    pushed as _pushed,
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

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _enc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _dec(value: datetime | None) -> datetime | None:
    return value  # asyncpg already returns timestamptz as an aware UTC datetime


def _affected(status: str) -> int:
    """Rows touched, from a command tag such as 'INSERT 0 1' or 'UPDATE 3'."""
    return int(status.rsplit(" ", 1)[-1])


_ARRAY_TYPES = (
    "text", "text", "text", "text", "text", "text", "text", "text", "text", "int4", "text", "int4",
    "timestamptz", "timestamptz", "text", "text", "text", "bytea", "text", "timestamptz",
    "timestamptz", "bytea", "timestamptz",
)  # fmt: skip  -- q.message_values order: MESSAGE_COLUMNS, then due_at
_NOW, _ACTOR, _SENDER = 13 + len(_ARRAY_TYPES), 14 + len(_ARRAY_TYPES), 15 + len(_ARRAY_TYPES)
_STATUS = 11  # the column of q.message_values that says whether a message is stored claimed

_ACCEPT = f"""
    WITH p AS (
        INSERT INTO permits ({q.PERMIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        ON CONFLICT DO NOTHING RETURNING 1
    ), m AS (
        INSERT INTO messages ({q.MESSAGE_COLUMNS}, due_at, last_seq)
        SELECT u.*, CASE WHEN u.c{_STATUS} = 'SENDING' THEN 2 ELSE 1 END
        FROM unnest({", ".join(f"${13 + i}::{t}[]" for i, t in enumerate(_ARRAY_TYPES))})
             AS u({", ".join(f"c{i + 1}" for i in range(len(_ARRAY_TYPES)))})
        WHERE EXISTS (SELECT 1 FROM p)
        RETURNING message_id, status
    ), e AS (
        INSERT INTO message_events ({q.EVENT_COLUMNS})
        SELECT message_id, 1, ${_NOW}::timestamptz, 'SEND_ENQUEUED', ${_ACTOR}::text, 'accepted', NULL FROM m
        UNION ALL
        SELECT message_id, 2, ${_NOW}::timestamptz, 'SENDING', ${_SENDER}::text, NULL, NULL FROM m WHERE status = 'SENDING'
    )
    SELECT EXISTS (SELECT 1 FROM p)
"""

_CLAIM = f"""
    WITH due AS (
        SELECT message_id, status AS was, due_at AS was_due FROM messages
        WHERE due_at IS NOT NULL AND due_at <= $1 AND direction = 'outbound'{{receiver}}
        ORDER BY due_at LIMIT $2
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE messages m SET status = 'SENDING', lease_until = $3, due_at = $3, next_attempt_at = NULL,
            updated_at = $1, last_seq = m.last_seq + CASE WHEN due.was = 'SENDING' THEN 2 ELSE 1 END
        FROM due WHERE m.message_id = due.message_id
        RETURNING {", ".join("m." + c.strip() for c in q.MESSAGE_COLUMNS.split(","))},
                  m.last_seq, due.was, due.was_due
    ), events AS (
        INSERT INTO message_events ({q.EVENT_COLUMNS})
        SELECT message_id, last_seq - 1, $1, 'SEND_ENQUEUED', $4::text, $5::text, NULL
        FROM claimed WHERE was = 'SENDING'
        UNION ALL
        SELECT message_id, last_seq, $1, 'SENDING', $4::text, NULL, NULL FROM claimed
    )
    SELECT {q.MESSAGE_COLUMNS} FROM claimed ORDER BY was_due, message_id
"""
_CLAIM_ANY = _CLAIM.format(receiver="")
_CLAIM_FOR_RECEIVER = _CLAIM.format(receiver=" AND receiver = $6")


@lru_cache(maxsize=None)
def _transition_sql(new: MessageStatus, with_error: bool, with_receipt: bool) -> tuple[str, tuple[str, ...]]:
    update, update_names = q.transition_update(new, with_error, with_receipt)
    names = list(update_names)

    def p(name: str, pg_type: str) -> str:
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}::{pg_type}"

    sql = f"""
        WITH u AS ({update}), e AS (
            INSERT INTO message_events ({q.EVENT_COLUMNS})
            SELECT message_id, last_seq, {p("now", "timestamptz")}, '{new.value}', {p("actor", "text")},
                   {p("detail", "text")}, {p("error_code", "text")}
            FROM u
        )
        SELECT {q.MESSAGE_COLUMNS} FROM u
    """
    return sql, tuple(names)


class PostgresStore(PostgresLedger, PostgresRetention, Store):
    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        clock: Clock = utc_now,
    ) -> None:
        if schema is not None and not _IDENTIFIER.match(schema):
            raise EpixError(
                ErrorCode.CONFIG_INVALID,
                f"The PostgreSQL schema name {schema!r} must be lower-case letters, digits and underscores.",
            )
        self._dsn = dsn
        self.schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._clock = clock
        self._pool: asyncpg.Pool | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        settings = {"search_path": self.schema} if self.schema else {}
        if "application_name" not in self._dsn:  # who holds which connection, in pg_stat_activity
            settings["application_name"] = self.application_name
        try:
            if self.schema:
                bootstrap = await asyncpg.connect(self._dsn)
                try:
                    await bootstrap.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                except asyncpg.UniqueViolationError:
                    pass  # created at the same moment by another process (workers starting together)
                finally:
                    await bootstrap.close()
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=self._min_size, max_size=self._max_size, server_settings=settings
            )
        except (OSError, asyncpg.PostgresConnectionError) as e:
            raise EpixError(
                ErrorCode.STORE_UNAVAILABLE, f"PostgreSQL cannot be reached: {e}", schema=self.schema
            ) from e
        except asyncpg.PostgresError as e:  # unknown database, role refused, no right to create the schema
            raise EpixError(
                ErrorCode.CONFIG_INVALID, f"The PostgreSQL database could not be opened: {e}", schema=self.schema
            ) from e
        async with self._pool.acquire() as conn, conn.transaction():
            # Several gateway processes may start together; one migrates, the others wait and skip.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('epix-store:' || current_schema()))")
            await conn.execute(q.migrations_table(q.POSTGRES))
            applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in q.MIGRATIONS:
                if migration.version in applied:
                    continue
                for statement in q.migration_statements(migration, q.POSTGRES):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version, migration.name, self._clock(),
                )  # fmt: skip

    @property
    def application_name(self) -> str:
        return f"epix-gateway {self.schema}" if self.schema else "epix-gateway"

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise EpixError(ErrorCode.STORE_UNAVAILABLE, "The store is not open (or already closed).")
        return self._pool

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
        columns = list(zip(*(q.message_values(m, _enc) for m in held))) or [()] * len(_ARRAY_TYPES)
        args = (*q.permit_values(permit, _enc), *columns, as_utc(now), actor, claim.actor if claim else None)
        async with self.pool.acquire() as conn:
            if idempotency_key is None and not permit.replaces:
                # A single statement is its own transaction: no BEGIN/COMMIT round trips.
                return await self._accept(conn, permit, held, args)
            if idempotency_key is None:
                async with conn.transaction():
                    return await self._accept(conn, permit, held, args)
            key = (principal or "", idempotency_key)
            async with conn.transaction():
                row = await conn.fetchrow(q.SELECT_IDEMPOTENCY, *key)
                if row is not None:
                    if row[0] != (request_hash or ""):
                        raise idempotency_conflict(idempotency_key)
                    return await self._messages_by_ids(conn, json.loads(row[1]))
                result = await self._accept(conn, permit, held, args)
                ids = json.dumps([m.message_id for m in result])
                if _affected(await conn.execute(q.INSERT_IDEMPOTENCY, *key, request_hash or "", ids, now)) == 0:
                    # Another request took the same key meanwhile; its row is committed and visible now.
                    raced = await conn.fetchrow(q.SELECT_IDEMPOTENCY, *key)
                    if raced[0] != (request_hash or ""):
                        raise idempotency_conflict(idempotency_key)
                return result

    async def _accept(
        self, conn: asyncpg.Connection, permit: PermitRecord, held: list[MessageRecord], args: tuple[Any, ...]
    ) -> list[MessageRecord]:
        if await conn.fetchval(_ACCEPT, *args):
            if permit.replaces:
                await conn.execute(
                    q.MARK_REPLACED, permit.issuer, permit.replaces, permit.number, Direction.OUTBOUND.value
                )
            return held
        version = (permit.issuer, permit.number, permit.version, Direction.OUTBOUND.value)
        if await conn.fetchval(q.SELECT_PERMIT_DIGEST, *version) != permit.digest:
            raise version_conflict(permit.issuer, permit.number, permit.version)
        return [q.message_from_row(r, _dec) for r in await conn.fetch(q.SELECT_VERSION_MESSAGES, *version)]

    async def accept_cancellation(
        self, issuer: str, number: str, messages: Sequence[MessageRecord], *, actor: str
    ) -> list[MessageRecord]:
        now = as_utc(self._clock())
        held = [as_stored(m, due=m.next_attempt_at or now) for m in messages]
        async with self.pool.acquire() as conn, conn.transaction():
            if _affected(await conn.execute(q.MARK_CANCELLED, issuer, number, Direction.OUTBOUND.value)) == 0:
                raise not_cancellable(issuer, number)
            await conn.executemany(q.INSERT_MESSAGE, [q.message_values(m, _enc) for m in held])
            await conn.executemany(q.INSERT_EVENT, [e for m in held for e in q.first_events(m, now, actor, "accepted", None)])
        return held

    @staticmethod
    async def _messages_by_ids(conn: asyncpg.Connection, ids: list[str]) -> list[MessageRecord]:
        rows = await conn.fetch(f"SELECT {q.MESSAGE_COLUMNS} FROM messages WHERE message_id = ANY($1::text[])", ids)
        order = {message_id: i for i, message_id in enumerate(ids)}
        return sorted((q.message_from_row(r, _dec) for r in rows), key=lambda m: order[m.message_id])

    async def idempotency_lookup(self, principal: str, key: str) -> tuple[str, list[str]] | None:
        row = await self.pool.fetchrow(q.SELECT_IDEMPOTENCY, principal, key)
        return None if row is None else (row[0], json.loads(row[1]))

    async def get_permit_versions(self, issuer: str, number: str) -> list[PermitRecord]:
        return [q.permit_from_row(r, _dec) for r in await self.pool.fetch(q.SELECT_PERMIT_VERSIONS, issuer, number)]

    async def set_permit_status(
        self, issuer: str, number: str, status: str, *, replaced_by: str | None = None
    ) -> None:
        if status not in PERMIT_STATUSES:
            raise unknown_permit_status(status)
        if _affected(await self.pool.execute(q.UPDATE_PERMIT_STATUS, issuer, number, status, replaced_by)) == 0:
            raise EpixError(ErrorCode.NOT_FOUND, f"No permit {issuer}/{number} is held.", issuer=issuer, number=number)

    # --- messages ----------------------------------------------------------------------------

    async def get_message(self, message_id: str) -> MessageRecord | None:
        row = await self.pool.fetchrow(q.SELECT_MESSAGE, message_id)
        return None if row is None else q.message_from_row(row, _dec)

    async def record_alias(self, alias: MessageAlias) -> MessageAlias:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(q.INSERT_ALIAS, *q.alias_values(alias, _enc))
            row = await conn.fetchrow(q.SELECT_ALIAS, alias.message_id)
        return q.alias_from_row(row, _dec)

    async def get_alias(self, message_id: str) -> MessageAlias | None:
        row = await self.pool.fetchrow(q.SELECT_ALIAS, message_id)
        return None if row is None else q.alias_from_row(row, _dec)

    async def find_received(self, message_id: str) -> tuple[MessageRecord | None, MessageAlias | None]:
        row = await self.pool.fetchrow(q.SELECT_RECEIVED, message_id)
        n = q.MESSAGE_COLUMN_COUNT
        if row[0] is not None:
            return q.message_from_row(row[:n], _dec), None
        return None, None if row[n] is None else q.alias_from_row(row[n:], _dec)

    async def list_messages(self, f: MessageFilter) -> list[MessageRecord]:
        check_page(f)
        sql, args = q.list_query(
            status=None if f.status is None else f.status.value,
            direction=None if f.direction is None else f.direction.value,
            sender=f.sender, receiver=f.receiver, issuer=f.issuer, number=f.number,
            before=_enc(f.before), before_id=f.before_id, limit=f.limit,
        )  # fmt: skip
        return [q.message_from_row(r, _dec) for r in await self.pool.fetch(sql, *args)]

    async def message_events(self, message_id: str) -> list[MessageEvent]:
        return [q.event_from_row(r, _dec) for r in await self.pool.fetch(q.SELECT_EVENTS, message_id)]

    async def messages_for_permit(self, issuer: str, number: str) -> list[MessageRecord]:
        return [q.message_from_row(r, _dec) for r in await self.pool.fetch(q.SELECT_PERMIT_MESSAGES, issuer, number)]

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
        sql, names = _transition_sql(new, error_code is not None, receipt is not None)
        values = {
            "message_id": message_id,
            "increment": 1 if increment_attempts else 0,
            "now": as_utc(now),
            "next_attempt_at": as_utc(next_attempt_at or now),
            "error_code": error_code,
            "detail": detail,
            "receipt": receipt,
            "actor": actor,
        }
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(sql, *(values[n] for n in names))
            if row is not None:
                return q.message_from_row(row, _dec)
            current = await conn.fetchval(q.SELECT_STATUS, message_id)
        if current is None:
            raise not_found(message_id)
        raise refused_transition(message_id, MessageStatus(current), new)

    # --- the embedded queue ------------------------------------------------------------------

    async def claim_due(
        self, *, limit: int, lease_s: float, now: datetime, actor: str, receiver: str | None = None
    ) -> list[MessageRecord]:
        if limit < 1:
            return []
        now = as_utc(now)
        args: tuple[Any, ...] = (now, limit, now + timedelta(seconds=lease_s), actor, LEASE_EXPIRED_DETAIL)
        if receiver is None:
            rows = await self.pool.fetch(_CLAIM_ANY, *args)
        else:
            rows = await self.pool.fetch(_CLAIM_FOR_RECEIVER, *args, receiver)
        return [q.message_from_row(r, _dec) for r in rows]

    async def next_due_at(self) -> datetime | None:
        return await self.pool.fetchval(q.SELECT_NEXT_DUE)

    async def unpublished(self, *, limit: int) -> list[Unpublished]:
        rows = await self.pool.fetch(q.SELECT_UNPUBLISHED, limit)
        return [Unpublished(r[0], r[1], r[2], r[3]) for r in rows]

    async def mark_published(self, message_id: str, seq: int) -> None:
        await self.pool.execute(q.MARK_PUBLISHED, message_id, seq)

    # --- inbound -----------------------------------------------------------------------------

    async def store_inbound(
        self, permit: PermitRecord | None, message: MessageRecord, *, actor: str
    ) -> tuple[bool, MessageRecord]:
        check_inbound(permit, message)
        held = as_stored(message, due=None)
        async with self.pool.acquire() as conn:
            if (row := await conn.fetchrow(q.SELECT_MESSAGE, message.message_id)) is not None:
                return False, q.message_from_row(row, _dec)
            try:
                async with conn.transaction():
                    original = await self._inbound_duplicate(conn, permit, held)
                    if original is not None:
                        return False, original
                    await conn.execute(q.INSERT_MESSAGE, *q.message_values(held, _enc))
                    await conn.execute(
                        q.INSERT_EVENT, held.message_id, 1, as_utc(self._clock()), MessageStatus.RECEIVED.value,
                        actor, None, None,
                    )  # fmt: skip
                    for sql, effect_args in q.inbound_effects(permit, held):
                        await conn.execute(sql, *effect_args)
                    return True, held
            except asyncpg.UniqueViolationError:
                # The same message id arrived twice at once and the other copy committed first.
                row = await conn.fetchrow(q.SELECT_MESSAGE, message.message_id)
                return False, q.message_from_row(row, _dec)

    @staticmethod
    async def _inbound_duplicate(
        conn: asyncpg.Connection, permit: PermitRecord | None, message: MessageRecord
    ) -> MessageRecord | None:
        """The message already held that carried this content under another id, if any."""
        if permit is not None:
            if _affected(await conn.execute(q.INSERT_PERMIT, *q.permit_values(permit, _enc))) == 1:
                return None
            key = (permit.issuer, permit.number, permit.version)
            if await conn.fetchval(q.SELECT_PERMIT_DIGEST, *key, Direction.INBOUND.value) != permit.digest:
                raise version_conflict(*key)
            row = await conn.fetchrow(q.SELECT_FIRST_INBOUND_OF_VERSION, *key)
        elif message.payload_digest is not None:
            row = await conn.fetchrow(
                q.SELECT_SAME_INBOUND, message.issuer, message.number, message.version, message.action.value,
                message.payload_digest,
            )  # fmt: skip
        else:
            return None
        return None if row is None else q.message_from_row(row, _dec)

    async def inbox(
        self, receiver: str, *, limit: int = 100, after: tuple[datetime, str] | None = None
    ) -> list[MessageRecord]:
        check_page(MessageFilter(limit=limit))
        if after is None:
            rows = await self.pool.fetch(q.SELECT_INBOX, receiver, limit)
        else:
            rows = await self.pool.fetch(q.SELECT_INBOX_AFTER, receiver, _enc(after[0]), after[1], limit)
        return [q.message_from_row(r, _dec) for r in rows]

    async def ack_inbox(self, message_id: str, *, actor: str) -> MessageRecord:
        return await ack_inbox_via(self, message_id, actor=actor)

    # --- hub: relaying, pull, delivery reports -----------------------------------------------

    async def accept_relay(
        self, message: MessageRecord, *, actor: str, detail: str, claim: Claim | None = None
    ) -> tuple[bool, MessageRecord]:
        check_relay(message)
        [held] = claimed_at_once([as_stored(message, due=message.next_attempt_at)], _pushed(message, claim))
        async with self.pool.acquire() as conn:
            if (row := await conn.fetchrow(q.SELECT_MESSAGE, message.message_id)) is not None:
                return False, q.message_from_row(row, _dec)
            try:
                async with conn.transaction():
                    now = as_utc(self._clock())
                    await conn.execute(q.INSERT_MESSAGE, *q.message_values(held, _enc))
                    await conn.executemany(q.INSERT_EVENT, q.first_events(held, now, actor, detail, claim))
                    return True, held
            except asyncpg.UniqueViolationError:
                row = await conn.fetchrow(q.SELECT_MESSAGE, message.message_id)
                return False, q.message_from_row(row, _dec)

    async def held_for_pull(self, receiver: str, *, limit: int = 100) -> list[MessageRecord]:
        check_page(MessageFilter(limit=limit))
        return [q.message_from_row(r, _dec) for r in await self.pool.fetch(q.SELECT_HELD_FOR_PULL, receiver, limit)]

    async def record_event(
        self, message_id: str, *, actor: str, detail: str, error_code: str | None = None
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._record_event(conn, message_id, actor, detail, error_code)

    async def _record_event(
        self, conn: asyncpg.Connection, message_id: str, actor: str, detail: str, error_code: str | None
    ) -> None:
        now = as_utc(self._clock())
        row = await conn.fetchrow(q.BUMP_SEQ, message_id, now)
        if row is None:
            raise not_found(message_id)
        await conn.execute(q.INSERT_EVENT, message_id, row[0], now, row[1], actor, detail, error_code)

    async def save_delivery_report(self, report: DeliveryReportRecord, *, actor: str) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            held = await conn.fetchrow(q.SELECT_REPORT + " FOR UPDATE", report.message_id)
            await conn.execute(
                q.UPSERT_REPORT, report.message_id, report.status, report.reporter, report.detail, report.report,
                as_utc(report.updated_at),
            )  # fmt: skip
            if held is not None and held[1] == report.status:
                return False
            detail = f"{report.reporter} reports {report.status}" + (f": {report.detail}" if report.detail else "")
            await self._record_event(conn, report.message_id, actor, detail, None)
            return True

    async def delivery_report(self, message_id: str) -> DeliveryReportRecord | None:
        r = await self.pool.fetchrow(q.SELECT_REPORT, message_id)
        if r is None:
            return None
        return DeliveryReportRecord(
            message_id=r[0], status=r[1], reporter=r[2], detail=r[3],
            report=None if r[4] is None else bytes(r[4]), updated_at=r[5],
        )  # fmt: skip

    async def awaiting_delivery_report(self, *, limit: int = 100) -> list[MessageRecord]:
        check_page(MessageFilter(limit=limit))
        return [q.message_from_row(r, _dec) for r in await self.pool.fetch(q.SELECT_AWAITING_REPORT, limit)]

    # --- operations --------------------------------------------------------------------------

    async def counts_by_status(self) -> dict[str, int]:
        return {r[0]: r[1] for r in await self.pool.fetch(q.SELECT_COUNTS)}

    def unavailable(self, error: BaseException) -> bool:
        # Connection lost or refused (class 08), the server shutting down or starting up (57P01-03),
        # out of connections (53300), or the socket itself.
        return isinstance(
            error,
            (
                OSError,
                asyncio.TimeoutError,
                asyncpg.PostgresConnectionError,
                asyncpg.exceptions.AdminShutdownError,
                asyncpg.exceptions.CrashShutdownError,
                asyncpg.exceptions.CannotConnectNowError,
                asyncpg.exceptions.TooManyConnectionsError,
                asyncpg.exceptions.ConnectionDoesNotExistError,
            ),
        ) or _dead_connection(error)

    async def ping(self) -> None:
        try:
            await self.pool.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise EpixError(ErrorCode.STORE_UNAVAILABLE, f"PostgreSQL does not answer: {e}") from e


def _dead_connection(error: BaseException) -> bool:
    """asyncpg's own words for a connection the server has already closed: "connection is closed"
    (InterfaceError), or, when the server's termination notice arrived while the connection sat in
    the pool, "cannot switch to state N; another operation (M) is in progress" (InternalClientError)
    on the next statement; both seen against the real server (tests/e2e/test_crash.py). Every store
    call acquires a connection of its own, so no statement of ours is ever in progress beside another."""
    text = str(error)
    if isinstance(error, asyncpg.InterfaceError):
        return "connection is closed" in text or "the underlying connection is closed" in text
    return isinstance(error, asyncpg.exceptions.InternalClientError) and "another operation" in text
