"""EPIX Connect-compatible SOAP 1.1 documents (namespace ``urn:CitesDataExchange/v2/``).

Responses are shaped like the real ``GetNonFinalCitesCertificateResponse`` (see the fixture in
``../shared/ref/schemas/unepwcmc-epix/spec/fixtures/v2``): ``soapenv:Envelope`` / empty Header /
Body / ``v2:<Operation>Response`` / an UNQUALIFIED ``<CITESEPermit>`` whose children are in the
CITESEPermit:2 namespace, so a client built against EPIX reads ours unchanged (our own reader,
``adapters.cites_read``, reads both).

The request side of the WSDL is not public; we accept the operation element with its parameters
as child elements of any namespace, by local name: the permit number as ``CertificateNumber``
(or ``PermitNumber`` / ``DocumentNumber``), the issuing country as ``ExportCountryCode`` (or
``IssuingCountry`` / ``CountryCode``), optionally ``SecurityStamp``; ``ConfirmQuantities``
carries a ``CITESEPermit`` with box 14 filled (ExaminationTransportEvent) and optionally a
``DeclarationReference``. Every request goes through ``parse_xml``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from lxml import etree

from adapters.cites_read import read_permit
from adapters.cites_write import permit_to_element
from adapters.ns import DS, EPIX_V2, RAM, RSM, SOAP11
from adapters.xmlparse import XmlLimits, parse_xml
from domain.errors import EpixError, ErrorCode
from domain.model import Permit

OPERATIONS = ("GetNonFinalCitesCertificate", "GetFinalCitesCertificate", "ConfirmQuantities")
_NUMBER = ("CertificateNumber", "PermitNumber", "DocumentNumber")
_COUNTRY = ("ExportCountryCode", "IssuingCountry", "CountryCode")
NSMAP = {"soapenv": SOAP11, "v2": EPIX_V2, "urn": RSM, "urn1": RAM}


@dataclass(frozen=True, slots=True)
class SoapRequest:
    operation: str
    number: str | None = None
    issuer: str | None = None
    stamp: str | None = None
    permit: Permit | None = None  # ConfirmQuantities: the permit with box 14
    declaration: str | None = None


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _param(op: etree._Element, names: tuple[str, ...]) -> str | None:
    for child in op.iterchildren(etree.Element):
        if _local(child) in names and child.text and child.text.strip():
            return child.text.strip()
    return None


def read_request(body: bytes, *, max_bytes: int) -> SoapRequest:
    tree = parse_xml(body, limits=XmlLimits(max_bytes=max_bytes), what="SOAP request")
    root = tree.getroot()
    if root.tag != etree.QName(SOAP11, "Envelope").text:
        raise EpixError(ErrorCode.ENVELOPE_INVALID, "The request is not a SOAP 1.1 envelope.")
    body_el = root.find(etree.QName(SOAP11, "Body").text)
    op = None if body_el is None else next(body_el.iterchildren(etree.Element), None)
    if op is None:
        raise EpixError(ErrorCode.ENVELOPE_INVALID, "The SOAP Body is empty.")
    qname = etree.QName(op)
    if qname.namespace != EPIX_V2 or qname.localname not in OPERATIONS:
        raise EpixError(
            ErrorCode.ENVELOPE_INVALID,
            f"Unknown operation {{{qname.namespace}}}{qname.localname}; this facade offers {', '.join(OPERATIONS)} in {EPIX_V2}.",
        )
    if qname.localname == "ConfirmQuantities":
        permit = read_permit(tree)
        return SoapRequest(
            operation=qname.localname, number=permit.number, issuer=permit.issuing_country, permit=permit,
            declaration=_param(op, ("DeclarationReference",)),
        )  # fmt: skip
    number, issuer = _param(op, _NUMBER), _param(op, _COUNTRY)
    if not number or not issuer:
        raise EpixError(
            ErrorCode.ENVELOPE_INVALID,
            f"{qname.localname} needs CertificateNumber and ExportCountryCode (the issuing country).",
        )
    return SoapRequest(qname.localname, number=number, issuer=issuer, stamp=_param(op, ("SecurityStamp",)))


def _unqualified(permit_root: etree._Element) -> etree._Element:
    """``rsm:CITESEPermit`` -> unqualified ``CITESEPermit``, children kept, any signature dropped
    (EPIX responses are not signed documents; the signed permit stays available as XML)."""
    out = etree.Element("CITESEPermit")
    for child in permit_root.iterchildren(etree.Element):
        if etree.QName(child).namespace != DS:
            out.append(copy.deepcopy(child))
    return out


def build_permit_response(operation: str, permit: Permit) -> bytes:
    envelope = etree.Element(etree.QName(SOAP11, "Envelope"), nsmap=NSMAP)
    etree.SubElement(envelope, etree.QName(SOAP11, "Header"))
    body = etree.SubElement(envelope, etree.QName(SOAP11, "Body"))
    response = etree.SubElement(body, etree.QName(EPIX_V2, f"{operation}Response"))
    response.append(_unqualified(permit_to_element(permit)))
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def build_fault(error: EpixError) -> bytes:
    envelope = etree.Element(etree.QName(SOAP11, "Envelope"), nsmap={"soapenv": SOAP11})
    body = etree.SubElement(envelope, etree.QName(SOAP11, "Body"))
    fault = etree.SubElement(body, etree.QName(SOAP11, "Fault"))
    etree.SubElement(fault, "faultcode").text = "soapenv:Server" if error.status >= 500 else "soapenv:Client"
    etree.SubElement(fault, "faultstring").text = error.detail
    detail = etree.SubElement(fault, "detail")
    etree.SubElement(detail, "code").text = error.code.name
    if isinstance(error.context.get("verdict"), str):  # a verification's verdict, as the JSON API names it
        etree.SubElement(detail, "verdict").text = error.context["verdict"]
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
