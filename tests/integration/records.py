"""Records and helpers shared by the store tests (fixtures are in conftest.py)."""

from __future__ import annotations

import hashlib
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from domain.messages import Action, Direction, MessageStatus
from gateway.store import MessageRecord, PermitRecord, Store
from gateway.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 23, 14, 0, 0, tzinfo=UTC)


class Clock:
    """The store's idea of now, moved by the test (claim_due takes ``now`` explicitly)."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


# --- records -------------------------------------------------------------------------------------


def permit(
    number: str = "CH-2026-0001",
    *,
    version: int = 1,
    issuer: str = "CH",
    direction: Direction = Direction.OUTBOUND,
    xml: bytes | None = None,
    sender: str | None = None,
) -> PermitRecord:
    signed = xml if xml is not None else f"<CITESEPermit id='{issuer}/{number}/{version}'/>".encode()
    return PermitRecord(
        issuer=issuer, number=number, version=version, direction=direction, status="VALID",
        permit_json=b'{"number": "%s"}' % number.encode(), signed_xml=signed,
        digest=hashlib.sha256(signed).hexdigest(), sender=sender, replaces=None, replaced_by=None,
        created_at=T0,
    )  # fmt: skip


def message(
    p: PermitRecord,
    *,
    receiver: str = "FR",
    message_id: str | None = None,
    created_at: datetime = T0,
    next_attempt_at: datetime | None = None,
    action: Action = Action.ISSUE,
) -> MessageRecord:
    inbound = p.direction is Direction.INBOUND
    return MessageRecord(
        message_id=message_id or f"m-{uuid.uuid4()}", conversation_id=f"c-{p.issuer}-{p.number}",
        direction=p.direction, sender=p.sender or "CH" if inbound else "CH", receiver=receiver,
        document_type="CITESEPermit", action=action, issuer=p.issuer, number=p.number, version=p.version,
        status=MessageStatus.RECEIVED if inbound else MessageStatus.SEND_ENQUEUED, attempts=0,
        next_attempt_at=next_attempt_at, lease_until=None, last_error_code=None, last_error_detail=None,
        via=None, receipt=b"<Receipt/>" if inbound else None, payload_digest=p.digest,
        created_at=created_at, updated_at=created_at,
    )  # fmt: skip


async def accept(store: Store, p: PermitRecord, *receivers: str, **kw) -> list[MessageRecord]:
    msgs = [message(p, receiver=r, next_attempt_at=kw.pop("due", None)) for r in receivers or ("FR",)]
    return await store.accept_outbound(p, msgs, actor="ma-system", **kw)


# --- the database's own refusals ---------------------------------------------------------------


async def refused(store: Store, statement: str, *, match: str = "append-only", first: Sequence[str] = ()) -> None:
    """``statement`` is refused by the database itself (a trigger's message matching ``match``), run
    as anyone with access to it would: on a connection of its own, after ``first`` in the same
    transaction, which is rolled back."""
    if isinstance(store, SqliteStore):
        conn = sqlite3.connect(store.path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for s in first:
                conn.execute(s)
            with pytest.raises(sqlite3.IntegrityError, match=match):
                conn.execute(statement)
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    async with store.pool.acquire() as conn:
        with pytest.raises(asyncpg.RaiseError, match=match):
            async with conn.transaction():
                for s in first:
                    await conn.execute(s)
                await conn.execute(statement)
