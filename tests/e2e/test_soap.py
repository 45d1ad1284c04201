"""The EPIX Connect-compatible SOAP facade: requests shaped like EPIX's, answers shaped like the
real GetNonFinalCitesCertificateResponse (read from ../shared/ref), box 14 round trip."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal

from lxml import etree

from adapters.cites_read import read_permit
from adapters.epix_soap import _unqualified
from adapters.cites_write import permit_to_element
from adapters.ns import EPIX_V2, SOAP11
from adapters.xmlparse import parse_xml
from domain.model import EndorsedLine, Endorsement
from tests.conftest import ref_file
from tests.e2e.conftest import FINAL, customs_permit

SOAP_NS = f'xmlns:soapenv="{SOAP11}" xmlns:v2="{EPIX_V2}"'


def _get(operation: str, number: str, issuer: str = "CH") -> bytes:
    return (
        f'<soapenv:Envelope {SOAP_NS}><soapenv:Header/><soapenv:Body><v2:{operation}>'
        f"<CertificateNumber>{number}</CertificateNumber><ExportCountryCode>{issuer}</ExportCountryCode>"
        f"</v2:{operation}></soapenv:Body></soapenv:Envelope>"
    ).encode()


async def _post(customs, body: bytes, token: str = "fr-customs"):
    async with customs.http.post(
        f"{customs.url('FR')}/epix/v2", data=body,
        headers={"Authorization": f"Bearer tok-{token}", "Content-Type": "text/xml", "SOAPAction": "x"},
    ) as resp:  # fmt: skip
        return resp.status, await resp.read()


def _shape(root: etree._Element, response: str):
    body = root.find(f"{{{SOAP11}}}Body")
    wrapper = body[0]
    assert wrapper.tag == f"{{{EPIX_V2}}}{response}"
    permit = wrapper.find("CITESEPermit")  # unqualified, as in EPIX
    assert permit is not None
    return [etree.QName(c).text for c in permit if isinstance(c.tag, str)]


async def test_get_non_final_answers_like_epix(customs):
    permit = customs_permit("CH26-200001")
    await customs.deliver(permit)
    status, xml = await _post(customs, _get("GetNonFinalCitesCertificate", permit.number))
    assert status == 200, xml
    ours = parse_xml(xml).getroot()
    reference = parse_xml(ref_file("schemas", "unepwcmc-epix", "spec", "fixtures", "v2", "get_non_final_cites_certificate.xml").read_bytes()).getroot()
    assert ours.find(f"{{{SOAP11}}}Header") is not None
    assert _shape(ours, "GetNonFinalCitesCertificateResponse") == _shape(reference, "GetNonFinalCitesCertificateResponse")
    read = read_permit(parse_xml(xml))
    assert read.number == permit.number and read.items == permit.items and read.endorsement is None
    # The facade's lookups are verifications too: audited.
    status, h = await customs.call("FR", "GET", f"/v1/verifications/CH/{permit.number}/history", token="fr-customs")
    assert [v["verdict"] for v in h["verifications"]] == ["VALID"]


async def test_confirm_quantities_then_final_certificate(customs):
    permit = customs_permit("CH26-200002")
    await customs.deliver(permit)
    a = permit.items[0]
    endorsed = replace(
        permit,
        endorsement=Endorsement(
            date=datetime.now(timezone.utc).replace(microsecond=0), port="Paris-Orly",
            lines=(EndorsedLine("A", a.quantity - 1, a.unit),), transport_document="AWB 057-99999999",
        ),
    )  # fmt: skip
    request = etree.Element(f"{{{SOAP11}}}Envelope", nsmap={"soapenv": SOAP11, "v2": EPIX_V2})
    etree.SubElement(request, f"{{{SOAP11}}}Header")
    op = etree.SubElement(etree.SubElement(request, f"{{{SOAP11}}}Body"), f"{{{EPIX_V2}}}ConfirmQuantities")
    op.append(_unqualified(permit_to_element(endorsed)))
    etree.SubElement(op, "DeclarationReference").text = "FR-EPIX-1"
    body = etree.tostring(request)
    for _ in range(2):  # the retry of the same confirmation writes nothing more
        status, xml = await _post(customs, body)
        assert status == 200, xml
    final = read_permit(parse_xml(xml))
    assert final.endorsement.lines == (EndorsedLine("A", a.quantity - 1, a.unit),)
    status, xml = await _post(customs, _get("GetFinalCitesCertificate", permit.number))
    assert status == 200
    final = read_permit(parse_xml(xml))
    assert final.endorsement.port == "Paris-Orly" and final.endorsement.lines[0].quantity == a.quantity - 1
    _, v = await customs.verify("FR", "CH", permit.number)
    assert Decimal(v["permit"]["lines"][0]["remaining"]) == 1


async def test_faults(customs):
    status, xml = await _post(customs, _get("GetNonFinalCitesCertificate", "CH26-NOPE"))
    root = parse_xml(xml).getroot()
    assert status == 500 and root.findtext(f".//{{{SOAP11}}}Fault/detail/code") == "NOT_FOUND"
    status, xml = await _post(customs, f'<soapenv:Envelope {SOAP_NS}><soapenv:Body><v2:DeleteEverything/></soapenv:Body></soapenv:Envelope>'.encode())
    assert status == 500 and b"ENVELOPE_INVALID" in xml
    status, xml = await _post(customs, b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    assert status == 500 and b"XML_FORBIDDEN_CONSTRUCT" in xml


async def test_confirm_quantities_without_reference_for_a_64_character_number(customs):
    """No DeclarationReference and no transport document: the facade makes one up, within the
    declaration rule's 64 characters, and the same one again on a retry."""
    permit = customs_permit("CH26-" + "7" * 59)
    assert len(permit.number) == 64
    await customs.deliver(permit)
    a = permit.items[0]
    endorsed = replace(
        permit,
        endorsement=Endorsement(
            date=datetime.now(timezone.utc).replace(microsecond=0), port="Paris-Orly", lines=(EndorsedLine("A", a.quantity - 1, a.unit),),
        ),
    )  # fmt: skip
    request = etree.Element(f"{{{SOAP11}}}Envelope", nsmap={"soapenv": SOAP11, "v2": EPIX_V2})
    op = etree.SubElement(etree.SubElement(request, f"{{{SOAP11}}}Body"), f"{{{EPIX_V2}}}ConfirmQuantities")
    op.append(_unqualified(permit_to_element(endorsed)))
    body = etree.tostring(request)
    for _ in range(2):
        status, xml = await _post(customs, body)
        assert status == 200, xml
    [w] = await customs.store("FR").list_write_offs("CH", permit.number)
    assert len(w.declaration) <= 64 and w.declaration.startswith("EPIX-CH26-777") and w.quantity == a.quantity - 1
    _, v = await customs.verify("FR", "CH", permit.number)
    assert Decimal(v["permit"]["lines"][0]["remaining"]) == 1


