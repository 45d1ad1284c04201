"""The customs side of the store: the write-off ledger, the verification audit and the pre-arrival feed.

Kept apart from ``base.py`` so that the exchange store reads on its own; ``Store`` inherits
``CustomsLedger`` and each backend inherits its implementation (``ledger_sqlite``,
``ledger_postgres``). The tables come with migration 2 (``LEDGER_DDL``).

Quantities are exact decimals, stored as text (SQLite has no decimal type, and a float would
round a write-off): the arithmetic is ``domain.ledger``'s, done while the permit's balance rows
are locked (PostgreSQL ``FOR UPDATE``; SQLite has one writer).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.ledger import Balance, DrawLine

if TYPE_CHECKING:
    from .base import MessageRecord, PermitRecord


@dataclass(frozen=True, slots=True)
class WriteOffRequest:
    """A customs declaration's write-off against one permit (or, on the issuer's side, the
    endorsement that reports one)."""

    issuer: str
    number: str
    declaration: str
    lines: tuple[DrawLine, ...]
    permitted: Mapping[str, tuple[Decimal, str]]  # item id -> (quantity, unit), from the permit
    declared_at: datetime
    office: str | None = None
    port: str | None = None
    transport_document: str | None = None
    officer: str | None = None
    exporter: str | None = None  # key for "first shipment of this exporter"


@dataclass(frozen=True, slots=True)
class WriteOffRecord:
    issuer: str
    number: str
    declaration: str
    item_id: str
    quantity: Decimal
    unit: str
    declared_at: datetime
    office: str | None
    port: str | None
    transport_document: str | None
    officer: str | None
    exporter: str | None
    origin: str  # "customs" (written off here) or "endorsement" (reported by a partner's customs)
    message_id: str | None  # the endorsement message that carried it
    reversed_at: datetime | None
    created_at: datetime
    actor: str


@dataclass(frozen=True, slots=True)
class WriteOffOutcome:
    balances: tuple[Balance, ...]
    new: tuple[DrawLine, ...]  # lines recorded (or given back, for a reversal) by this call
    repeated: tuple[DrawLine, ...]  # lines that were already so: an idempotent retry
    message: "MessageRecord | None"  # the endorsement queued for the issuer, if any

    @property
    def replayed(self) -> bool:
        return not self.new


@dataclass(frozen=True, slots=True)
class VerificationRecord:
    id: str
    issuer: str
    number: str
    verdict: str
    reasons: tuple[str, ...]
    principal: str
    office: str | None
    stamp_given: bool
    at: datetime


class CustomsLedger(ABC):
    @abstractmethod
    async def write_off(
        self, request: WriteOffRequest, message: "MessageRecord | None", *, actor: str
    ) -> WriteOffOutcome:
        """Check and record a write-off in one transaction, with the endorsement message for the
        issuer (queued only when something new was written). Over-drawing any line raises
        QUANTITY_EXCEEDED and writes nothing; (declaration, line) already held with the same
        quantity is a retry, with another quantity IDEMPOTENCY_CONFLICT."""

    @abstractmethod
    async def reverse_write_off(
        self,
        issuer: str,
        number: str,
        declaration: str,
        permitted: Mapping[str, tuple[Decimal, str]],
        message: "MessageRecord | None",
        *,
        actor: str,
        at: datetime,
    ) -> WriteOffOutcome:
        """Give back what a declaration wrote off (all its lines), with the reversal message for
        the issuer. Reversing again changes nothing; an unknown declaration is NOT_FOUND."""

    @abstractmethod
    async def record_endorsement(
        self, request: WriteOffRequest, message: "MessageRecord", *, reversal: bool, actor: str
    ) -> tuple[bool, "MessageRecord"]:
        """The issuer's side: store the inbound endorsement message (as ``store_inbound`` does,
        duplicates included) and, if it is new, record the actual quantities it reports (or
        the reversal), in one transaction. Never refuses a quantity: it is evidence."""

    @abstractmethod
    async def used_quantities(self, issuer: str, number: str) -> dict[str, Decimal]:
        """item id -> quantity written off and not reversed."""

    @abstractmethod
    async def list_write_offs(self, issuer: str, number: str) -> list[WriteOffRecord]:
        """Every write-off of the permit, reversed ones included, oldest first."""

    @abstractmethod
    async def exporter_has_shipments(self, exporter: str) -> bool: ...

    @abstractmethod
    async def record_verifications(self, records: Sequence[VerificationRecord]) -> None:
        """Append verifications to the audit history (one transaction for the batch)."""

    @abstractmethod
    async def list_verifications(self, issuer: str, number: str, *, limit: int = 100) -> list[VerificationRecord]:
        """Newest first."""

    @abstractmethod
    async def permits_created_between(self, start: datetime, end: datetime) -> list["PermitRecord"]:
        """Every permit version stored in [start, end), oldest first (the annual report)."""

    @abstractmethod
    async def feed_pending(self, since: datetime, *, limit: int) -> list["MessageRecord"]:
        """Inbound issue/replace messages created after ``since`` not yet handed to customs, oldest first."""

    @abstractmethod
    async def feed_mark_sent(self, message_id: str, *, at: datetime, detail: str) -> None: ...


# --- schema: migration 2 -----------------------------------------------------------------------

LEDGER_DDL = (
    """
    CREATE TABLE write_offs (
        declaration        TEXT NOT NULL,
        issuer             TEXT NOT NULL,
        number             TEXT NOT NULL,
        item_id            TEXT NOT NULL,
        quantity           TEXT NOT NULL,  -- exact decimal
        unit               TEXT NOT NULL,
        declared_at        {ts} NOT NULL,
        office             TEXT,
        port               TEXT,
        transport_document TEXT,
        officer            TEXT,
        exporter           TEXT,
        origin             TEXT NOT NULL CHECK (origin IN ('customs', 'endorsement')),
        message_id         TEXT,
        reversed_at        {ts},
        created_at         {ts} NOT NULL,
        actor              TEXT NOT NULL,
        -- idempotency: one declaration writes off one permit line once. A declaration may cover
        -- several permits, so the permit is part of the key.
        PRIMARY KEY (declaration, issuer, number, item_id)
    )
    """,
    "CREATE INDEX write_offs_permit ON write_offs (issuer, number, created_at)",
    "CREATE INDEX write_offs_exporter ON write_offs (exporter)",
    """
    CREATE TABLE permit_balances (
        issuer     TEXT NOT NULL,
        number     TEXT NOT NULL,
        item_id    TEXT NOT NULL,
        unit       TEXT NOT NULL,
        permitted  TEXT NOT NULL,
        used       TEXT NOT NULL,
        updated_at {ts} NOT NULL,
        PRIMARY KEY (issuer, number, item_id)
    )
    """,
    """
    CREATE TABLE verifications (
        id          TEXT PRIMARY KEY,
        issuer      TEXT NOT NULL,
        number      TEXT NOT NULL,
        verdict     TEXT NOT NULL,
        reasons     TEXT NOT NULL,  -- JSON array of sentences
        principal   TEXT NOT NULL,
        office      TEXT,
        stamp_given INTEGER NOT NULL,
        at          {ts} NOT NULL
    )
    """,
    "CREATE INDEX verifications_permit ON verifications (issuer, number, at)",
    """
    CREATE TABLE customs_feed (
        message_id TEXT PRIMARY KEY,
        sent_at    {ts} NOT NULL,
        detail     TEXT
    )
    """,
)

# --- statements (PostgreSQL placeholders; SQLite reads them through schema.for_sqlite) ----------

WRITE_OFF_COLUMNS = (
    "issuer, number, declaration, item_id, quantity, unit, declared_at, office, port, transport_document, "
    "officer, exporter, origin, message_id, reversed_at, created_at, actor"
)
INSERT_WRITE_OFF = f"""
    INSERT INTO write_offs ({WRITE_OFF_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
"""
SELECT_DECLARATION = f"""
    SELECT {WRITE_OFF_COLUMNS} FROM write_offs WHERE declaration = $1 AND issuer = $2 AND number = $3
"""
SELECT_WRITE_OFFS = f"SELECT {WRITE_OFF_COLUMNS} FROM write_offs WHERE issuer = $1 AND number = $2 ORDER BY created_at, declaration, item_id"
REVERSE_DECLARATION = """
    UPDATE write_offs SET reversed_at = $4 WHERE declaration = $1 AND issuer = $2 AND number = $3 AND reversed_at IS NULL
"""
INSERT_BALANCE = """
    INSERT INTO permit_balances (issuer, number, item_id, unit, permitted, used, updated_at)
    VALUES ($1, $2, $3, $4, $5, '0', $6) ON CONFLICT DO NOTHING
"""
SELECT_BALANCES = "SELECT item_id, unit, permitted, used FROM permit_balances WHERE issuer = $1 AND number = $2 ORDER BY item_id"
UPDATE_BALANCE = "UPDATE permit_balances SET used = $4, updated_at = $5 WHERE issuer = $1 AND number = $2 AND item_id = $3"
SELECT_USED = "SELECT item_id, used FROM permit_balances WHERE issuer = $1 AND number = $2"
SELECT_EXPORTER = "SELECT 1 FROM write_offs WHERE exporter = $1 LIMIT 1"
VERIFICATION_COLUMNS = "id, issuer, number, verdict, reasons, principal, office, stamp_given, at"
INSERT_VERIFICATION = f"INSERT INTO verifications ({VERIFICATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
SELECT_VERIFICATIONS = f"""
    SELECT {VERIFICATION_COLUMNS} FROM verifications WHERE issuer = $1 AND number = $2 ORDER BY at DESC, id DESC LIMIT $3
"""
FEED_MARK = "INSERT INTO customs_feed (message_id, sent_at, detail) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"


def feed_pending_sql(message_columns: str) -> str:
    return f"""
        SELECT {", ".join("m." + c.strip() for c in message_columns.split(","))} FROM messages m
        WHERE m.direction = 'inbound' AND m.action IN ('issue', 'replace') AND m.created_at > $1
          AND NOT EXISTS (SELECT 1 FROM customs_feed f WHERE f.message_id = m.message_id)
        ORDER BY m.created_at, m.message_id LIMIT $2
    """


def permits_between_sql(permit_columns: str) -> str:
    return f"SELECT {permit_columns} FROM permits WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, issuer, number"


# --- rows ----------------------------------------------------------------------------------------


def write_off_values(
    request: WriteOffRequest, line: DrawLine, unit: str, *, origin: str, message_id: str | None, now: Any, ts, actor: str
) -> tuple[Any, ...]:
    return (
        request.issuer, request.number, request.declaration, line.item_id, str(line.quantity), unit,
        ts(request.declared_at), request.office, request.port, request.transport_document, request.officer,
        request.exporter, origin, message_id, None, now, actor,
    )  # fmt: skip


def write_off_from_row(r: Any, ts) -> WriteOffRecord:
    return WriteOffRecord(
        issuer=r[0], number=r[1], declaration=r[2], item_id=r[3], quantity=Decimal(r[4]), unit=r[5],
        declared_at=ts(r[6]), office=r[7], port=r[8], transport_document=r[9], officer=r[10], exporter=r[11],
        origin=r[12], message_id=r[13], reversed_at=ts(r[14]), created_at=ts(r[15]), actor=r[16],
    )  # fmt: skip


def verification_values(v: VerificationRecord, ts) -> tuple[Any, ...]:
    return (v.id, v.issuer, v.number, v.verdict, json.dumps(list(v.reasons)), v.principal, v.office, int(v.stamp_given), ts(v.at))


def verification_from_row(r: Any, ts) -> VerificationRecord:
    return VerificationRecord(
        id=r[0], issuer=r[1], number=r[2], verdict=r[3], reasons=tuple(json.loads(r[4])), principal=r[5],
        office=r[6], stamp_given=bool(r[7]), at=ts(r[8]),
    )  # fmt: skip


def balances_from_rows(rows: Sequence[Any], permitted: Mapping[str, tuple[Decimal, str]]) -> tuple[Balance, ...]:
    """Balances in the permit's line order; a line with no row yet has nothing used."""
    used = {r[0]: Decimal(r[3]) for r in rows}
    return tuple(Balance(i, unit, qty, used.get(i, Decimal(0))) for i, (qty, unit) in permitted.items())


def held_by_line(rows: Sequence[WriteOffRecord]) -> dict[str, Any]:
    from domain.ledger import HeldWriteOff

    return {r.item_id: HeldWriteOff(r.item_id, r.quantity, r.reversed_at is not None) for r in rows}
