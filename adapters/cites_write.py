"""Canonical ``Permit`` -> UN/CEFACT ``rsm:CITESEPermit`` (CITES Electronic Permitting Toolkit v2).

Element names and their order follow the real EPT v2 instance generated from the EPIX WSDL
(``shared/ref/schemas/unepwcmc-epix/spec/fixtures/v2/get_non_final_cites_certificate.xml``) and
DESIGN.md section 3. H = rsm:HeaderExchangedDocument, C = rsm:SpecifiedSupplyChainConsignment,
I = C/ram:IncludedSupplyChainConsignmentItem.

Mapping decisions (the reader in ``adapters.cites_read`` uses the same ones):

* box 1 number and type: H/ID, H/TypeCode. H/CopyIndicator is always ``false``: we only issue
  originals.
* box 2: H/EffectiveSpecifiedPeriod/StartDateTime, EndDateTime. The instance repeats the
  validity period under H/ReferenceReferencedDocument/EffectiveSpecifiedPeriod; we repeat it
  too, so that an EPIX reader that looks there finds it, and so that our document has the same
  shape as the instance. That H/ReferenceReferencedDocument also carries, as its ID, the number
  of the permit this one replaces (``Permit.replaces``). Our reader takes the validity period from
  H/EffectiveSpecifiedPeriod and falls back to the repeated one only when that is absent.
* box 5 special conditions: one H/Information per entry, in order. 5a: H/PurposeCode.
  5b security stamp: H/FirstSignatoryDocumentAuthentication/ID.
* box 6 issuing Management Authority: H/FirstSignatoryDocumentAuthentication/ProviderTradeParty.
* box 13: at = H/IssueLogisticsLocation/Name; on = H/IssueDateTime; by =
  H/ThirdSignatoryDocumentAuthentication/ProviderTradeParty/SpecifiedAuthoritativeSignatoryPerson/Name.
  The four signatory authentications are always written, with TypeCodes A, B, C, D, as in the
  instance.
* boxes 3/4: C/ConsigneeTradeParty (importer), C/ConsignorTradeParty (exporter); a party's
  address is PostalTradeAddress with PostcodeCode, StreetName, CityName, CountryID, CountryName,
  CountrySubDivisionName (instance order).
* per item: ID; all marks as Marking under one PhysicalLogisticsShippingMarks; box 12
  OriginTradeCountry (ID, Name); box 12a ExportTradeCountry (ID, Name); then
  AssociatedReferencedDocument with TypeCode 861 (origin permit) and 811 (last re-export
  certificate), each with IssueDateTime, TypeCode, ID in the instance's order; box 11
  TransportLogisticsPackage/ItemQuantity/@unitCode; box 10 IncludedSupplyChainTradeLineItem/TypeCode
  (Appendix) and TypeExtensionCode (source); boxes 7-9 SpecifiedTradeProduct/Description, TypeCode
  (term), CommonName, ScientificName; box 14 ExaminationTransportEvent (ActualOccurrenceDateTime,
  UnitQuantity/@unitCode, OccurrenceLogisticsLocation/Name) for each endorsed line of that item;
  box 11a ApplicableCrossBorderRegulatoryProcedure/UsedToDateQuotaQuantity, AnnualQuotaQuantity
  with the item's unit as unitCode.
* Endorsed quantities sit inside their items, so EPT v2 does not carry the order of
  ``Endorsement.lines`` across items: a reader gets them back in item order. A line naming an
  item the permit does not have cannot be placed and is refused (PERMIT_INVALID).
* box 14/15 consignment level: C/TransportContractReferencedDocument/ID (bill of lading or air
  waybill) and C/ExaminationTransportEvent with ActualOccurrenceDateTime, OccurrenceLogisticsLocation/Name
  (port) and CertifyingTradeParty/Name (officer).
* SpecifiedExchangedDocumentContext is the instance's constant one (business process "CITES
  Permitting", BIM 09A), minus its empty elements.
* No languageID/listID/schemeID attributes: the instance only carries placeholders ("?") or a
  list (UN/CEFACT 1001) that the CITES codes E/R/I/O do not belong to, and we do not know the
  language of partners' free text. unitCode is the one attribute written.
* Values that are None or empty are omitted, with their element; an aggregate with nothing in it
  is omitted too. Datetimes are ISO 8601 with their own offset (microseconds only when non-zero);
  decimals are written exactly, never through float.

Speed: this is on the hot path, so elements are made with ``etree.SubElement`` (in C) from
names precomputed once as ``QName`` objects, and the constant context is built once with
``ElementMaker`` and deep-copied (also in C). The output has no indentation so that signatures stay stable.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import datetime
from decimal import Decimal

from lxml import etree
from lxml.builder import ElementMaker

from adapters.ns import NSMAP_PERMIT, RAM, RSM
from domain.errors import EpixError, ErrorCode
from domain.model import Address, DocumentRef, EndorsedLine, Endorsement, LineItem, Party, Permit

ORIGIN_PERMIT_TYPE = "861"  # UN/CEFACT 1001: certificate of origin
REEXPORT_PERMIT_TYPE = "811"  # UN/CEFACT 1001 as used by EPIX for the last re-export certificate
SIGNATORY_TYPE_CODES = ("A", "B", "C", "D")  # First .. Fourth SignatoryDocumentAuthentication


# QName objects rather than "{ns}name" strings: lxml then skips re-parsing the name (about a
# third faster per element).
def _rsm(name: str) -> etree.QName:
    return etree.QName(RSM, name)


def _ram(name: str) -> etree.QName:
    return etree.QName(RAM, name)


# rsm (message level)
ROOT = _rsm("CITESEPermit")
CONTEXT = _rsm("SpecifiedExchangedDocumentContext")
HEADER = _rsm("HeaderExchangedDocument")
CONSIGNMENT = _rsm("SpecifiedSupplyChainConsignment")
# ram (aggregates); one constant per element name, shared by every place it occurs
ID = _ram("ID")
NAME = _ram("Name")
TYPE_CODE = _ram("TypeCode")
ISSUE_DATE_TIME = _ram("IssueDateTime")
COPY_INDICATOR = _ram("CopyIndicator")
PURPOSE_CODE = _ram("PurposeCode")
INFORMATION = _ram("Information")
REFERENCE_DOC = _ram("ReferenceReferencedDocument")
EFFECTIVE_PERIOD = _ram("EffectiveSpecifiedPeriod")
START = _ram("StartDateTime")
END = _ram("EndDateTime")
ISSUE_LOCATION = _ram("IssueLogisticsLocation")
SIGNATORIES = tuple(
    _ram(f"{ordinal}SignatoryDocumentAuthentication") for ordinal in ("First", "Second", "Third", "Fourth")
)
PROVIDER_PARTY = _ram("ProviderTradeParty")
ADDRESS = _ram("PostalTradeAddress")
POSTCODE = _ram("PostcodeCode")
STREET = _ram("StreetName")
CITY = _ram("CityName")
COUNTRY_ID = _ram("CountryID")
COUNTRY_NAME = _ram("CountryName")
SUBDIVISION = _ram("CountrySubDivisionName")
SIGNATORY_PERSON = _ram("SpecifiedAuthoritativeSignatoryPerson")
CONSIGNOR = _ram("ConsignorTradeParty")
CONSIGNEE = _ram("ConsigneeTradeParty")
TRANSPORT_DOC = _ram("TransportContractReferencedDocument")
EXAMINATION = _ram("ExaminationTransportEvent")
OCCURRED = _ram("ActualOccurrenceDateTime")
UNIT_QUANTITY = _ram("UnitQuantity")
OCCURRENCE_LOCATION = _ram("OccurrenceLogisticsLocation")
CERTIFYING_PARTY = _ram("CertifyingTradeParty")
ITEM = _ram("IncludedSupplyChainConsignmentItem")
SHIPPING_MARKS = _ram("PhysicalLogisticsShippingMarks")
MARKING = _ram("Marking")
ORIGIN_COUNTRY = _ram("OriginTradeCountry")
EXPORT_COUNTRY = _ram("ExportTradeCountry")
ASSOCIATED_DOC = _ram("AssociatedReferencedDocument")
PACKAGE = _ram("TransportLogisticsPackage")
ITEM_QUANTITY = _ram("ItemQuantity")
TRADE_LINE = _ram("IncludedSupplyChainTradeLineItem")
TYPE_EXTENSION_CODE = _ram("TypeExtensionCode")
PRODUCT = _ram("SpecifiedTradeProduct")
DESCRIPTION = _ram("Description")
COMMON_NAME = _ram("CommonName")
SCIENTIFIC_NAME = _ram("ScientificName")
PROCEDURE = _ram("ApplicableCrossBorderRegulatoryProcedure")
QUOTA_USED = _ram("UsedToDateQuotaQuantity")
QUOTA_ANNUAL = _ram("AnnualQuotaQuantity")
UNIT_CODE = "unitCode"

_SubElement = etree.SubElement


def _constant_context() -> etree._Element:
    rsm = ElementMaker(namespace=RSM, nsmap=NSMAP_PERMIT)
    ram = ElementMaker(namespace=RAM, nsmap=NSMAP_PERMIT)
    return rsm.SpecifiedExchangedDocumentContext(
        ram.BusinessProcessSpecifiedDocumentContextParameter(
            ram.ID("1"),
            ram.Value("CITES Permitting"),
            ram.SpecifiedDocumentVersion(ram.ID("1")),
        ),
        ram.BIMSpecifiedDocumentContextParameter(
            ram.ID("09A"),
            ram.SpecifiedDocumentVersion(ram.ID("1"), ram.IssueDateTime("2009-07-14T00:00:00.000+02:00")),
        ),
    )


_CONTEXT_TEMPLATE = _constant_context()


class _Unwritable(Exception):
    """A value the XML cannot carry; turned into an EpixError naming the field."""

    def __init__(self, what: str, why: str) -> None:
        super().__init__(what, why)
        self.what = what
        self.why = why


def format_datetime(value: datetime, what: str = "datetime") -> str:
    """xs:dateTime with the value's own offset; microseconds only when non-zero."""
    offset = value.utcoffset()
    if offset is None:
        raise _Unwritable(what, "has no time zone; permits cross borders, so every time needs an offset")
    if offset.microseconds or offset.seconds % 60:
        raise _Unwritable(what, "has a time-zone offset with seconds, which xs:dateTime cannot carry")
    return value.isoformat()


