"""The customs side of the store: the write-off ledger, the verification audit and the pre-arrival feed.

Kept apart from ``base.py`` so that the exchange store reads on its own; ``Store`` inherits
``CustomsLedger`` and each backend inherits its implementation (``ledger_sqlite``,
``ledger_postgres``). The tables come with migration 4 (``LEDGER_DDL``); migration 7
(``AUDIT_TRIGGERS``) has the database refuse any change to them that the code never makes.

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
from typing import TYPE_CHECKING, Any, NamedTuple

from domain.errors import EpixError, ErrorCode
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


class VerificationRecord(NamedTuple):
    id: str
    issuer: str
    number: str
    verdict: str
    reasons: tuple[str, ...]
    principal: str
    office: str | None
    stamp_given: bool
    at: datetime


class PermitCheck(NamedTuple):
    """What a verification needs of one stored permit version, worked out once from the record
    (parsed, its issuer's signature verified) and kept beside it, so that answering a customs
    officer reads one small row instead of parsing and verifying the permit again.

    The database keeps it in step with the record (migration 5's triggers): a change to the
    permit's JSON or signed XML deletes it (and queues the version to be checked again); a
    change of status or replaced_by is copied into it.
    """

    issuer: str
    number: str
    version: int
    direction: str
    digest: str  # the record's digest when it was checked
    signature_ok: bool
    signer: str | None
    certificate_subject: str | None
    certificate_serial: str | None
    signature_error: str | None
    signature_error_code: str | None
    valid_from: datetime
    valid_until: datetime
    stamp: str | None  # box 5b: compared with what customs read on the paper, never returned
    countries: str  # exporter, importer and issuing country, space separated (scope of a token)
    exporter: str  # the exporter's key for the "first shipment" rule
    facts: str  # compact JSON: the permit summary without balances, and the risk rules' inputs
    checked_at: datetime
    status: str = "VALID"  # the record's, copied by the database
    replaced_by: str | None = None


class VerificationFacts(NamedTuple):
    """Everything a verdict depends on, read in one store call: the latest version held, its
    check (None: not worked out yet, or the record changed since), what is used per line, and
    whether the exporter has shipped before."""

    version: int
    direction: str
    check: PermitCheck | None
    used: dict[str, Decimal]
    exporter_shipped: bool


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
    async def verification_facts(self, issuer: str, number: str) -> VerificationFacts | None:
        """One read for a verdict (see VerificationFacts); None when no version is held."""

    @abstractmethod
    async def save_permit_checks(self, checks: Sequence[tuple[PermitCheck, bytes, bytes]]) -> int:
        """Store (check, signed_xml, permit_json) triples, replacing older checks of the same
        version, and take their versions off the queue. A check is kept only if the record still
        holds exactly the bytes it was made from (one changed meanwhile stays queued);
        status and replaced_by are copied from the record in the same statement. Returns how many
        were kept."""

    @abstractmethod
    async def permit_checks_due(self, *, limit: int) -> list[tuple[str, str, int, str]]:
        """(issuer, number, version, direction) of stored versions not checked yet, or changed."""

    @abstractmethod
    async def permit_check_done(self, keys: Sequence[tuple[str, str, int, str]]) -> None:
        """Take versions off the queue without a check (the record is gone or unreadable)."""

    @abstractmethod
    async def recheck_permits(self, issuer: str | None = None) -> int:
        """Drop the checks of every stored version (of ``issuer``'s permits, if given) and queue
        them again, in one transaction: after the trust in a signer changed (a certificate
        withdrawn or added), no verdict rests on a check made under the old trust. Returns how
        many versions were queued."""

    @abstractmethod
    async def retrust(self, marks: Mapping[str, str], *, now: datetime) -> dict[str, int]:
        """Bring the stored checks in step with the trust ``marks`` (party -> fingerprint of what
        is trusted for it), in one transaction: every issuer whose mark changed, is new, or is
        gone has its checks dropped and queued again (as ``recheck_permits``), and the marks are
        saved. Returns how many versions were queued, per issuer rechecked."""

    @abstractmethod
    async def permits_created_between(self, start: datetime, end: datetime) -> list["PermitRecord"]:
        """Every permit version stored in [start, end), oldest first (the annual report)."""

    @abstractmethod
    async def feed_pending(self, *, limit: int, not_before: datetime | None = None) -> list["MessageRecord"]:
        """Inbound issue/replace messages not yet handed to customs, oldest first, however old
        (``not_before``: none received before it)."""

    @abstractmethod
    async def feed_mark_sent(
        self, message_id: str, *, at: datetime, detail: str, holder: str | None = None, until: datetime | None = None
    ) -> bool:
        """Record that customs has the message (marking it twice is harmless). With ``holder``,
        the same transaction keeps that holder's feed turn until ``until``; False when the turn has
        gone to another holder meanwhile (the caller stops handing over)."""

    @abstractmethod
    async def feed_backlog(self, *, before: datetime, not_before: datetime | None = None) -> tuple[int, datetime | None]:
        """How many messages wait for the feed that were received before ``before`` (and not before
        ``not_before``), and when the oldest of them was received."""

    @abstractmethod
    async def feed_take_turn(self, holder: str, *, now: datetime, until: datetime) -> bool:
        """Take the feed's turn for ``holder`` until ``until``, or keep it: True unless another
        holder's turn runs past ``now``. One turn at a time, for every gateway process on the
        store, so that each permit is handed over by one of them (and in order)."""

    @abstractmethod
    async def feed_end_turn(self, holder: str) -> None:
        """Give the turn up (if ``holder`` has it), so that another process may take it at once."""


# --- schema: migration 4 -----------------------------------------------------------------------

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

# --- schema: migration 5, what verification needs per permit version ----------------------------

CHECKS_DDL = (
    """
    CREATE TABLE permit_checks (
        issuer               TEXT NOT NULL,
        number               TEXT NOT NULL,
        version              INTEGER NOT NULL,
        direction            TEXT NOT NULL,
        digest               TEXT NOT NULL,
        signature_ok         INTEGER NOT NULL,
        signer               TEXT,
        certificate_subject  TEXT,
        certificate_serial   TEXT,
        signature_error      TEXT,
        signature_error_code TEXT,
        valid_from           {ts} NOT NULL,
        valid_until          {ts} NOT NULL,
        stamp                TEXT,
        countries            TEXT NOT NULL,
        exporter             TEXT NOT NULL,
        facts                TEXT NOT NULL,  -- compact JSON (gateway/customs/checks.py)
        checked_at           {ts} NOT NULL,
        status               TEXT NOT NULL,  -- copied from permits, kept in step by trigger
        replaced_by          TEXT,
        PRIMARY KEY (issuer, number, version, direction)
    )
    """,
    # Versions stored (or changed) and not checked yet: filled by trigger, drained by the
    # customs check worker (gateway/customs/checks.py) and by verification on demand.
    """
    CREATE TABLE permit_check_queue (
        issuer    TEXT NOT NULL,
        number    TEXT NOT NULL,
        version   INTEGER NOT NULL,
        direction TEXT NOT NULL,
        PRIMARY KEY (issuer, number, version, direction)
    )
    """,
    "INSERT INTO permit_check_queue (issuer, number, version, direction) SELECT issuer, number, version, direction FROM permits",
)

# The triggers that keep a check true to its record, whoever writes the record (this gateway,
# another process on the same database, or someone editing it by hand): the content changed ->
# the check goes and the version is queued again; the status changed -> copied.
_KEY = "issuer = {r}.issuer AND number = {r}.number AND version = {r}.version AND direction = {r}.direction"
_QUEUE = "(issuer, number, version, direction) VALUES ({r}.issuer, {r}.number, {r}.version, {r}.direction)"
CHECKS_TRIGGERS = {
    "sqlite": (
        f"""
        CREATE TRIGGER permit_checks_queue AFTER INSERT ON permits
        BEGIN INSERT OR IGNORE INTO permit_check_queue {_QUEUE.format(r="NEW")}; END
        """,
        f"""
        CREATE TRIGGER permit_checks_stale AFTER UPDATE OF permit_json, signed_xml, digest ON permits
        BEGIN
            DELETE FROM permit_checks WHERE {_KEY.format(r="OLD")};
            INSERT OR IGNORE INTO permit_check_queue {_QUEUE.format(r="NEW")};
        END
        """,
        f"""
        CREATE TRIGGER permit_checks_status AFTER UPDATE OF status, replaced_by ON permits
        BEGIN UPDATE permit_checks SET status = NEW.status, replaced_by = NEW.replaced_by WHERE {_KEY.format(r="NEW")}; END
        """,
        f"""
        CREATE TRIGGER permit_checks_gone AFTER DELETE ON permits
        BEGIN DELETE FROM permit_checks WHERE {_KEY.format(r="OLD")}; END
        """,
    ),
    "postgresql": (
        f"""
        CREATE FUNCTION permit_checks_follow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO permit_check_queue {_QUEUE.format(r="NEW")} ON CONFLICT DO NOTHING;
            ELSIF TG_OP = 'DELETE' THEN
                DELETE FROM permit_checks WHERE {_KEY.format(r="OLD")};
            ELSIF NEW.permit_json IS DISTINCT FROM OLD.permit_json OR NEW.signed_xml IS DISTINCT FROM OLD.signed_xml
                  OR NEW.digest IS DISTINCT FROM OLD.digest THEN
                DELETE FROM permit_checks WHERE {_KEY.format(r="OLD")};
                INSERT INTO permit_check_queue {_QUEUE.format(r="NEW")} ON CONFLICT DO NOTHING;
            ELSE
                UPDATE permit_checks SET status = NEW.status, replaced_by = NEW.replaced_by WHERE {_KEY.format(r="NEW")};
            END IF;
            RETURN NULL;
        END $$
        """,
        """
        CREATE TRIGGER permit_checks_follow AFTER INSERT OR UPDATE OR DELETE ON permits
        FOR EACH ROW EXECUTE FUNCTION permit_checks_follow()
        """,
    ),
}

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
CHECK_COLUMNS = (
    "issuer, number, version, direction, digest, signature_ok, signer, certificate_subject, certificate_serial, "
    "signature_error, signature_error_code, valid_from, valid_until, stamp, countries, exporter, facts, checked_at"
)
_CHECK_UPDATES = ", ".join(
    f"{c} = excluded.{c}" for c in CHECK_COLUMNS.replace(" ", "").split(",")[4:] + ["status", "replaced_by"]
)
# Kept only while the record holds the very bytes the check was made from; status and
# replaced_by come from the record in the same statement, so a cancellation committed just
# before is not lost. ({lock}: PostgreSQL waits for a concurrent status change to commit.)
SAVE_CHECK = f"""
    INSERT INTO permit_checks ({CHECK_COLUMNS}, status, replaced_by)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, p.status, p.replaced_by
    FROM permits p
    WHERE p.issuer = $1 AND p.number = $2 AND p.version = $3 AND p.direction = $4
      AND p.digest = $5 AND p.signed_xml = $19 AND p.permit_json = $20
    {{lock}}
    ON CONFLICT (issuer, number, version, direction) DO UPDATE SET {_CHECK_UPDATES}
"""
DEQUEUE_CHECK = "DELETE FROM permit_check_queue WHERE issuer = $1 AND number = $2 AND version = $3 AND direction = $4"
_OF_ISSUER = "CAST($1 AS TEXT) IS NULL OR issuer = CAST($1 AS TEXT)"  # $1: one issuer, or NULL for all
RECHECK_DROP = f"DELETE FROM permit_checks WHERE {_OF_ISSUER}"
RECHECK_QUEUE = f"""
    INSERT INTO permit_check_queue (issuer, number, version, direction)
    SELECT issuer, number, version, direction FROM permits WHERE {_OF_ISSUER}
    ON CONFLICT DO NOTHING
"""
RECHECK_COUNT = f"SELECT COUNT(*) FROM permit_check_queue WHERE {_OF_ISSUER}"
SELECT_CHECKS_DUE = "SELECT issuer, number, version, direction FROM permit_check_queue LIMIT $1"
# The trust each issuer's checks were made under (keys.store.TrustStore.marks): compared at every
# start, so that a certificate withdrawn or added while the gateway was down re-queues that
# issuer's checks before any verification reads them (gateway/customs/__init__.py).
TRUST_MARKS_DDL = (
    """
    CREATE TABLE trust_marks (
        party       TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        recorded_at {ts} NOT NULL
    )
    """,
)
SELECT_TRUST_MARKS = "SELECT party, fingerprint FROM trust_marks"
SAVE_TRUST_MARK = """
    INSERT INTO trust_marks (party, fingerprint, recorded_at) VALUES ($1, $2, $3)
    ON CONFLICT (party) DO UPDATE SET fingerprint = excluded.fingerprint, recorded_at = excluded.recorded_at
"""
DELETE_TRUST_MARK = "DELETE FROM trust_marks WHERE party = $1"


def trust_changes(marks: Mapping[str, str], held: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """(party, its new mark, or None where it is no longer trusted) for every party whose mark
    differs from the one the store holds, a party new to either side included."""
    return [(p, marks.get(p)) for p in sorted(set(marks) | set(held)) if marks.get(p) != held.get(p)]
# One statement for a verdict: the latest version held (the order get_permit_versions gives,
# read from the primary key index alone: the version first, then the direction within it, which
# spares SQLite a sort of "version DESC, direction ASC"), its check, what is used per line and
# whether its exporter ever shipped, in one row: the balances as a JSON array of [item, used]
# (SQLite's json_group_array; PostgreSQL's json_agg). One row because every row an SQLite cursor
# steps to lets go of the GIL and takes it back, which the store's other threads make costly under
# load (the read measured ~45 us in the gateway, ~15 us alone); the gain measured small, about 2%
# more verifications per second at 10,000 permits, within the run-to-run noise.
_FACTS_SELECT = f"""
    SELECT l.version, l.direction, {", ".join("c." + c.strip() for c in CHECK_COLUMNS.split(","))}, c.status, c.replaced_by,
           (SELECT {{used}} FROM permit_balances b WHERE b.issuer = l.issuer AND b.number = l.number) AS used,
           EXISTS (SELECT 1 FROM write_offs w WHERE w.exporter = c.exporter) AS shipped
    FROM (SELECT issuer, number, version, direction FROM permits WHERE issuer = $1 AND number = $2
          AND version = (SELECT MAX(version) FROM permits WHERE issuer = $1 AND number = $2)
          ORDER BY direction ASC LIMIT 1) l
    LEFT JOIN permit_checks c
      ON c.issuer = l.issuer AND c.number = l.number AND c.version = l.version AND c.direction = l.direction
"""
SELECT_VERIFICATION_FACTS_SQLITE = _FACTS_SELECT.format(used="json_group_array(json_array(b.item_id, b.used))")
SELECT_VERIFICATION_FACTS_POSTGRES = _FACTS_SELECT.format(used="json_agg(json_build_array(b.item_id, b.used))::text")
FEED_MARK = "INSERT INTO customs_feed (message_id, sent_at, detail) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
FEED_DEQUEUE = "DELETE FROM customs_feed_queue WHERE message_id = $1"
FEED_TURN = "'pre-arrival'"  # the one row of customs_feed_turn
FEED_KEEP_TURN = f"UPDATE customs_feed_turn SET held_until = $2 WHERE feed = {FEED_TURN} AND holder = $1"
FEED_TAKE_TURN = f"""
    UPDATE customs_feed_turn SET holder = $1, held_until = $3
    WHERE feed = {FEED_TURN} AND (holder IS NULL OR holder = $1 OR held_until < $2)
"""
FEED_END_TURN = f"UPDATE customs_feed_turn SET holder = NULL, held_until = NULL WHERE feed = {FEED_TURN} AND holder = $1"
FEED_BACKLOG = "SELECT COUNT(*), MIN(created_at) FROM customs_feed_queue WHERE created_at < $1"
FEED_BACKLOG_SINCE = FEED_BACKLOG + " AND created_at >= $2"


def feed_pending_sql(message_columns: str, *, bounded: bool) -> str:
    """The queue in order ($1 the limit; ``bounded``: $2 the oldest time fed). Two statements, not
    one with an optional bound, so that each walks customs_feed_queue_order from where it starts."""
    since = "WHERE p.created_at >= $2 " if bounded else ""
    return f"""
        SELECT {", ".join("m." + c.strip() for c in message_columns.split(","))}
        FROM customs_feed_queue p JOIN messages m ON m.message_id = p.message_id
        {since}ORDER BY p.created_at, p.message_id LIMIT $1
    """


def permits_between_sql(permit_columns: str) -> str:
    return f"SELECT {permit_columns} FROM permits WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, issuer, number"


# --- schema: migration 7, the audit and the ledger kept as they were written ---------------------

# The verification audit, the write-offs and the balances are evidence (of what customs was told,
# and of the quantities that crossed a border): the database refuses whatever the code never does,
# whoever asks. The code only ever
#
# * appends verifications; retention deletes those older than its run's cutoff (the flag and
#   cutoff of migration 6's ``retention_runs``, as for the event history);
# * appends write-offs, and reverses one by setting ``reversed_at`` once (REVERSE_DECLARATION);
# * inserts a permit line's balance once (ON CONFLICT DO NOTHING) and moves its ``used``.
#
# Everything else is refused: an UPDATE of an audit row, a DELETE outside a retention run, a
# write-off changed or deleted or un-reversed, a balance deleted or moved to another line, unit
# or permitted quantity, and on PostgreSQL a TRUNCATE. SQLite's INSERT OR REPLACE deletes the row
# it replaces without firing delete triggers, so an insert over a held key is refused as well
# (for a balance it is ignored: the ledger's own INSERT ... ON CONFLICT DO NOTHING meets it).
# ``used`` itself stays writable: it is the sum of the write-offs not reversed, kept beside them
# so a write-off need not add them all up, and can be worked out again from them.

_WRITE_OFF_KEPT = [c.strip() for c in WRITE_OFF_COLUMNS.split(",") if c.strip() != "reversed_at"]
_BALANCE_KEPT = ["issuer", "number", "item_id", "unit", "permitted"]
_AUDIT_KEEPS = "verifications is append-only: an audit row is never changed"
_AUDIT_RETENTION = "verifications is append-only: only a retention run deletes audit rows older than its cutoff"
_WRITE_OFF_KEEPS = "write_offs is append-only: a write-off is never deleted or changed, only reversed once"
_BALANCE_KEEPS = "permit_balances is append-only: a balance line is never deleted, nor its permit, line, unit or permitted quantity changed"
_AUDIT_MAY_DELETE = "SELECT 1 FROM retention_runs r WHERE r.purging = 1 AND OLD.at < r.verification_cutoff"


def same_columns(columns: list[str], *, sqlite: bool) -> str:
    """A trigger's condition that ``columns`` keep their values (NULL equal to NULL)."""
    if sqlite:
        return " AND ".join(f"NEW.{c} IS OLD.{c}" for c in columns)
    return f"({', '.join('NEW.' + c for c in columns)}) IS NOT DISTINCT FROM ({', '.join('OLD.' + c for c in columns)})"


def _abort(message: str) -> str:
    return f"BEGIN SELECT RAISE(ABORT, '{message}'); END"


AUDIT_TRIGGERS = {
    "sqlite": (
        f"CREATE TRIGGER verifications_no_update BEFORE UPDATE ON verifications {_abort(_AUDIT_KEEPS)}",
        f"""
        CREATE TRIGGER verifications_no_delete BEFORE DELETE ON verifications
        WHEN NOT EXISTS ({_AUDIT_MAY_DELETE}) {_abort(_AUDIT_RETENTION)}
        """,
        f"""
        CREATE TRIGGER verifications_no_replace BEFORE INSERT ON verifications
        WHEN EXISTS (SELECT 1 FROM verifications WHERE id = NEW.id) {_abort(_AUDIT_KEEPS)}
        """,
        f"CREATE TRIGGER write_offs_no_delete BEFORE DELETE ON write_offs {_abort(_WRITE_OFF_KEEPS)}",
        f"""
        CREATE TRIGGER write_offs_reversal_only BEFORE UPDATE ON write_offs
        WHEN NOT (OLD.reversed_at IS NULL AND NEW.reversed_at IS NOT NULL AND {same_columns(_WRITE_OFF_KEPT, sqlite=True)})
        {_abort(_WRITE_OFF_KEEPS)}
        """,
        f"""
        CREATE TRIGGER write_offs_no_replace BEFORE INSERT ON write_offs
        WHEN EXISTS (SELECT 1 FROM write_offs WHERE declaration = NEW.declaration AND issuer = NEW.issuer
                     AND number = NEW.number AND item_id = NEW.item_id)
        {_abort(_WRITE_OFF_KEEPS)}
        """,
        f"CREATE TRIGGER permit_balances_no_delete BEFORE DELETE ON permit_balances {_abort(_BALANCE_KEEPS)}",
        f"""
        CREATE TRIGGER permit_balances_used_only BEFORE UPDATE ON permit_balances
        WHEN NOT ({same_columns(_BALANCE_KEPT, sqlite=True)}) {_abort(_BALANCE_KEEPS)}
        """,
        """
        CREATE TRIGGER permit_balances_no_replace BEFORE INSERT ON permit_balances
        WHEN EXISTS (SELECT 1 FROM permit_balances WHERE issuer = NEW.issuer AND number = NEW.number AND item_id = NEW.item_id)
        BEGIN SELECT RAISE(IGNORE); END
        """,
    ),
    "postgresql": (
        # One refusal for every table and case, its reason given by the trigger.
        """
        CREATE FUNCTION epix_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$
        """,
        f"""
        CREATE FUNCTION verifications_retention_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS ({_AUDIT_MAY_DELETE}) THEN RETURN OLD; END IF;
            RAISE EXCEPTION '{_AUDIT_RETENTION}';
        END $$
        """,
        f"""
        CREATE FUNCTION write_offs_reversal_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.reversed_at IS NULL AND NEW.reversed_at IS NOT NULL AND {same_columns(_WRITE_OFF_KEPT, sqlite=False)} THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION '{_WRITE_OFF_KEEPS}';
        END $$
        """,
        f"""
        CREATE FUNCTION permit_balances_used_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF {same_columns(_BALANCE_KEPT, sqlite=False)} THEN RETURN NEW; END IF;
            RAISE EXCEPTION '{_BALANCE_KEEPS}';
        END $$
        """,
        f"""
        CREATE TRIGGER verifications_no_update BEFORE UPDATE ON verifications
        FOR EACH ROW EXECUTE FUNCTION epix_refuse_change('{_AUDIT_KEEPS}')
        """,
        """
        CREATE TRIGGER verifications_no_delete BEFORE DELETE ON verifications
        FOR EACH ROW EXECUTE FUNCTION verifications_retention_only()
        """,
        f"""
        CREATE TRIGGER verifications_no_truncate BEFORE TRUNCATE ON verifications
        FOR EACH STATEMENT EXECUTE FUNCTION epix_refuse_change('{_AUDIT_RETENTION}')
        """,
        """
        CREATE TRIGGER write_offs_reversal_only BEFORE UPDATE ON write_offs
        FOR EACH ROW EXECUTE FUNCTION write_offs_reversal_only()
        """,
        f"""
        CREATE TRIGGER write_offs_no_delete BEFORE DELETE OR TRUNCATE ON write_offs
        FOR EACH STATEMENT EXECUTE FUNCTION epix_refuse_change('{_WRITE_OFF_KEEPS}')
        """,
        """
        CREATE TRIGGER permit_balances_used_only BEFORE UPDATE ON permit_balances
        FOR EACH ROW EXECUTE FUNCTION permit_balances_used_only()
        """,
        f"""
        CREATE TRIGGER permit_balances_no_delete BEFORE DELETE OR TRUNCATE ON permit_balances
        FOR EACH STATEMENT EXECUTE FUNCTION epix_refuse_change('{_BALANCE_KEEPS}')
        """,
    ),
}

# --- schema: migration 8, the pre-arrival feed's queue and turn ----------------------------------

# What customs has yet to be handed, kept by the database as the messages arrive (a trigger, in
# the transaction that stores the message), so that the feed starts from the oldest permit not
# handed over however long it was down, without walking everything handed over before it. A row
# goes when its message is marked sent (customs_feed) or purged with it. Existing messages not
# marked sent are queued by the migration: also those an earlier feed, which started at most
# feed_backfill_s back, never reached.
FEED_DDL = (
    """
    CREATE TABLE customs_feed_queue (
        message_id TEXT PRIMARY KEY,
        created_at {ts} NOT NULL  -- the message's: the feed's order
    )
    """,
    "CREATE INDEX customs_feed_queue_order ON customs_feed_queue (created_at, message_id)",
    """
    INSERT INTO customs_feed_queue (message_id, created_at)
    SELECT m.message_id, m.created_at FROM messages m
    WHERE m.direction = 'inbound' AND m.action IN ('issue', 'replace')
      AND NOT EXISTS (SELECT 1 FROM customs_feed f WHERE f.message_id = m.message_id)
    """,
    # Whose turn it is to hand over, for every gateway process on this database: one at a time,
    # so that customs gets each permit once and in order. A turn is kept by handing over (each
    # mark extends it) and lapses at ``held_until`` when its process went away without ending it.
    """
    CREATE TABLE customs_feed_turn (
        feed   TEXT PRIMARY KEY,
        holder TEXT,
        held_until {ts}
    )
    """,
    f"INSERT INTO customs_feed_turn (feed) VALUES ({FEED_TURN})",
)
_FEED_CANDIDATE = "NEW.direction = 'inbound' AND NEW.action IN ('issue', 'replace')"
FEED_TRIGGERS = {
    "sqlite": (
        f"""
        CREATE TRIGGER customs_feed_enqueue AFTER INSERT ON messages WHEN {_FEED_CANDIDATE}
        BEGIN INSERT OR IGNORE INTO customs_feed_queue (message_id, created_at) VALUES (NEW.message_id, NEW.created_at); END
        """,
    ),
    "postgresql": (
        """
        CREATE FUNCTION customs_feed_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO customs_feed_queue (message_id, created_at) VALUES (NEW.message_id, NEW.created_at)
            ON CONFLICT DO NOTHING;
            RETURN NULL;
        END $$
        """,
        f"""
        CREATE TRIGGER customs_feed_enqueue AFTER INSERT ON messages
        FOR EACH ROW WHEN ({_FEED_CANDIDATE}) EXECUTE FUNCTION customs_feed_enqueue()
        """,
    ),
}


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


def check_values(c: PermitCheck, ts, signed_xml: bytes, permit_json: bytes) -> tuple[Any, ...]:
    return (
        c.issuer, c.number, c.version, c.direction, c.digest, int(c.signature_ok), c.signer, c.certificate_subject,
        c.certificate_serial, c.signature_error, c.signature_error_code, ts(c.valid_from), ts(c.valid_until), c.stamp,
        c.countries, c.exporter, c.facts, ts(c.checked_at), signed_xml, permit_json,
    )  # fmt: skip


def facts_from_row(r: Sequence[Any] | None, ts) -> VerificationFacts | None:
    """SELECT_VERIFICATION_FACTS_*'s row as one answer (None: no such permit)."""
    if r is None:
        return None
    check = None
    if r[2] is not None:
        check = PermitCheck(
            issuer=r[2], number=r[3], version=r[4], direction=r[5], digest=r[6], signature_ok=bool(r[7]), signer=r[8],
            certificate_subject=r[9], certificate_serial=r[10], signature_error=r[11], signature_error_code=r[12],
            valid_from=ts(r[13]), valid_until=ts(r[14]), stamp=r[15], countries=r[16], exporter=r[17], facts=r[18],
            checked_at=ts(r[19]), status=r[20], replaced_by=r[21],
        )  # fmt: skip
    used = {item: Decimal(quantity) for item, quantity in json.loads(r[22])} if r[22] else {}
    return VerificationFacts(r[0], r[1], check, used, bool(r[23]))


def balances_from_rows(rows: Sequence[Any], permitted: Mapping[str, tuple[Decimal, str]]) -> tuple[Balance, ...]:
    """Balances in the permit's line order; a line with no row yet has nothing used."""
    used = {r[0]: Decimal(r[3]) for r in rows}
    return tuple(Balance(i, unit, qty, used.get(i, Decimal(0))) for i, (qty, unit) in permitted.items())


def refuse_endorsed(rows: Sequence[WriteOffRecord], declaration: str, issuer: str, number: str) -> None:
    """Customs here may not reverse, or add lines to, a declaration a partner's customs reported
    in an endorsement: those rows are the issuer's evidence of what crossed the partner's border,
    only the partner's own reversal gives them back, and it reverses the whole declaration."""
    reported = next((r for r in rows if r.origin != "customs"), None)
    if reported is not None:
        raise EpixError(
            ErrorCode.CONFLICT,
            f"Declaration {declaration} on permit {issuer}/{number} was reported by a partner's customs in an endorsement "
            f"(office {reported.office or 'not named'}); it is their record, and only their reversal gives it back.",
            declaration=declaration,
        )


def refuse_foreign(rows: Sequence[WriteOffRecord], request: WriteOffRequest) -> None:
    """A declaration is one office's: another office (or a partner's endorsement) may neither
    add lines under its reference nor replay it as its own."""
    refuse_endorsed(rows, request.declaration, request.issuer, request.number)
    other = next((r for r in rows if r.office != request.office), None)
    if other is not None:
        raise EpixError(
            ErrorCode.CONFLICT,
            f"Declaration {request.declaration} on permit {request.issuer}/{request.number} was written off by office "
            f"{other.office or '(none named)'}; office {request.office or '(none named)'} cannot add lines under it: "
            "give the declaration its own reference.",
            declaration=request.declaration,
        )


def refuse_other_reporter(rows: Sequence[WriteOffRecord], request: WriteOffRequest, actor: str) -> None:
    """On the issuer's side, an endorsement's declaration is the reporting office's: rows under
    the same reference written off here, or reported by another office or partner, are not its
    to add to or to reverse."""
    other = next((r for r in rows if r.origin != "endorsement" or r.office != request.office or r.actor != actor), None)
    if other is not None:
        by = "its own customs" if other.origin != "endorsement" else f"{other.actor}, office {other.office or '(none named)'}"
        raise EpixError(
            ErrorCode.CONFLICT,
            f"Declaration {request.declaration} on permit {request.issuer}/{request.number} is already held here from "
            f"{by}; an endorsement from {actor}, office {request.office or '(none named)'}, cannot be recorded under it.",
            declaration=request.declaration,
        )


def held_by_line(rows: Sequence[WriteOffRecord]) -> dict[str, Any]:
    from domain.ledger import HeldWriteOff

    return {r.item_id: HeldWriteOff(r.item_id, r.quantity, r.reversed_at is not None) for r in rows}
