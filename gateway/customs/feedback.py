"""The issuer's side of customs feedback: an inbound ``endorse`` message becomes actual quantities
on our own permit's record.

The endorsement is signed by the endorsing country's gateway, not by the hop that delivered it
(a hub may relay it), so the signer is found from the pinned certificates and must be the party
the notice names. It must be about a permit this gateway issued, exported from or imported
into the endorsing country.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.exchange_xml import Envelope, EndorsementNotice, read_endorsement
from adapters.permit_json import permit_from_json
from domain import ledger
from domain.errors import EpixError, ErrorCode
from domain.messages import Direction
from gateway.store.ledger import WriteOffRequest

if TYPE_CHECKING:
    from gateway.inbound import InboundService


@dataclass(frozen=True, slots=True)
class ReceivedEndorsement:
    notice: EndorsementNotice
    request: WriteOffRequest

    @property
    def reversal(self) -> bool:
        return self.notice.reversal


async def endorsement_request(inbound: "InboundService", env: Envelope) -> ReceivedEndorsement:
    h = env.header
    verified = inbound.security.verifier.verify(env.payload, expected_signer=None)
    notice = read_endorsement(verified.signed_root)
    if verified.signer != notice.endorsed_by:
        raise EpixError(
            ErrorCode.SENDER_MISMATCH,
            f"The endorsement names {notice.endorsed_by} as endorsing party but is signed by {verified.signer}.",
        )
    inbound.config.agreements.get(notice.endorsed_by)
    if (notice.issuer, notice.number) != (h.document_issuer, h.document_number):
        raise EpixError(
            ErrorCode.ENVELOPE_INVALID,
            f"The envelope announces an endorsement of {h.document_issuer}/{h.document_number} "
            f"but carries one of {notice.issuer}/{notice.number}.",
        )
    if notice.issuer != inbound.config.party:
        raise EpixError(
            ErrorCode.MISADDRESSED,
            f"The endorsement is about a permit of {notice.issuer}; only the issuer records endorsements.",
        )
    versions = [v for v in await inbound.store.get_permit_versions(notice.issuer, notice.number) if v.direction is Direction.OUTBOUND]
    if not versions:
        raise EpixError(ErrorCode.NOT_FOUND, f"This gateway never issued permit {notice.issuer}/{notice.number}.")
    permit = permit_from_json(versions[-1].permit_json)
    # Box 14 is filled by the customs the goods crossed: any other pinned partner would write
    # quantities on our record, or reverse what the importing country's customs reported.
    concerned = {permit.exporter.address.country, permit.importer.address.country}
    if notice.endorsed_by not in concerned:
        raise EpixError(
            ErrorCode.FORBIDDEN,
            f"Permit {notice.issuer}/{notice.number} goes from {permit.exporter.address.country} to "
            f"{permit.importer.address.country}; {notice.endorsed_by}'s customs cannot endorse it.",
        )
    e = notice.endorsement
    request = WriteOffRequest(
        issuer=notice.issuer,
        number=notice.number,
        declaration=notice.declaration,
        lines=tuple(ledger.DrawLine(line.item_id, line.quantity, line.unit) for line in e.lines),
        permitted=ledger.permitted_lines(permit),
        declared_at=e.date,
        office=notice.office,
        port=e.port or None,
        transport_document=e.transport_document,
        officer=e.officer,
        exporter=f"{permit.exporter.address.country or '?'}:{permit.exporter.name.strip().lower()}",
    )
    return ReceivedEndorsement(notice, request)