def format_decimal(value: Decimal, what: str = "quantity") -> str:
    """xs:decimal text, exact: str() unless Decimal would use an exponent."""
    if not isinstance(value, Decimal):
        raise _Unwritable(what, f"is a {type(value).__name__}, not a Decimal")
    text = str(value)
    if "E" in text:
        if not value.is_finite():
            raise _Unwritable(what, f"is {text}, which is not a number")
        text = format(value, "f")
    elif not value.is_finite():
        raise _Unwritable(what, f"is {text}, which is not a number")
    return text


def _leaf(parent: etree._Element, tag: etree.QName, text: str | None) -> None:
    if text:
        _SubElement(parent, tag).text = text


def _address(parent: etree._Element, address: Address) -> None:
    if not (
        address.postcode or address.street or address.city or address.country or address.country_name or address.subdivision
    ):
        return
    el = _SubElement(parent, ADDRESS)
    _leaf(el, POSTCODE, address.postcode)
    _leaf(el, STREET, address.street)
    _leaf(el, CITY, address.city)
    _leaf(el, COUNTRY_ID, address.country)
    _leaf(el, COUNTRY_NAME, address.country_name)
    _leaf(el, SUBDIVISION, address.subdivision)


def _party(parent: etree._Element, tag: etree.QName, party: Party) -> None:
    if not (party.name or party.id or any(dataclasses.astuple(party.address))):
        return
    el = _SubElement(parent, tag)
    _leaf(el, ID, party.id)
    _leaf(el, NAME, party.name)
    _address(el, party.address)


