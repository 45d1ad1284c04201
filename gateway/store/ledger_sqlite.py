"""The customs ledger on SQLite: every call is one function on the writer (or reader) thread.

The single writer connection with ``BEGIN IMMEDIATE`` serialises write-offs, so reading the
balances, deciding and writing happen with no other writer in between, in this process or any
other on the same file.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from domain import ledger as rules
from domain.errors import EpixError, ErrorCode
from domain.messages import MessageStatus

from . import ledger as lq
from . import schema as q
from . import sqlite as s
from .base import MessageRecord, PermitRecord, as_stored, check_inbound
from .ledger import (
    CustomsLedger,
    PermitCheck,
    VerificationFacts,
    VerificationRecord,
    WriteOffOutcome,
    WriteOffRecord,
    WriteOffRequest,
)


def _sql(statement: str) -> str:
    return q.for_sqlite(statement)


class SqliteLedger(CustomsLedger):
    async def write_off(self, request: WriteOffRequest, message: MessageRecord | None, *, actor: str) -> WriteOffOutcome:
        return await self._write(_write_off, request, _queued(message), actor, s._enc(self._clock()))

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
        return await self._write(
            _reverse, issuer, number, declaration, dict(permitted), _queued(message), actor, s._enc(at)
        )

    async def record_endorsement(
        self, request: WriteOffRequest, message: MessageRecord, *, reversal: bool, actor: str
    ) -> tuple[bool, MessageRecord]:
        check_inbound(None, message)
        held = as_stored(message, due=None)
        return await self._write(_record_endorsement, request, held, reversal, actor, s._enc(self._clock()))

    async def used_quantities(self, issuer: str, number: str) -> dict[str, Decimal]:
        rows = await self._read(s._fetchall, _sql(lq.SELECT_USED), (issuer, number))
        return {r[0]: Decimal(r[1]) for r in rows}

    async def list_write_offs(self, issuer: str, number: str) -> list[WriteOffRecord]:
        rows = await self._read(s._fetchall, _sql(lq.SELECT_WRITE_OFFS), (issuer, number))
        return [lq.write_off_from_row(r, s._dec) for r in rows]

    async def exporter_has_shipments(self, exporter: str) -> bool:
        return await self._read(s._fetchone, _sql(lq.SELECT_EXPORTER), (exporter,)) is not None

    async def record_verifications(self, records: Sequence[VerificationRecord]) -> None:
        if records:
            rows = json.dumps(
                [(v.id, v.issuer, v.number, v.verdict, v.reasons, v.principal, v.office, int(v.stamp_given), s._enc(v.at)) for v in records]
            )
            await self._write_off_loop(s._rowcount, _INSERT_VERIFICATIONS, (rows,))

    async def list_verifications(self, issuer: str, number: str, *, limit: int = 100) -> list[VerificationRecord]:
        rows = await self._read(s._fetchall, _sql(lq.SELECT_VERIFICATIONS), (issuer, number, limit))
        return [lq.verification_from_row(r, s._dec) for r in rows]

    async def verification_facts(self, issuer: str, number: str) -> VerificationFacts | None:
        # A bounded point read on the event loop's thread (see SqliteStore._read_now).
        return lq.facts_from_row(self._read_now(s._fetchone, _SELECT_FACTS, (issuer, number)), s._dec)

    async def save_permit_checks(self, checks: Sequence[tuple[PermitCheck, bytes, bytes]]) -> int:
        if not checks:
            return 0
        return await self._write(_save_checks, [lq.check_values(c, s._enc, xml, js) for c, xml, js in checks])

    async def permit_checks_due(self, *, limit: int) -> list[tuple[str, str, int, str]]:
        return [tuple(r) for r in await self._read(s._fetchall, _sql(lq.SELECT_CHECKS_DUE), (limit,))]

    async def permit_check_done(self, keys: Sequence[tuple[str, str, int, str]]) -> None:
        if keys:
            await self._write(_executemany, _sql(lq.DEQUEUE_CHECK), [tuple(k) for k in keys])

    async def recheck_permits(self, issuer: str | None = None) -> int:
        return await self._write(_recheck, issuer)

    async def retrust(self, marks: Mapping[str, str], *, now: datetime) -> dict[str, int]:
        return await self._write(_retrust, dict(marks), s._enc(now))

    async def permits_created_between(self, start: datetime, end: datetime) -> list[PermitRecord]:
        rows = await self._read(s._fetchall, _sql(lq.permits_between_sql(q.PERMIT_COLUMNS)), (s._enc(start), s._enc(end)))
        return [q.permit_from_row(r, s._dec) for r in rows]

    async def feed_pending(self, *, limit: int, not_before: datetime | None = None) -> list[MessageRecord]:
        if not_before is None:
            rows = await self._read(s._fetchall, _FEED_PENDING, (limit,))
        else:
            rows = await self._read(s._fetchall, _FEED_PENDING_SINCE, (limit, s._enc(not_before)))
        return [q.message_from_row(r, s._dec) for r in rows]

    async def feed_mark_sent(
        self, message_id: str, *, at: datetime, detail: str, holder: str | None = None, until: datetime | None = None
    ) -> bool:
        return await self._write(_feed_mark, message_id, s._enc(at), detail, holder, s._enc(until or at))

    async def feed_backlog(self, *, before: datetime, not_before: datetime | None = None) -> tuple[int, datetime | None]:
        if not_before is None:
            row = await self._read(s._fetchone, _sql(lq.FEED_BACKLOG), (s._enc(before),))
        else:
            row = await self._read(s._fetchone, _sql(lq.FEED_BACKLOG_SINCE), (s._enc(before), s._enc(not_before)))
        return row[0], s._dec(row[1])

    async def feed_take_turn(self, holder: str, *, now: datetime, until: datetime) -> bool:
        # BEGIN IMMEDIATE: one process at a time reads and takes the turn, however many share the file.
        return bool(await self._write(s._rowcount, _sql(lq.FEED_TAKE_TURN), (holder, s._enc(now), s._enc(until))))

    async def feed_end_turn(self, holder: str) -> None:
        await self._write(s._rowcount, _sql(lq.FEED_END_TURN), (holder,))


def _queued(message: MessageRecord | None) -> MessageRecord | None:
    if message is None:
        return None
    if message.status is not MessageStatus.SEND_ENQUEUED:
        raise EpixError(ErrorCode.CONFLICT, f"Endorsement message {message.message_id} must be SEND_ENQUEUED.")
    return as_stored(message, due=message.next_attempt_at or message.created_at)


# --- on the writer thread ------------------------------------------------------------------------


def _recheck(conn: sqlite3.Connection, issuer: str | None) -> int:
    for statement in (lq.RECHECK_DROP, lq.RECHECK_QUEUE):
        conn.execute(_sql(statement), (issuer,))
    return conn.execute(_sql(lq.RECHECK_COUNT), (issuer,)).fetchone()[0]


def _retrust(conn: sqlite3.Connection, marks: dict[str, str], now: str) -> dict[str, int]:
    queued = {}
    for party, mark in lq.trust_changes(marks, dict(conn.execute(_sql(lq.SELECT_TRUST_MARKS)).fetchall())):
        queued[party] = _recheck(conn, party)
        if mark is None:
            conn.execute(_sql(lq.DELETE_TRUST_MARK), (party,))
        else:
            conn.execute(_sql(lq.SAVE_TRUST_MARK), (party, mark, now))
    return queued


def _executemany(conn: sqlite3.Connection, sql: str, rows: list[tuple]) -> None:
    conn.executemany(sql, rows)


_SAVE_CHECK = _sql(lq.SAVE_CHECK.format(lock=""))
_SELECT_FACTS = _sql(lq.SELECT_VERIFICATION_FACTS_SQLITE)
# A batch of verifications in ONE statement (rows as a JSON array; reasons, an array, kept as JSON
# text by ->): executemany would step once per row, and each step hands the GIL back and waits
# for it again while the event loop is busy. Alone on one thread executemany is faster (31 against
# 75 us a row: ->> parses the row's JSON again for each column), but in the gateway it lost
# (bench customs, 10,000 permits, alternating: 0.35 of bare against 0.36-0.43).
_INSERT_VERIFICATIONS = f"""
    INSERT INTO verifications ({lq.VERIFICATION_COLUMNS})
    SELECT {", ".join(f"value {'->' if i == 4 else '->>'} {i}" for i in range(9))} FROM json_each(?1)
