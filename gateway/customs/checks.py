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
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain import ledger
from domain.model import Permit
from gateway.logs import get_logger
from gateway.store.base import PermitRecord
from gateway.store.ledger import PermitCheck

if TYPE_CHECKING:
    from gateway.customs.service import CustomsService, SignatureCheck

log = get_logger("epix.customs.checks")


def exporter_key(permit: Permit) -> str:
    return f"{permit.exporter.address.country or '?'}:{permit.exporter.name.strip().lower()}"


def make_check(record: PermitRecord, permit: Permit, signature: "SignatureCheck", now: datetime) -> PermitCheck:
    """The check of ``record`` (parsed as ``permit``, its signature checked as ``signature``)."""
    summary = {
        "issuer": record.issuer,
        "number": permit.number,
        "type": permit.type,
        "issuing_authority": permit.authority.name,
        "exporter": {"name": permit.exporter.name, "country": permit.exporter.address.country},
        "importer": {"name": permit.importer.name, "country": permit.importer.address.country},
        "purpose": permit.purpose,
        "valid_from": permit.valid_from.isoformat(),
        "valid_until": permit.valid_until.isoformat(),
        "lines": [
            {
                "item": i.id, "scientific_name": i.scientific_name, "common_name": i.common_name,
                "appendix": i.appendix, "source": i.source, "term": i.term,
            }  # fmt: skip
            for i in permit.items
        ],
    }
    facts = {
        "summary": summary,
        "permitted": [[i.id, format(i.quantity, "f"), i.unit] for i in permit.items],
        "risk": [[i.id, i.scientific_name, i.appendix, i.source, i.origin_country] for i in permit.items],
    }
    countries = (permit.exporter.address.country, permit.importer.address.country, permit.issuing_country)
    return PermitCheck(
        issuer=record.issuer, number=record.number, version=record.version, direction=record.direction.value,
        digest=record.digest, signature_ok=signature.ok, signer=signature.signer,
        certificate_subject=signature.subject, certificate_serial=signature.serial, signature_error=signature.error,
        signature_error_code=signature.error_code, valid_from=permit.valid_from, valid_until=permit.valid_until,
        stamp=permit.security_stamp, countries=" ".join(c or "-" for c in countries), exporter=exporter_key(permit),
        facts=json.dumps(facts, separators=(",", ":")), checked_at=now, status=record.status,
        replaced_by=record.replaced_by,
    )  # fmt: skip


# --- reading a check back ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Address:
    country: str | None


@dataclass(frozen=True, slots=True)
class _Party:
    address: _Address


@dataclass(frozen=True, slots=True)
class _Line:
    id: str
    scientific_name: str
    appendix: str
    source: str
    origin_country: str | None


@dataclass(frozen=True, slots=True)
class RiskView:
    """The part of a permit ``domain.risk.assess`` reads (items, exporter and importer country,
    validity), rebuilt from a check without parsing the permit. tests/unit/test_ledger.py keeps
    it honest: the same assessment as from the permit itself."""

    items: tuple[_Line, ...]
    exporter: _Party
    importer: _Party
    valid_until: datetime


@dataclass(frozen=True, slots=True)
class CheckFacts:
    """A check's JSON, read once per verification."""

    summary: dict[str, Any]
    permitted: dict[str, tuple[Decimal, str]]
    risk: RiskView
    valid_from: datetime
    valid_until: datetime
    countries: tuple[str | None, ...]  # exporter, importer, issuer

    @classmethod
    def of(cls, check: PermitCheck) -> "CheckFacts":
        raw = json.loads(check.facts)
        summary = raw["summary"]
        valid_from = datetime.fromisoformat(summary["valid_from"])
        valid_until = datetime.fromisoformat(summary["valid_until"])
        risk = RiskView(
            items=tuple(_Line(*line) for line in raw["risk"]),
            exporter=_Party(_Address(summary["exporter"]["country"])),
            importer=_Party(_Address(summary["importer"]["country"])),
            valid_until=valid_until,
        )
        permitted = {item: (Decimal(q), unit) for item, q, unit in raw["permitted"]}
        countries = tuple(None if c == "-" else c for c in check.countries.split(" "))
        return cls(summary, permitted, risk, valid_from, valid_until, countries)


def summary_view(check: PermitCheck, facts: CheckFacts, balances: tuple[ledger.Balance, ...]) -> dict[str, Any]:
    """The permit as a verification shows it: what ``service.permit_summary`` gives for the
    record, from the check."""
    s = facts.summary
    by_item = {b.item_id: b for b in balances}
    return {
        "issuer": s["issuer"],
        "number": s["number"],
        "type": s["type"],
        "version": check.version,
        "status": check.status,
        "replaced_by": check.replaced_by,
        "issuing_authority": s["issuing_authority"],
        "exporter": s["exporter"],
        "importer": s["importer"],
        "purpose": s["purpose"],
        "valid_from": s["valid_from"],
        "valid_until": s["valid_until"],
        "lines": [{**line, **_balance(by_item[line["item"]])} for line in s["lines"] if line["item"] in by_item],
    }


def _balance(b: ledger.Balance) -> dict[str, str]:
    return {
        "item": b.item_id, "unit": b.unit, "permitted": format(b.permitted, "f"), "used": format(b.used, "f"),
        "remaining": format(b.remaining, "f"),
    }  # fmt: skip


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