def _period(parent: etree._Element, start: str, end: str) -> None:
    el = _SubElement(parent, EFFECTIVE_PERIOD)
    _SubElement(el, START).text = start
    _SubElement(el, END).text = end


def _header(root: etree._Element, permit: Permit) -> None:
    h = _SubElement(root, HEADER)
    _leaf(h, ID, permit.number)
    _leaf(h, TYPE_CODE, permit.type)
    _SubElement(h, ISSUE_DATE_TIME).text = format_datetime(permit.issue_date, "the issue date (box 13)")
    _SubElement(h, COPY_INDICATOR).text = "false"
    _leaf(h, PURPOSE_CODE, permit.purpose)
    for condition in permit.special_conditions:
        _leaf(h, INFORMATION, condition)
    start = format_datetime(permit.valid_from, "the start of validity (box 2)")
    end = format_datetime(permit.valid_until, "the end of validity (box 2)")
    reference = _SubElement(h, REFERENCE_DOC)
    _leaf(reference, ID, permit.replaces)
    _period(reference, start, end)
    _period(h, start, end)
    if permit.issued_at:
        _SubElement(_SubElement(h, ISSUE_LOCATION), NAME).text = permit.issued_at
    for tag, type_code in zip(SIGNATORIES, SIGNATORY_TYPE_CODES):
        auth = _SubElement(h, tag)
        _SubElement(auth, TYPE_CODE).text = type_code
        if type_code == "A":
            _leaf(auth, ID, permit.security_stamp)
            _party(auth, PROVIDER_PARTY, permit.authority)
        elif type_code == "C" and permit.signed_by:
            signatory = _SubElement(_SubElement(auth, PROVIDER_PARTY), SIGNATORY_PERSON)
            _SubElement(signatory, NAME).text = permit.signed_by