"""


_FEED_PENDING = _sql(lq.feed_pending_sql(q.MESSAGE_COLUMNS, bounded=False))
_FEED_PENDING_SINCE = _sql(lq.feed_pending_sql(q.MESSAGE_COLUMNS, bounded=True))


def _feed_mark(conn: sqlite3.Connection, message_id: str, at: str, detail: str, holder: str | None, until: str) -> bool:
    conn.execute(_sql(lq.FEED_MARK), (message_id, at, detail))
    conn.execute(_sql(lq.FEED_DEQUEUE), (message_id,))
    return holder is None or bool(conn.execute(_sql(lq.FEED_KEEP_TURN), (holder, until)).rowcount)


def _save_checks(conn: sqlite3.Connection, rows: list[tuple]) -> int:
    kept = 0
    for row in rows:
        if conn.execute(_SAVE_CHECK, row).rowcount:
            kept += 1
            conn.execute(_sql(lq.DEQUEUE_CHECK), row[:4])
    return kept


def _balances(conn: sqlite3.Connection, issuer: str, number: str, permitted: Mapping[str, tuple[Decimal, str]], now: str):
    conn.executemany(
        _sql(lq.INSERT_BALANCE), [(issuer, number, i, unit, str(qty), now) for i, (qty, unit) in permitted.items()]
    )
    rows = conn.execute(_sql(lq.SELECT_BALANCES), (issuer, number)).fetchall()
    return lq.balances_from_rows(rows, permitted)


def _save_balances(conn: sqlite3.Connection, issuer: str, number: str, before, after, now: str) -> None:
    old = {b.item_id: b.used for b in before}
    conn.executemany(
        _sql(lq.UPDATE_BALANCE),
        [(issuer, number, b.item_id, str(b.used), now) for b in after if b.used != old.get(b.item_id)],
    )


def _declaration(conn: sqlite3.Connection, declaration: str, issuer: str, number: str) -> list[WriteOffRecord]:
    rows = conn.execute(_sql(lq.SELECT_DECLARATION), (declaration, issuer, number)).fetchall()
    return [lq.write_off_from_row(r, s._dec) for r in rows]


def _write_off(
    conn: sqlite3.Connection, request: WriteOffRequest, message: MessageRecord | None, actor: str, now: str
) -> WriteOffOutcome:
    before = _balances(conn, request.issuer, request.number, request.permitted, now)
    rows = _declaration(conn, request.declaration, request.issuer, request.number)
    lq.refuse_foreign(rows, request)
    held = lq.held_by_line(rows)
    plan = rules.plan_write_off(request.declaration, request.lines, before, held)
    if plan.replayed:
        return WriteOffOutcome(before, (), plan.repeated, None)
    units = {i: unit for i, (_, unit) in request.permitted.items()}
    message_id = message.message_id if message else None
    conn.executemany(
        _sql(lq.INSERT_WRITE_OFF),
        [
            lq.write_off_values(request, line, units[line.item_id], origin="customs", message_id=message_id, now=now, ts=s._enc, actor=actor)
            for line in plan.new
        ],
    )
    _save_balances(conn, request.issuer, request.number, before, plan.balances, now)
    if message is not None:
        s._insert_outbound(conn, [message], actor, now)
    return WriteOffOutcome(plan.balances, plan.new, plan.repeated, message)


def _reverse(
    conn: sqlite3.Connection,
    issuer: str,
    number: str,
    declaration: str,
    permitted: dict[str, tuple[Decimal, str]],
    message: MessageRecord | None,
    actor: str,
    now: str,
) -> WriteOffOutcome:
    rows = _declaration(conn, declaration, issuer, number)
    if not rows:
        raise _unknown_declaration(issuer, number, declaration)
    lq.refuse_endorsed(rows, declaration, issuer, number)
    before = _balances(conn, issuer, number, permitted, now)
    active = [r for r in rows if r.reversed_at is None]
    if not active:
        return WriteOffOutcome(before, (), tuple(rules.DrawLine(r.item_id, r.quantity, r.unit) for r in rows), None)
    conn.execute(_sql(lq.REVERSE_DECLARATION), (declaration, issuer, number, now))
    after = rules.give_back(before, {r.item_id: r.quantity for r in active})
    _save_balances(conn, issuer, number, before, after, now)
    if message is not None:
        s._insert_outbound(conn, [message], actor, now)
    return WriteOffOutcome(after, tuple(rules.DrawLine(r.item_id, r.quantity, r.unit) for r in active), (), message)


def _record_endorsement(
    conn: sqlite3.Connection, request: WriteOffRequest, message: MessageRecord, reversal: bool, actor: str, now: str
) -> tuple[bool, MessageRecord]:
    is_new, stored = s._store_inbound(conn, None, message, actor, now)
    if not is_new:
        return False, stored
    before = _balances(conn, request.issuer, request.number, request.permitted, now)
    held = _declaration(conn, request.declaration, request.issuer, request.number)
    lq.refuse_other_reporter(held, request, actor)
    if reversal:
        active = [r for r in held if r.reversed_at is None]
        conn.execute(_sql(lq.REVERSE_DECLARATION), (request.declaration, request.issuer, request.number, now))
        after = rules.give_back(before, {r.item_id: r.quantity for r in active})
    else:
        known = {r.item_id for r in held}
        fresh = [line for line in request.lines if line.item_id not in known]
        units = {i: unit for i, (_, unit) in request.permitted.items()}
        conn.executemany(
            _sql(lq.INSERT_WRITE_OFF),
            [
                lq.write_off_values(
                    request, line, units.get(line.item_id, line.unit or ""), origin="endorsement",
                    message_id=message.message_id, now=now, ts=s._enc, actor=actor,
                )  # fmt: skip
                for line in fresh
            ],
        )
        after = rules.record_actual(before, fresh)
    _save_balances(conn, request.issuer, request.number, before, after, now)
    return True, stored


def _unknown_declaration(issuer: str, number: str, declaration: str) -> EpixError:
    return EpixError(
        ErrorCode.NOT_FOUND,
        f"Declaration {declaration} wrote nothing off permit {issuer}/{number}.",
        declaration=declaration,
    )