async def test_a_permit_that_can_no_longer_be_used_is_a_fault_not_a_certificate(customs):
    """EPIX's answer has no place for a status, so a cancelled permit must not come back looking
    usable to a border checking a shipment; the final certificate stays the record of use."""
    permit = customs_permit("CH26-200005")
    await customs.deliver(permit)
    status, body = await customs.post_json("CH", f"/v1/permits/CH/{permit.number}/cancel", {"reason": "stolen"})
    assert status == 202
    await customs.wait_status("CH", body["messages"][0]["message_id"], FINAL)

    status, xml = await _post(customs, _get("GetNonFinalCitesCertificate", permit.number))
    fault = parse_xml(xml).getroot().find(f".//{{{SOAP11}}}Fault")
    assert status == 500 and fault is not None, xml
    assert (fault.findtext("faultcode"), fault.findtext("detail/code"), fault.findtext("detail/verdict")) == (
        "soapenv:Client", "CONFLICT", "CANCELLED",
    )  # fmt: skip
    assert fault.findtext("faultstring").startswith("CANCELLED: ") and b"<CITESEPermit" not in xml
    status, xml = await _post(customs, _get("GetFinalCitesCertificate", permit.number))
    assert status == 200 and read_permit(parse_xml(xml)).number == permit.number
    # Both lookups are in the audit history, with the verdict each one got.
    status, h = await customs.call("FR", "GET", f"/v1/verifications/CH/{permit.number}/history", token="fr-customs")
    assert [v["verdict"] for v in h["verifications"]] == ["CANCELLED", "CANCELLED"]