def _document_ref(parent: etree._Element, ref: DocumentRef | None, type_code: str, what: str) -> None:
    if ref is None or not (ref.number or ref.issue_date):
        return
    el = _SubElement(parent, ASSOCIATED_DOC)
    if ref.issue_date is not None:
        _SubElement(el, ISSUE_DATE_TIME).text = format_datetime(ref.issue_date, what)
    _SubElement(el, TYPE_CODE).text = type_code
    _leaf(el, ID, ref.number)


def _country(parent: etree._Element, tag: etree.QName, code: str | None, name: str | None) -> None:
    if code or name:
        el = _SubElement(parent, tag)
        _leaf(el, ID, code)
        _leaf(el, NAME, name)


def _quantity(parent: etree._Element, tag: etree.QName, value: Decimal, unit: str, what: str) -> None:
    el = _SubElement(parent, tag)
    el.text = format_decimal(value, what)
    el.set(UNIT_CODE, unit)


def _item(
    consignment: etree._Element,
    item: LineItem,
    endorsed: list[EndorsedLine],
    endorsement: Endorsement | None,
    endorsed_on: str | None,
) -> None:
    el = _SubElement(consignment, ITEM)
    _leaf(el, ID, item.id)
    if any(item.marks):
        marks = _SubElement(el, SHIPPING_MARKS)
        for mark in item.marks:
            _leaf(marks, MARKING, mark)
    _country(el, ORIGIN_COUNTRY, item.origin_country, item.origin_country_name)
    _country(el, EXPORT_COUNTRY, item.reexport_country, item.reexport_country_name)
    _document_ref(el, item.origin_permit, ORIGIN_PERMIT_TYPE, f"the origin permit date of item {item.id} (box 12)")
    _document_ref(el, item.reexport_permit, REEXPORT_PERMIT_TYPE, f"the re-export certificate date of item {item.id} (box 12a)")
    _quantity(_SubElement(el, PACKAGE), ITEM_QUANTITY, item.quantity, item.unit, f"the quantity of item {item.id} (box 11)")
    line = _SubElement(el, TRADE_LINE)
    _leaf(line, TYPE_CODE, item.appendix)
    _leaf(line, TYPE_EXTENSION_CODE, item.source)
    product = _SubElement(line, PRODUCT)
    _leaf(product, DESCRIPTION, item.description)
    _leaf(product, TYPE_CODE, item.term)
    _leaf(product, COMMON_NAME, item.common_name)
    _leaf(product, SCIENTIFIC_NAME, item.scientific_name)
    for endorsed_line in endorsed:
        event = _SubElement(el, EXAMINATION)
        _SubElement(event, OCCURRED).text = endorsed_on
        _quantity(event, UNIT_QUANTITY, endorsed_line.quantity, endorsed_line.unit, f"the endorsed quantity of item {item.id} (box 14)")
        if endorsement is not None and endorsement.port:
            _SubElement(_SubElement(event, OCCURRENCE_LOCATION), NAME).text = endorsement.port
    if item.quota_used is not None or item.quota_annual is not None:
        procedure = _SubElement(el, PROCEDURE)
        if item.quota_used is not None:
            _quantity(procedure, QUOTA_USED, item.quota_used, item.unit, f"the quota used of item {item.id} (box 11a)")
        if item.quota_annual is not None:
            _quantity(procedure, QUOTA_ANNUAL, item.quota_annual, item.unit, f"the annual quota of item {item.id} (box 11a)")


