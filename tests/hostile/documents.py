"""Permit documents for the signature tests (keys unit tests, xmlsec1 interop, hostile corpus).

Uses the real writer ``adapters.cites_write.permit_to_xml`` when it exists; until then, a small
hand-made ``rsm:CITESEPermit`` with the same shape (header, parties, line items), built with
``ElementMaker`` so the signature code is exercised on a realistic, namespaced ~5 KB document.
"""

from __future__ import annotations

import random
from datetime import datetime

from lxml import etree
from lxml.builder import ElementMaker

from adapters.ns import RAM, RSM
from domain.model import Party, Permit
from simulators.samples import make_permit

try:  # the real writer, once another engineer lands it
    from adapters.cites_write import permit_to_xml as _real_permit_to_xml
except ImportError:  # pragma: no cover - depends on the state of the checkout
    _real_permit_to_xml = None

_RSM = ElementMaker(namespace=RSM, nsmap={"rsm": RSM, "ram": RAM})
_RAM = ElementMaker(namespace=RAM, nsmap={"rsm": RSM, "ram": RAM})


def _when(value: datetime) -> etree._Element:
    return _RAM.DateTimeString(value.strftime("%Y%m%d%H%M%S"), format="204")


def _party(tag: str, party: Party) -> etree._Element:
    address = party.address
    return getattr(_RAM, tag)(
        _RAM.Name(party.name),
        _RAM.PostalTradeAddress(
            _RAM.PostcodeCode(address.postcode or ""),
            _RAM.StreetName(address.street or ""),
            _RAM.CityName(address.city or ""),
            _RAM.CountryID(address.country or ""),
            _RAM.CountryName(address.country_name or ""),
        ),
    )


def _hand_made(permit: Permit) -> bytes:
    items = []
    for index, item in enumerate(permit.items, start=1):
        items.append(
            _RAM.IncludedSupplyChainConsignmentItem(
                _RAM.SequenceNumeric(str(index)),
                *[_RAM.PhysicalLogisticsShippingMarks(_RAM.Marking(mark)) for mark in item.marks],
                _RAM.TransportLogisticsPackage(_RAM.ItemQuantity(str(item.quantity), unitCode=item.unit)),
                _RAM.IncludedSupplyChainTradeLineItem(
                    _RAM.SequenceNumeric(item.id),
                    _RAM.TypeCode(item.appendix),
                    _RAM.TypeExtensionCode(item.source),
                    _RAM.SpecifiedTradeProduct(
                        _RAM.Description(item.description or ""),
                        _RAM.CommonName(item.common_name or "", languageID="en"),
                        _RAM.ScientificName(item.scientific_name),
                        _RAM.TypeCode(item.term),
                    ),
                ),
            )
        )
    root = _RSM.CITESEPermit(
        _RSM.SpecifiedExchangedDocumentContext(
            _RAM.BusinessProcessSpecifiedDocumentContextParameter(_RAM.Value("CITES Permitting")),
        ),
        _RSM.HeaderExchangedDocument(
            _RAM.ID(permit.number),
            _RAM.Name("CITES permit"),
            _RAM.TypeCode(permit.type),
            _RAM.PurposeCode(permit.purpose),
            *[_RAM.Information(text) for text in permit.special_conditions],
            _RAM.IssueDateTime(_when(permit.issue_date)),
            _RAM.EffectiveSpecifiedPeriod(
                _RAM.StartDateTime(_when(permit.valid_from)), _RAM.EndDateTime(_when(permit.valid_until))
            ),
            _RAM.IssueLogisticsLocation(_RAM.Name(permit.issued_at or "")),
            _RAM.FirstSignatoryDocumentAuthentication(
                _RAM.ID(permit.security_stamp or ""),
                _party("ProviderTradeParty", permit.authority),
            ),
            _RAM.ThirdSignatoryDocumentAuthentication(_RAM.Statement(permit.signed_by or "")),
        ),
        _RSM.SpecifiedSupplyChainConsignment(
            _party("ConsignorTradeParty", permit.exporter),
            _party("ConsigneeTradeParty", permit.importer),
            *items,
        ),
    )
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def permit_xml(permit: Permit) -> bytes:
    """The permit as unsigned CITESEPermit bytes."""
    if _real_permit_to_xml is not None:
        return _real_permit_to_xml(permit)
    return _hand_made(permit)


def sample_permit_xml(seed: int = 7, *, issuer: str = "CH", importer: str = "FR", items: int = 3) -> bytes:
    return permit_xml(make_permit(random.Random(seed), issuer=issuer, importer_country=importer, items=items))


USING_REAL_WRITER = _real_permit_to_xml is not None
