"""The CITES annual trade report rows (Res. Conf. 11.17 guidelines) from the permits held and the
actual quantities customs wrote off or reported back.

One row per permit line of the year (by the permit's record date): exports from the permits this
gateway issued, imports from the permits it received. The quantity is the actual one (box 14,
summed over the declarations not reversed) when customs reported any, otherwise the permitted
one, and the ``quantity_basis`` column says which: the guidelines ask for actual trade where it
is known.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from decimal import Decimal

from adapters.permit_json import permit_from_json
from domain.messages import Direction
from gateway.store.base import Store

COLUMNS = (
    "year", "trade", "appendix", "taxon", "term", "quantity", "unit", "quantity_basis", "permitted_quantity",
    "exporter_country", "importer_country", "origin_country", "purpose", "source", "permit_number",
    "origin_permit_number", "issuer", "status",
)  # fmt: skip


async def annual_rows(store: Store, year: int, *, party: str) -> list[dict[str, str]]:
    start = datetime(year, 1, 1, tzinfo=timezone.utc)
    end = datetime(year + 1, 1, 1, tzinfo=timezone.utc)
    latest: dict[tuple[str, str, str], object] = {}
    for record in await store.permits_created_between(start, end):
        latest[(record.issuer, record.number, record.direction.value)] = record  # later versions win
    rows = []
    for (issuer, number, direction), record in sorted(latest.items()):
        permit = permit_from_json(record.permit_json)
        used = await store.used_quantities(issuer, number)
        for item in permit.items:
            actual = used.get(item.id, Decimal(0))
            reported = actual > 0 or any(w.item_id == item.id for w in await store.list_write_offs(issuer, number))
            rows.append(
                {
                    "year": str(year),
                    "trade": "export" if direction == Direction.OUTBOUND.value else "import",
                    "appendix": item.appendix,
                    "taxon": item.scientific_name,
                    "term": item.term,
                    "quantity": format(actual if reported else item.quantity, "f"),
                    "unit": item.unit,
                    "quantity_basis": "actual" if reported else "permitted",
                    "permitted_quantity": format(item.quantity, "f"),
                    "exporter_country": permit.exporter.address.country or "",
                    "importer_country": permit.importer.address.country or "",
                    "origin_country": item.origin_country or "",
                    "purpose": permit.purpose,
                    "source": item.source,
                    "permit_number": permit.number,
                    "origin_permit_number": item.origin_permit.number if item.origin_permit and item.origin_permit.number else "",
                    "issuer": issuer,
                    "status": record.status,
                }
            )
    return rows


def to_csv(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


async def annual_report(config, year: int) -> str:
    from gateway.store import opened_store

    async with opened_store(config.store_url, config.data_dir) as store:
        return to_csv(await annual_rows(store, year, party=config.party))