def _consignment(root: etree._Element, permit: Permit) -> None:
    c = _SubElement(root, CONSIGNMENT)
    _party(c, CONSIGNOR, permit.exporter)
    _party(c, CONSIGNEE, permit.importer)
    endorsement = permit.endorsement
    endorsed_on = None
    by_item: dict[str, list[EndorsedLine]] = {}
    if endorsement is not None:
        endorsed_on = format_datetime(endorsement.date, "the endorsement date (box 14)")
        if endorsement.transport_document:
            _SubElement(_SubElement(c, TRANSPORT_DOC), ID).text = endorsement.transport_document
        event = _SubElement(c, EXAMINATION)
        _SubElement(event, OCCURRED).text = endorsed_on
        if endorsement.port:
            _SubElement(_SubElement(event, OCCURRENCE_LOCATION), NAME).text = endorsement.port
        if endorsement.officer:
            _SubElement(_SubElement(event, CERTIFYING_PARTY), NAME).text = endorsement.officer
        item_ids = {item.id for item in permit.items}
        for endorsed_line in endorsement.lines:
            if endorsed_line.item_id not in item_ids:
                raise EpixError(
                    ErrorCode.PERMIT_INVALID,
                    f"The endorsement (box 14) names item {endorsed_line.item_id!r}, which permit {permit.number} does not have.",
                    item_id=endorsed_line.item_id,
                )
            by_item.setdefault(endorsed_line.item_id, []).append(endorsed_line)
    no_lines: list[EndorsedLine] = []
    for item in permit.items:
        _item(c, item, by_item.get(item.id, no_lines), endorsement, endorsed_on)


def permit_to_element(permit: Permit) -> etree._Element:
    """The ``rsm:CITESEPermit`` element for a permit; raises EpixError(PERMIT_INVALID) for values XML cannot carry."""
    try:
        root = etree.Element(ROOT, nsmap=NSMAP_PERMIT)
        root.append(copy.deepcopy(_CONTEXT_TEMPLATE))
        _header(root, permit)
        _consignment(root, permit)
    except _Unwritable as exc:
        raise EpixError(
            ErrorCode.PERMIT_INVALID,
            f"Permit {permit.number!r} cannot be written as CITESEPermit XML: {exc.what} {exc.why}.",
            field=exc.what,
        ) from None
    except (ValueError, TypeError) as exc:
        # lxml refuses text with characters XML 1.0 cannot hold (control characters, U+FFFE ...).
        raise EpixError(
            ErrorCode.PERMIT_INVALID,
            f"Permit {getattr(permit, 'number', '?')!r} cannot be written as CITESEPermit XML: {exc}.",
        ) from None
    return root


def permit_to_xml(permit: Permit) -> bytes:
    """UTF-8 bytes with an XML declaration and no indentation (stable input for signing)."""
    return etree.tostring(permit_to_element(permit), xml_declaration=True, encoding="UTF-8")
