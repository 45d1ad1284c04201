"""Permit checks: what a verification needs of a stored permit, worked out once per version.

A verification used to read the whole record, parse its JSON and look up (or redo) the issuer's
XML-DSig check on every request; with a million permits stored most requests missed every cache.
Now each stored version gets a ``PermitCheck`` row (gateway/store/ledger.py, migration 5) made
when it is stored: the signature verified on the stored bytes, the permit summary that the
answer shows, the inputs of the risk rules. A verification reads that row, the balances and the
exporter's history in one store call and parses nothing.

The row is made by ``CheckWorker`` shortly after the permit is stored (the store queues every
new or changed version by trigger), or by the first verification that finds none. The database
drops it when the record's JSON or signed XML changes, so a doctored record is verified again
(and fails) the next time it is asked for.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from domain import ledger
from domain.model import Permit
from gateway.logs import get_logger
from gateway.store.base import PermitRecord
from gateway.store.ledger import PermitCheck

if TYPE_CHECKING:
    from gateway.customs.service import CustomsService, SignatureCheck

log = get_logger("epix.customs.checks")
FACTS_LAYOUT = 2  # bump when the layout of a check's facts changes: older checks are made again
SEP = "\x1f"


def exporter_key(permit: Permit) -> str:
    return f"{permit.exporter.address.country or '?'}:{permit.exporter.name.strip().lower()}"


def _members(d: dict[str, Any]) -> str:
    """A JSON object's members without the braces, to be spliced into a larger object."""
    return _compact(d)[1:-1]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def make_check(record: PermitRecord, permit: Permit, signature: "SignatureCheck", now: datetime) -> PermitCheck:
    """The check of ``record`` (parsed as ``permit``, its signature checked as ``signature``).

    Its ``facts`` hold the answer's static parts as JSON text already (the permit summary, each
    line up to its permitted quantity, the signer), so a verification only writes what changes:
    status, quantities used, verdict and risk.
    """
    head = {
        "issuer": record.issuer,
        "number": permit.number,
        "type": permit.type,
        "issuing_authority": permit.authority.name,
        "exporter": {"name": permit.exporter.name, "country": permit.exporter.address.country},
        "importer": {"name": permit.importer.name, "country": permit.importer.address.country},
        "purpose": permit.purpose,
        "valid_from": permit.valid_from.isoformat(),
        "valid_until": permit.valid_until.isoformat(),
    }
    lines = []
    for i in permit.items:
        static = {
            "item": i.id, "scientific_name": i.scientific_name, "common_name": i.common_name, "appendix": i.appendix,
            "source": i.source, "term": i.term, "unit": i.unit, "permitted": format(i.quantity, "f"),
        }  # fmt: skip
        lines.append("{" + _members(static))
    data = {
        "layout": FACTS_LAYOUT,
        "valid": [head["valid_from"], head["valid_until"]],
        "lines": [[i.id, format(i.quantity, "f"), i.unit] for i in permit.items],
        "risk": [
            permit.exporter.address.country,
            permit.importer.address.country,
            [[i.id, i.scientific_name, i.appendix, i.source, i.origin_country] for i in permit.items],
        ],
    }
    # The answer's parts as JSON text, after the data: read back by a split, not a JSON decode
    # (json.dumps escapes every control character, so SEP never occurs inside them).
    facts = SEP.join([_compact(data), _members(head), _compact(signature.view()), *lines])
    countries = (permit.exporter.address.country, permit.importer.address.country, permit.issuing_country)
    return PermitCheck(
        issuer=record.issuer, number=record.number, version=record.version, direction=record.direction.value,
        digest=record.digest, signature_ok=signature.ok, signer=signature.signer,
        certificate_subject=signature.subject, certificate_serial=signature.serial, signature_error=signature.error,
        signature_error_code=signature.error_code, valid_from=permit.valid_from, valid_until=permit.valid_until,
        stamp=permit.security_stamp, countries=" ".join(c or "-" for c in countries), exporter=exporter_key(permit),
        facts=facts, checked_at=now, status=record.status, replaced_by=record.replaced_by,
    )  # fmt: skip


# --- reading a check back ---------------------------------------------------------------------------


class _Address(NamedTuple):
    country: str | None


