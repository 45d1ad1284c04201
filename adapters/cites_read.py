"""UN/CEFACT CITES e-permit XML -> canonical ``Permit``.

Reads four shapes of the same permit:

* ``ept2``: our own ``rsm:CITESEPermit`` root (EPT v2), with or without an enveloped ``ds:Signature``
  (the signature is not looked at here: ``keys`` verifies it and hands over what was signed);
* ``ept1``: an EPT v1 ``CBFShip`` root (``urn:un:unece:uncefact:data:draft:CBFShip:1``);
* ``epix-soap-v2`` / ``epix-soap-v1``: an EPIX ``soapenv:Envelope`` whose Body holds a response
  (e.g. ``GetNonFinalCitesCertificateResponse``) with an unqualified ``<CITESEPermit>`` or
  ``<CBFShip>`` element whose children are namespaced.

The mapping is the writer's (see ``adapters.cites_write``). EPT v1 differs in three places: an
address carries its country as PostalTradeAddress/CountryIdentificationTradeCountry/ID and Name
(with SubordinateTradeCountrySubDivision/Name), the quota procedure is
ApplicableCrossBorderGovernmentProcedure, and an examination event's quantity is
InspectedUnitQuantity.

Empty elements (the EPIX fixtures are full of them) read as absent. Values are kept as found
(placeholder countries, retired units such as PCS): ``domain.rules`` judges them. A value the
canonical model cannot do without, or a date or number that does not parse, is an
``EpixError(SCHEMA_INVALID)`` whose sentence and ``path`` name the element. Navigation is by
direct children with precomputed names; no XPath is built from input.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from lxml import etree

from adapters.ns import CBFSHIP, RAM, RSM, SOAP11
from adapters.xmlparse import parse_xml
from domain.errors import EpixError, ErrorCode
from domain.model import Address, DocumentRef, EndorsedLine, Endorsement, LineItem, Party, Permit

ORIGIN_PERMIT_TYPE = "861"
REEXPORT_PERMIT_TYPE = "811"

FORMATS = ("ept2", "ept1", "epix-soap-v2", "epix-soap-v1")


def _ram(name: str) -> str:
    return etree.QName(RAM, name).text


_ENVELOPE = etree.QName(SOAP11, "Envelope").text
_BODY = etree.QName(SOAP11, "Body").text
_FAULT = etree.QName(SOAP11, "Fault").text
# The permit element's own name and the namespace of its direct children, per version.
_VERSIONS = {
    "CITESEPermit": ("ept2", RSM),
    "CBFShip": ("ept1", CBFSHIP),
}
_ROOT_NAMESPACES = {"ept2": ("", RSM), "ept1": ("", CBFSHIP)}

ID = _ram("ID")
NAME = _ram("Name")
TYPE_CODE = _ram("TypeCode")
ISSUE_DATE_TIME = _ram("IssueDateTime")
PURPOSE_CODE = _ram("PurposeCode")
INFORMATION = _ram("Information")
REFERENCE_DOC = _ram("ReferenceReferencedDocument")
EFFECTIVE_PERIOD = _ram("EffectiveSpecifiedPeriod")
START = _ram("StartDateTime")
END = _ram("EndDateTime")
ISSUE_LOCATION = _ram("IssueLogisticsLocation")
FIRST_SIGNATORY = _ram("FirstSignatoryDocumentAuthentication")
THIRD_SIGNATORY = _ram("ThirdSignatoryDocumentAuthentication")
PROVIDER_PARTY = _ram("ProviderTradeParty")
ADDRESS = _ram("PostalTradeAddress")
POSTCODE = _ram("PostcodeCode")
STREET = _ram("StreetName")
CITY = _ram("CityName")
COUNTRY_ID = _ram("CountryID")
COUNTRY_NAME = _ram("CountryName")
SUBDIVISION = _ram("CountrySubDivisionName")
V1_COUNTRY = _ram("CountryIdentificationTradeCountry")
V1_SUBDIVISION = _ram("SubordinateTradeCountrySubDivision")
SIGNATORY_PERSON = _ram("SpecifiedAuthoritativeSignatoryPerson")
CONSIGNOR = _ram("ConsignorTradeParty")
CONSIGNEE = _ram("ConsigneeTradeParty")
TRANSPORT_DOC = _ram("TransportContractReferencedDocument")
EXAMINATION = _ram("ExaminationTransportEvent")
OCCURRED = _ram("ActualOccurrenceDateTime")
UNIT_QUANTITY = _ram("UnitQuantity")
V1_UNIT_QUANTITY = _ram("InspectedUnitQuantity")
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
V1_PROCEDURE = _ram("ApplicableCrossBorderGovernmentProcedure")
QUOTA_USED = _ram("UsedToDateQuotaQuantity")
QUOTA_ANNUAL = _ram("AnnualQuotaQuantity")

# xs:dateTime, strictly: Python's fromisoformat also takes forms XML Schema refuses.
_DATETIME = re.compile(
    r"(-?\d{4,})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?",
    re.ASCII,
)
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)


# ---------------------------------------------------------------------------------------------
# Finding the permit element


def _local(tag: object) -> tuple[str, str]:
    if not isinstance(tag, str):
        return ("", "")  # comment or processing instruction
    if tag[:1] == "{":
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def _locate(root: etree._Element) -> tuple[str, etree._Element, str]:
    """(format, permit element, namespace of its children) or NOT_A_PERMIT."""
    ns, name = _local(root.tag)
    version = _VERSIONS.get(name)
    if version is not None and ns in _ROOT_NAMESPACES[version[0]]:
        return version[0], root, version[1]
    if root.tag != _ENVELOPE:
        shown = f"{{{ns}}}{name}" if ns else name
        raise EpixError(
            ErrorCode.NOT_A_PERMIT,
            f"The document's root element is <{shown}>; a CITES e-permit is rsm:CITESEPermit (EPT v2), "
            "CBFShip (EPT v1) or an EPIX SOAP response holding one of them.",
            root=shown,
        )
    body = next(root.iterchildren(_BODY), None)
    response = None if body is None else next(body.iterchildren(etree.Element), None)
    if response is None:
        raise EpixError(ErrorCode.NOT_A_PERMIT, "The SOAP envelope has an empty Body: it carries no permit.")
    if response.tag == _FAULT:
        fault = _text(next(response.iterchildren("faultstring"), None))
        raise EpixError(
            ErrorCode.NOT_A_PERMIT,
            f"The SOAP response is a fault, not a permit: {fault or 'no fault string'}.",
            fault=fault,
        )
    candidates = [response, *response.iterchildren(etree.Element)]
    for candidate in candidates:
        ns, name = _local(candidate.tag)
        version = _VERSIONS.get(name)
        if version is not None and ns in _ROOT_NAMESPACES[version[0]]:
            # The wrapped element decides (the response's own namespace, urn:CitesDataExchange/v1/
            # or v2/, follows it in EPIX's two services).
            return ("epix-soap-v2" if version[0] == "ept2" else "epix-soap-v1"), candidate, version[1]
    shown = _local(response.tag)[1]
    raise EpixError(
        ErrorCode.NOT_A_PERMIT,
        f"The SOAP Body holds <{shown}> with no CITESEPermit or CBFShip element in it.",
        root=shown,
    )


def _as_root(data: bytes | etree._ElementTree | etree._Element) -> etree._Element:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return parse_xml(bytes(data), what="permit").getroot()
    if isinstance(data, etree._ElementTree):
        return data.getroot()
    if isinstance(data, etree._Element):
        return data
    raise TypeError("read_permit takes XML bytes or an lxml tree")


def detect_format(data: bytes | etree._ElementTree | etree._Element) -> str:
    """One of FORMATS ("ept2", "ept1", "epix-soap-v2", "epix-soap-v1"), or EpixError(NOT_A_PERMIT)."""
    return _locate(_as_root(data))[0]


# ---------------------------------------------------------------------------------------------
# Values


def _path(el: etree._Element, missing: str | None = None) -> str:
    """A readable path such as CITESEPermit/SpecifiedSupplyChainConsignment/IncludedSupplyChainConsignmentItem[2]/ID."""
    parts = []
    node = el
    while node is not None:
        name = _local(node.tag)[1]
        parent = node.getparent()
        if name in _VERSIONS or parent is None:
            parts.append(name)
            break
        same = [s for s in parent.iterchildren(node.tag)]
        parts.append(f"{name}[{same.index(node) + 1}]" if len(same) > 1 else name)
        node = parent
    parts.reverse()
    if missing:
        parts.append(_local(missing)[1])
    return "/".join(parts)


def _invalid(el: etree._Element, missing: str | None, sentence: str) -> EpixError:
    path = _path(el, missing)
    return EpixError(ErrorCode.SCHEMA_INVALID, sentence.format(path=path), path=path)


def _text(el: etree._Element | None) -> str | None:
    """Stripped text, or None when the element is absent or empty; comments inside are skipped."""
    if el is None:
        return None
    # A comment splits the text into several nodes; read them all, as canonicalisation (and so
    # the signature) does, instead of stopping at the first.
    text = "".join(el.itertext()) if len(el) else el.text
    if not text:
        return None
    text = text.strip()
    return text or None


def _child(el: etree._Element | None, tag: str) -> etree._Element | None:
    if el is None:
        return None
    return next(el.iterchildren(tag), None)


def _value(el: etree._Element | None, tag: str) -> str | None:
    """Text of the first child named ``tag`` that carries one (EPIX repeats many elements)."""
    if el is None:
        return None
    for child in el.iterchildren(tag):
        text = _text(child)
        if text is not None:
            return text
    return None


def _required(el: etree._Element, tag: str, what: str) -> str:
    text = _value(el, tag)
    if text is None:
        raise _invalid(el, tag, f"The {what} is missing: {{path}} is absent or empty.")
    return text


def _parse_datetime(el: etree._Element, text: str, what: str) -> datetime:
    m = _DATETIME.fullmatch(text)
    if m is None:
        raise _invalid(el, None, f"The {what} at {{path}} is {text!r}, which is not an xs:dateTime such as 2024-05-01T10:00:00+02:00.")
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    if zone is None:
        raise _invalid(el, None, f"The {what} at {{path}} ({text}) has no time-zone offset; permits cross borders, so one is required.")
    if zone == "Z":
        tz = timezone.utc
    else:
        sign = -1 if zone[0] == "-" else 1
        tz_hours, tz_minutes = int(zone[1:3]), int(zone[4:6])
        if tz_hours > 14 or tz_minutes > 59:
            raise _invalid(el, None, f"The {what} at {{path}} has an impossible time-zone offset {zone}.")
        tz = timezone(sign * timedelta(hours=tz_hours, minutes=tz_minutes))
    # Digits past microseconds are dropped: Python's datetime holds no finer time.
    microsecond = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        hour_value = int(hour)
        end_of_day = hour_value == 24 and minute == "00" and second == "00" and microsecond == 0
        value = datetime(int(year), int(month), int(day), 0 if end_of_day else hour_value, int(minute), int(second), microsecond, tz)
        return value + timedelta(days=1) if end_of_day else value
    except (ValueError, OverflowError):
        raise _invalid(el, None, f"The {what} at {{path}} is {text!r}, which is not a real date and time.") from None


def _datetime(parent: etree._Element | None, tag: str, what: str, *, required: bool = False) -> datetime | None:
    if parent is None:
        return None
    for child in parent.iterchildren(tag):
        text = _text(child)
        if text is not None:
            return _parse_datetime(child, text, what)
    if required:
        raise _invalid(parent, tag, f"The {what} is missing: {{path}} is absent or empty.")
    return None


def _parse_decimal(el: etree._Element, text: str, what: str) -> Decimal:
    if _DECIMAL.fullmatch(text) is None:
        raise _invalid(el, None, f"The {what} at {{path}} is {text!r}, which is not a decimal number.")
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern above admits only valid decimals
        raise _invalid(el, None, f"The {what} at {{path}} is {text!r}, which is not a decimal number.") from None


def _quantity(el: etree._Element, what: str) -> tuple[Decimal, str] | None:
    """(value, unitCode) of a quantity element, None when it is empty; the unit is required."""
    text = _text(el)
    if text is None:
        return None
    value = _parse_decimal(el, text, what)
    unit = (el.get("unitCode") or "").strip()
    if not unit or unit == "?":
        raise _invalid(el, None, f"The {what} at {{path}} has no unitCode.")
    return value, unit


def _first_quantity(parent: etree._Element | None, tag: str, what: str) -> tuple[Decimal, str] | None:
    if parent is None:
        return None
    for child in parent.iterchildren(tag):
        found = _quantity(child, what)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------------
# Aggregates


def _address(el: etree._Element | None) -> Address:
    if el is None:
        return Address()
    country = _child(el, V1_COUNTRY)
    if country is not None:  # EPT v1
        country_id = _value(country, ID)
        country_name = _value(country, NAME)
        subdivision = _value(_child(country, V1_SUBDIVISION), NAME)
    else:
        country_id = _value(el, COUNTRY_ID)
        country_name = _value(el, COUNTRY_NAME)
        subdivision = _value(el, SUBDIVISION)
    return Address(
        street=_value(el, STREET),
        city=_value(el, CITY),
        postcode=_value(el, POSTCODE),
        country=country_id,
        country_name=country_name,
        subdivision=subdivision,
    )


def _party(parent: etree._Element, tag: str, what: str) -> Party:
    el = _child(parent, tag)
    if el is None:
        raise _invalid(parent, tag, f"The {what} is missing: {{path}} is absent.")
    return Party(
        name=_required(el, NAME, f"{what}'s name"),
        address=_address(_child(el, ADDRESS)),
        id=_value(el, ID),
    )


def _document_refs(item: etree._Element) -> dict[str, DocumentRef]:
    refs: dict[str, DocumentRef] = {}
    for doc in item.iterchildren(ASSOCIATED_DOC):
        type_code = _value(doc, TYPE_CODE)
        if type_code not in (ORIGIN_PERMIT_TYPE, REEXPORT_PERMIT_TYPE) or type_code in refs:
            continue
        what = "origin permit's issue date" if type_code == ORIGIN_PERMIT_TYPE else "re-export certificate's issue date"
        ref = DocumentRef(number=_value(doc, ID), issue_date=_datetime(doc, ISSUE_DATE_TIME, what))
        if ref.number is not None or ref.issue_date is not None:
            refs[type_code] = ref
    return refs


def _item(el: etree._Element, quantity_tag: str) -> tuple[LineItem, list[EndorsedLine], dict[str, object] | None]:
    item_id = _required(el, ID, "line item's ID (A, B, C ...)")
    what = f"item {item_id}"
    line = _child(el, TRADE_LINE)
    if line is None:
        raise _invalid(el, TRADE_LINE, f"The species, Appendix and source of {what} are missing: {{path}} is absent.")
    product = _child(line, PRODUCT)
    if product is None:
        raise _invalid(line, PRODUCT, f"The species of {what} is missing: {{path}} is absent.")
    quantity = _first_quantity(_child(el, PACKAGE), ITEM_QUANTITY, f"quantity of {what} (box 11)")
    if quantity is None:
        package = _child(el, PACKAGE)
        if package is None:
            raise _invalid(el, PACKAGE, f"The quantity of {what} (box 11) is missing: {{path}} is absent.")
        raise _invalid(package, ITEM_QUANTITY, f"The quantity of {what} (box 11) is missing: {{path}} is absent or empty.")
    origin = _child(el, ORIGIN_COUNTRY)
    export = _child(el, EXPORT_COUNTRY)
    refs = _document_refs(el)
    procedure = _child(el, PROCEDURE)
    if procedure is None:
        procedure = _child(el, V1_PROCEDURE)
    quota_used = _first_quantity(procedure, QUOTA_USED, f"quota used to date of {what} (box 11a)")
    quota_annual = _first_quantity(procedure, QUOTA_ANNUAL, f"annual quota of {what} (box 11a)")
    item = LineItem(
        id=item_id,
        scientific_name=_required(product, SCIENTIFIC_NAME, f"scientific name of {what} (box 7/8)"),
        term=_required(product, TYPE_CODE, f"term code of {what} (box 9)"),
        appendix=_required(line, TYPE_CODE, f"Appendix of {what} (box 10)"),
        source=_required(line, TYPE_EXTENSION_CODE, f"source code of {what} (box 10)"),
        quantity=quantity[0],
        unit=quantity[1],
        common_name=_value(product, COMMON_NAME),
        description=_value(product, DESCRIPTION),
        origin_country=_value(origin, ID),
        origin_country_name=_value(origin, NAME),
        origin_permit=refs.get(ORIGIN_PERMIT_TYPE),
        reexport_country=_value(export, ID),
        reexport_country_name=_value(export, NAME),
        reexport_permit=refs.get(REEXPORT_PERMIT_TYPE),
        quota_used=None if quota_used is None else quota_used[0],
        quota_annual=None if quota_annual is None else quota_annual[0],
        marks=tuple(
            mark for marks in el.iterchildren(SHIPPING_MARKS) for mark in map(_text, marks.iterchildren(MARKING)) if mark is not None
        ),
    )
    endorsed: list[EndorsedLine] = []
    first_event: dict[str, object] | None = None
    for event in el.iterchildren(EXAMINATION):
        found = _first_quantity(event, quantity_tag, f"endorsed quantity of {what} (box 14)")
        if found is None:
            continue
        endorsed.append(EndorsedLine(item_id=item_id, quantity=found[0], unit=found[1]))
        if first_event is None:
            first_event = {
                "date": _datetime(event, OCCURRED, f"endorsement date of {what} (box 14)"),
                "port": _value(_child(event, OCCURRENCE_LOCATION), NAME),
                "element": event,
            }
    return item, endorsed, first_event


def _endorsement(
    consignment: etree._Element, lines: list[EndorsedLine], item_event: dict[str, object] | None
) -> Endorsement | None:
    event = None
    for candidate in consignment.iterchildren(EXAMINATION):
        if _value(candidate, OCCURRED) or _value(_child(candidate, OCCURRENCE_LOCATION), NAME):
            event = candidate
            break
    if event is not None:
        date = _datetime(event, OCCURRED, "endorsement date (box 14)", required=True)
        location = _child(event, OCCURRENCE_LOCATION)
        if location is None:
            raise _invalid(event, OCCURRENCE_LOCATION, "The port of the endorsement (box 14) is missing: {path} is absent.")
        port = _required(location, NAME, "port of the endorsement (box 14)")
        officer = _value(_child(event, CERTIFYING_PARTY), NAME)
    elif lines and item_event is not None:
        # Quantities endorsed per item but no consignment-level event: take date and port from
        # the first item's event rather than drop what customs recorded.
        element = item_event["element"]
        assert isinstance(element, etree._Element)
        date, port, officer = item_event["date"], item_event["port"], None
        if date is None:
            raise _invalid(element, OCCURRED, "The endorsement date (box 14) is missing: {path} is absent or empty.")
        if port is None:
            raise _invalid(element, OCCURRENCE_LOCATION, "The port of the endorsement (box 14) is missing: {path} is absent or empty.")
    else:
        return None
    assert isinstance(date, datetime) and isinstance(port, str)
    return Endorsement(
        date=date,
        port=port,
        lines=tuple(lines),
        transport_document=_value(_child(consignment, TRANSPORT_DOC), ID),
        officer=officer,
    )


def _permit(el: etree._Element, top_ns: str, version: str) -> Permit:
    header_tag = etree.QName(top_ns, "HeaderExchangedDocument").text
    consignment_tag = etree.QName(top_ns, "SpecifiedSupplyChainConsignment").text
    header = _child(el, header_tag)
    if header is None:
        raise _invalid(el, header_tag, "The permit has no header: {path} is absent.")
    consignment = _child(el, consignment_tag)
    if consignment is None:
        raise _invalid(el, consignment_tag, "The permit has no consignment: {path} is absent.")

    period = _child(header, EFFECTIVE_PERIOD)
    if period is None or (_value(period, START) is None and _value(period, END) is None):
        # EPIX repeats the validity period under ReferenceReferencedDocument; use it if that is all there is.
        for reference in header.iterchildren(REFERENCE_DOC):
            repeated = _child(reference, EFFECTIVE_PERIOD)
            if repeated is not None and (_value(repeated, START) or _value(repeated, END)):
                period = repeated
                break
    if period is None:
        raise _invalid(header, EFFECTIVE_PERIOD, "The validity period (box 2) is missing: {path} is absent.")
    first = _child(header, FIRST_SIGNATORY)
    if first is None:
        raise _invalid(header, FIRST_SIGNATORY, "The issuing Management Authority (box 6) is missing: {path} is absent.")
    replaces = None
    for reference in header.iterchildren(REFERENCE_DOC):
        replaces = _value(reference, ID)
        if replaces is not None:
            break
    third = _child(header, THIRD_SIGNATORY)
    signed_by = None
    if third is not None:
        provider = _child(third, PROVIDER_PARTY)
        for person in provider.iterchildren(SIGNATORY_PERSON) if provider is not None else ():
            signed_by = _value(person, NAME)
            if signed_by is not None:
                break

    quantity_tag = UNIT_QUANTITY if version == "ept2" else V1_UNIT_QUANTITY
    items: list[LineItem] = []
    endorsed: list[EndorsedLine] = []
    item_event = None
    for item_el in consignment.iterchildren(ITEM):
        item, lines, event = _item(item_el, quantity_tag)
        items.append(item)
        endorsed.extend(lines)
        if item_event is None:
            item_event = event
    if not items:
        raise _invalid(consignment, ITEM, "The permit lists no specimens: {path} is absent.")

    return Permit(
        number=_required(header, ID, "permit number (box 1)"),
        type=_required(header, TYPE_CODE, "document type (box 1)"),
        authority=_party(first, PROVIDER_PARTY, "issuing Management Authority (box 6)"),
        issue_date=_datetime(header, ISSUE_DATE_TIME, "issue date (box 13)", required=True),  # type: ignore[arg-type]
        valid_from=_datetime(period, START, "start of validity (box 2)", required=True),  # type: ignore[arg-type]
        valid_until=_datetime(period, END, "end of validity (box 2)", required=True),  # type: ignore[arg-type]
        purpose=_required(header, PURPOSE_CODE, "purpose code (box 5a)"),
        exporter=_party(consignment, CONSIGNOR, "exporter (box 4, ConsignorTradeParty)"),
        importer=_party(consignment, CONSIGNEE, "importer (box 3, ConsigneeTradeParty)"),
        items=tuple(items),
        special_conditions=tuple(t for t in map(_text, header.iterchildren(INFORMATION)) if t is not None),
        security_stamp=_value(first, ID),
        replaces=replaces,
        issued_at=_value(_child(header, ISSUE_LOCATION), NAME),
        signed_by=signed_by,
        endorsement=_endorsement(consignment, endorsed, item_event),
    )


def read_permit(data: bytes | etree._ElementTree | etree._Element) -> Permit:
    """The canonical permit from EPT v2, EPT v1 or an EPIX SOAP response.

    Bytes go through the hardened parser. Raises EpixError: NOT_A_PERMIT for any other
    document, SCHEMA_INVALID (with ``path``) for a missing required value or one that does not
    parse, and the parser's own codes for XML that is refused.
    """
    version, el, top_ns = _locate(_as_root(data))
    return _permit(el, top_ns, "ept1" if version in ("ept1", "epix-soap-v1") else "ept2")
