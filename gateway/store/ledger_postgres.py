"""The customs ledger on PostgreSQL: one transaction per call, the permit's balance rows locked
``FOR UPDATE`` (in item order, so two write-offs never deadlock) before anything is decided.

Under READ COMMITTED every statement after the lock sees what the previous holder committed, so
the declaration's earlier lines and the balances read here are the latest ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

import asyncpg

from domain import ledger as rules
from domain.errors import EpixError, ErrorCode
from domain.messages import MessageStatus

from . import ledger as lq
from . import schema as q
from .base import MessageRecord, PermitRecord, as_stored, as_utc, check_inbound
from .ledger import (
    CustomsLedger,
    PermitCheck,
    VerificationFacts,
    VerificationRecord,
    WriteOffOutcome,
    WriteOffRecord,
    WriteOffRequest,
)

_LOCK_BALANCES = lq.SELECT_BALANCES + " FOR UPDATE"
# FOR SHARE: a status change being committed on the record is waited for and then seen.
_SAVE_CHECK = lq.SAVE_CHECK.format(lock="FOR SHARE OF p")


def _dec(value):
    return value  # asyncpg returns timestamptz as aware UTC datetimes


def _ts(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


class PostgresLedger(CustomsLedger):
    async def write_off(self, request: WriteOffRequest, message: MessageRecord | None, *, actor: str) -> WriteOffOutcome:
        message = _queued(message)
        now = as_utc(self._clock())
        async with self.pool.acquire() as conn, conn.transaction():
            before = await _lock_balances(conn, request.issuer, request.number, request.permitted, now)
            rows = await _declaration(conn, request.declaration, request.issuer, request.number)
            lq.refuse_foreign(rows, request)
            held = lq.held_by_line(rows)
            plan = rules.plan_write_off(request.declaration, request.lines, before, held)
            if plan.replayed:
                return WriteOffOutcome(before, (), plan.repeated, None)
            units = {i: unit for i, (_, unit) in request.permitted.items()}
            message_id = message.message_id if message else None
            await conn.executemany(
                lq.INSERT_WRITE_OFF,
                [
                    lq.write_off_values(request, line, units[line.item_id], origin="customs", message_id=message_id, now=now, ts=_ts, actor=actor)
                    for line in plan.new
                ],
            )
            await _save_balances(conn, request.issuer, request.number, before, plan.balances, now)
            if message is not None:
                await _insert_outbound(conn, message, actor, now)
        return WriteOffOutcome(plan.balances, plan.new, plan.repeated, message)

    async def reverse_write_off(
        self,
        issuer: str,
        number: str,
        declaration: str,
        permitted: Mapping[str, tuple[Decimal, str]],
        message: MessageRecord | None,
        *,
        actor: str,
        at: datetime,
    ) -> WriteOffOutcome:
        message = _queued(message)
        now = as_utc(at)
        async with self.pool.acquire() as conn, conn.transaction():
            before = await _lock_balances(conn, issuer, number, permitted, now)
            rows = await _declaration(conn, declaration, issuer, number)
            if not rows:
                raise EpixError(
                    ErrorCode.NOT_FOUND,
                    f"Declaration {declaration} wrote nothing off permit {issuer}/{number}.",
                    declaration=declaration,
                )
            lq.refuse_endorsed(rows, declaration, issuer, number)
            active = [r for r in rows if r.reversed_at is None]
            if not active:
                return WriteOffOutcome(before, (), tuple(rules.DrawLine(r.item_id, r.quantity, r.unit) for r in rows), None)
            await conn.execute(lq.REVERSE_DECLARATION, declaration, issuer, number, now)
            after = rules.give_back(before, {r.item_id: r.quantity for r in active})
            await _save_balances(conn, issuer, number, before, after, now)
            if message is not None:
                await _insert_outbound(conn, message, actor, now)
        return WriteOffOutcome(after, tuple(rules.DrawLine(r.item_id, r.quantity, r.unit) for r in active), (), message)

    async def record_endorsement(
        self, request: WriteOffRequest, message: MessageRecord, *, reversal: bool, actor: str
    ) -> tuple[bool, MessageRecord]:
        check_inbound(None, message)
        held_message = as_stored(message, due=None)
        now = as_utc(self._clock())
        async with self.pool.acquire() as conn:
            if (row := await conn.fetchrow(q.SELECT_MESSAGE, message.message_id)) is not None:
                return False, q.message_from_row(row, _dec)
            try:
                async with conn.transaction():
                    original = await self._inbound_duplicate(conn, None, held_message)
                    if original is not None:
                        return False, original
                    await conn.execute(q.INSERT_MESSAGE, *q.message_values(held_message, _ts))
                    await conn.execute(
                        q.INSERT_EVENT, message.message_id, 1, now, MessageStatus.RECEIVED.value, actor, None, None
                    )
                    await _apply_endorsement(conn, request, message.message_id, reversal, actor, now)
                    return True, held_message
            except asyncpg.UniqueViolationError:
                row = await conn.fetchrow(q.SELECT_MESSAGE, message.message_id)
                if row is None:
                    raise
                return False, q.message_from_row(row, _dec)

    async def used_quantities(self, issuer: str, number: str) -> dict[str, Decimal]:
        return {r[0]: Decimal(r[1]) for r in await self.pool.fetch(lq.SELECT_USED, issuer, number)}

    async def list_write_offs(self, issuer: str, number: str) -> list[WriteOffRecord]:
        return [lq.write_off_from_row(r, _dec) for r in await self.pool.fetch(lq.SELECT_WRITE_OFFS, issuer, number)]

    async def exporter_has_shipments(self, exporter: str) -> bool:
        return await self.pool.fetchval(lq.SELECT_EXPORTER, exporter) is not None

    async def record_verifications(self, records: Sequence[VerificationRecord]) -> None:
        if records:
            await self.pool.executemany(lq.INSERT_VERIFICATION, [lq.verification_values(v, _ts) for v in records])

    async def list_verifications(self, issuer: str, number: str, *, limit: int = 100) -> list[VerificationRecord]:
        rows = await self.pool.fetch(lq.SELECT_VERIFICATIONS, issuer, number, limit)
        return [lq.verification_from_row(r, _dec) for r in rows]

    async def verification_facts(self, issuer: str, number: str) -> VerificationFacts | None:
        return lq.facts_from_row(await self.pool.fetchrow(lq.SELECT_VERIFICATION_FACTS_POSTGRES, issuer, number), _dec)

    async def save_permit_checks(self, checks: Sequence[tuple[PermitCheck, bytes, bytes]]) -> int:
        kept = 0
        async with self.pool.acquire() as conn, conn.transaction():
            for check, xml, js in checks:
                values = lq.check_values(check, _ts, xml, js)
                if (await conn.execute(_SAVE_CHECK, *values)) != "INSERT 0 0":
                    kept += 1
                    await conn.execute(lq.DEQUEUE_CHECK, *values[:4])
        return kept

    async def permit_checks_due(self, *, limit: int) -> list[tuple[str, str, int, str]]:
        return [tuple(r) for r in await self.pool.fetch(lq.SELECT_CHECKS_DUE, limit)]

    async def permit_check_done(self, keys: Sequence[tuple[str, str, int, str]]) -> None:
        if keys:
            await self.pool.executemany(lq.DEQUEUE_CHECK, [tuple(k) for k in keys])

    async def recheck_permits(self, issuer: str | None = None) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            return await _recheck(conn, issuer)

    async def retrust(self, marks: Mapping[str, str], *, now: datetime) -> dict[str, int]:
        queued = {}
        async with self.pool.acquire() as conn, conn.transaction():
            # One start at a time compares and rechecks: another replica starting on the same
            # database waits here, then finds the marks already in step.
            await conn.execute("LOCK TABLE trust_marks IN EXCLUSIVE MODE")
            held = {r["party"]: r["fingerprint"] for r in await conn.fetch(lq.SELECT_TRUST_MARKS)}
            for party, mark in lq.trust_changes(marks, held):
                queued[party] = await _recheck(conn, party)
                if mark is None:
                    await conn.execute(lq.DELETE_TRUST_MARK, party)
                else:
                    await conn.execute(lq.SAVE_TRUST_MARK, party, mark, as_utc(now))
        return queued

    async def permits_created_between(self, start: datetime, end: datetime) -> list[PermitRecord]:
        rows = await self.pool.fetch(lq.permits_between_sql(q.PERMIT_COLUMNS), as_utc(start), as_utc(end))
        return [q.permit_from_row(r, _dec) for r in rows]

    async def feed_pending(self, *, limit: int, not_before: datetime | None = None) -> list[MessageRecord]:
        if not_before is None:
            rows = await self.pool.fetch(_FEED_PENDING, limit)
        else:
            rows = await self.pool.fetch(_FEED_PENDING_SINCE, limit, as_utc(not_before))
        return [q.message_from_row(r, _dec) for r in rows]

    async def feed_mark_sent(
        self, message_id: str, *, at: datetime, detail: str, holder: str | None = None, until: datetime | None = None
    ) -> bool:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(lq.FEED_MARK, message_id, as_utc(at), detail)
            await conn.execute(lq.FEED_DEQUEUE, message_id)
            if holder is None:
                return True
            return await conn.execute(lq.FEED_KEEP_TURN, holder, as_utc(until or at)) != "UPDATE 0"

    async def feed_backlog(self, *, before: datetime, not_before: datetime | None = None) -> tuple[int, datetime | None]:
        if not_before is None:
            row = await self.pool.fetchrow(lq.FEED_BACKLOG, as_utc(before))
        else:
            row = await self.pool.fetchrow(lq.FEED_BACKLOG_SINCE, as_utc(before), as_utc(not_before))
        return row[0], row[1]

    async def feed_take_turn(self, holder: str, *, now: datetime, until: datetime) -> bool:
        # Two processes taking it at once: the second waits for the first's row lock, then finds
        # the turn taken (READ COMMITTED evaluates the WHERE again on the row as committed).
        return await self.pool.execute(lq.FEED_TAKE_TURN, holder, as_utc(now), as_utc(until)) != "UPDATE 0"

    async def feed_end_turn(self, holder: str) -> None:
        await self.pool.execute(lq.FEED_END_TURN, holder)


_FEED_PENDING = lq.feed_pending_sql(q.MESSAGE_COLUMNS, bounded=False)
_FEED_PENDING_SINCE = lq.feed_pending_sql(q.MESSAGE_COLUMNS, bounded=True)


def _queued(message: MessageRecord | None) -> MessageRecord | None:
    if message is None:
        return None
    if message.status is not MessageStatus.SEND_ENQUEUED:
        raise EpixError(ErrorCode.CONFLICT, f"Endorsement message {message.message_id} must be SEND_ENQUEUED.")
    return as_stored(message, due=message.next_attempt_at or message.created_at)


async def _lock_balances(conn, issuer: str, number: str, permitted: Mapping[str, tuple[Decimal, str]], now: datetime):
    await conn.executemany(
        lq.INSERT_BALANCE, [(issuer, number, i, unit, str(qty), now) for i, (qty, unit) in sorted(permitted.items())]
    )
    rows = await conn.fetch(_LOCK_BALANCES, issuer, number)
    return lq.balances_from_rows(rows, permitted)


async def _save_balances(conn, issuer: str, number: str, before, after, now: datetime) -> None:
    old = {b.item_id: b.used for b in before}
    changed = [(issuer, number, b.item_id, str(b.used), now) for b in after if b.used != old.get(b.item_id)]
    if changed:
        await conn.executemany(lq.UPDATE_BALANCE, changed)


async def _declaration(conn, declaration: str, issuer: str, number: str) -> list[WriteOffRecord]:
    return [lq.write_off_from_row(r, _dec) for r in await conn.fetch(lq.SELECT_DECLARATION, declaration, issuer, number)]


async def _insert_outbound(conn, message: MessageRecord, actor: str, now: datetime) -> None:
    await conn.execute(q.INSERT_MESSAGE, *q.message_values(message, _ts))
    await conn.execute(q.INSERT_EVENT, message.message_id, 1, now, MessageStatus.SEND_ENQUEUED.value, actor, "accepted", None)


async def _apply_endorsement(conn, request: WriteOffRequest, message_id: str, reversal: bool, actor: str, now: datetime) -> None:
    before = await _lock_balances(conn, request.issuer, request.number, request.permitted, now)
    held = await _declaration(conn, request.declaration, request.issuer, request.number)
    lq.refuse_other_reporter(held, request, actor)
    if reversal:
        active = [r for r in held if r.reversed_at is None]
        await conn.execute(lq.REVERSE_DECLARATION, request.declaration, request.issuer, request.number, now)
        after = rules.give_back(before, {r.item_id: r.quantity for r in active})
    else:
        known = {r.item_id for r in held}
        fresh = [line for line in request.lines if line.item_id not in known]
        units = {i: unit for i, (_, unit) in request.permitted.items()}
        if fresh:
            await conn.executemany(
                lq.INSERT_WRITE_OFF,
                [
                    lq.write_off_values(
                        request, line, units.get(line.item_id, line.unit or ""), origin="endorsement",
                        message_id=message_id, now=now, ts=_ts, actor=actor,
                    )  # fmt: skip
                    for line in fresh
                ],
            )
        after = rules.record_actual(before, fresh)
    await _save_balances(conn, request.issuer, request.number, before, after, now)


async def _recheck(conn: asyncpg.Connection, issuer: str | None) -> int:
    """``recheck_permits`` inside the caller's transaction."""
    await conn.execute(lq.RECHECK_DROP, issuer)
    await conn.execute(lq.RECHECK_QUEUE, issuer)
    return await conn.fetchval(lq.RECHECK_COUNT, issuer)