class _Party(NamedTuple):
    address: _Address


class _Line(NamedTuple):
    id: str
    scientific_name: str
    appendix: str
    source: str
    origin_country: str | None


class RiskView(NamedTuple):
    """The part of a permit ``domain.risk.assess`` reads (items, exporter and importer country,
    validity), rebuilt from a check without parsing the permit. tests/unit/test_ledger.py keeps
    it honest: the same assessment as from the permit itself. (Named tuples: made on every
    verification, and much cheaper to make than frozen dataclasses.)"""

    items: tuple[_Line, ...]
    exporter: _Party
    importer: _Party
    valid_until: datetime


class CheckFacts(NamedTuple):
    """A check's facts, read once per verification."""

    valid_from: datetime
    valid_until: datetime
    lines: list[list[str]]  # [item, permitted, unit]
    risk: RiskView
    countries: tuple[str | None, ...]  # exporter, importer, issuer
    head: str  # the permit summary's static members, JSON text
    signer: str  # the signer's view, JSON text
    line_parts: list[str]  # each line's JSON text up to its permitted quantity

    @classmethod
    def of(cls, check: PermitCheck) -> "CheckFacts | None":
        """None when the check was written in another layout: it is then made again."""
        data, head, signer, *line_parts = check.facts.split(SEP)
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.get("layout") != FACTS_LAYOUT:
            return None
        valid_from, valid_until = map(datetime.fromisoformat, raw["valid"])
        exporter, importer, items = raw["risk"]
        risk = RiskView(tuple([_Line(*i) for i in items]), _Party(_Address(exporter)), _Party(_Address(importer)), valid_until)
        countries = tuple([None if c == "-" else c for c in check.countries.split(" ")])
        return cls(valid_from, valid_until, raw["lines"], risk, countries, head, signer, line_parts)

    def balances(self, used: dict[str, Decimal]) -> tuple[ledger.Balance, ...]:
        zero = ledger.ZERO
        return tuple([ledger.Balance(item, unit, Decimal(q), used.get(item, zero)) for item, q, unit in self.lines])


def permit_json(check: PermitCheck, facts: CheckFacts, balances: tuple[ledger.Balance, ...]) -> str:
    """The permit as a verification shows it (JSON text): what ``service.permit_summary`` gives
    for the record, written from the check."""
    lines = ",".join(
        f'{prefix},"used":"{b.used:f}","remaining":"{b.remaining:f}"}}' for prefix, b in zip(facts.line_parts, balances)
    )
    return (
        f'{{"version":{check.version:d},"status":{_compact(check.status)},"replaced_by":{_compact(check.replaced_by)},'
        f'{facts.head},"lines":[{lines}]}}'
    )


# --- made when a permit is stored ----------------------------------------------------------------


class CheckWorker:
    """Makes the check of every version the store queued (new or changed records), a batch at a
    time; the first verification of a version not checked yet makes its own."""

    def __init__(self, service: "CustomsService", *, poll_s: float = 0.25, batch: int = 50) -> None:
        self.service = service
        self.poll_s = poll_s
        self.batch = batch

    async def run(self) -> None:
        while True:
            try:
                done = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- verification makes its own check meanwhile
                log.warning("checks.failed", error=str(exc))
                done = 0
            if done < self.batch:
                await asyncio.sleep(self.poll_s)

    async def run_once(self) -> int:
        store = self.service.store
        due = await store.permit_checks_due(limit=self.batch)
        made, unreadable = [], []
        now = datetime.now(timezone.utc)
        for issuer, number, version, direction in due:
            versions = await store.get_permit_versions(issuer, number)
            record = next((r for r in versions if r.version == version and r.direction.value == direction), None)
            try:
                if record is None:
                    raise LookupError("the record is gone")
                made.append((self.service.make_check(record, now), record.signed_xml, record.permit_json))
            except Exception as exc:  # noqa: BLE001 -- one unreadable record must not stop the others
                log.warning("checks.unreadable", issuer=issuer, number=number, version=version, error=str(exc))
                unreadable.append((issuer, number, version, direction))
            await asyncio.sleep(0)  # one signature check at a time between requests
        await store.save_permit_checks(made)
        await store.permit_check_done(unreadable)
        return len(due)
