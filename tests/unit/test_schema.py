"""Our CITESEPermit XSD and its two validators (lxml on the hot path, xmlschema for diagnostics)."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta, timezone

import pytest
from lxml import etree

from adapters.cites_write import permit_to_element, permit_to_xml
from adapters.ns import DS, RAM, RSM
from adapters.schema import SCHEMA_DIR, PermitSchema, XmlschemaPermitSchema, permit_schema
from adapters.xmlparse import parse_xml
from domain.errors import EpixError, ErrorCode
from simulators.samples import make_permit

H = f"{{{RSM}}}HeaderExchangedDocument"


def ram(name: str) -> str:
    return f"{{{RAM}}}{name}"


@pytest.fixture(scope="module", params=["lxml", "xmlschema"])
def validator(request):
    return permit_schema() if request.param == "lxml" else XmlschemaPermitSchema()


def invalid(validator, root) -> EpixError:
    with pytest.raises(EpixError) as caught:
        validator.validate(root)
    assert caught.value.code is ErrorCode.SCHEMA_INVALID
    errors = caught.value.context["errors"]
    assert errors and all(set(e) == {"line", "path", "message"} for e in errors)
    return caught.value


def test_the_schema_is_built_once():
    assert permit_schema() is permit_schema()
    assert isinstance(permit_schema(), PermitSchema)


def test_schema_files_refer_only_to_each_other():
    files = sorted(SCHEMA_DIR.glob("*.xsd"))
    assert {f.name for f in files} >= {"CITESEPermit_2.xsd", "ReusableAggregateBusinessInformationEntity_1.xsd", "xmldsig_enveloped.xsd"}
    for f in files:
        for location in re.findall(r'schemaLocation="([^"]+)"', f.read_text()):
            assert "/" not in location and ":" not in location, (f.name, location)
            assert (SCHEMA_DIR / location).is_file()


def test_a_missing_schema_is_a_configuration_error(tmp_path):
    with pytest.raises(EpixError) as caught:
        PermitSchema(tmp_path / "absent.xsd")
    assert caught.value.code is ErrorCode.CONFIG_INVALID


@pytest.mark.parametrize("seed", range(10))
def test_writer_output_is_valid(validator, seed):
    rng = random.Random(seed)
    permit = make_permit(rng, issuer="TH", importer_country="JP", doc_type=rng.choice("ERIO"))
    validator.validate(parse_xml(permit_to_xml(permit)))
    validator.validate(permit_to_element(permit))  # an element works as well as a tree


def _signed(permit) -> etree._Element:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from signxml import XMLSigner, methods

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CITES MA test")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    signer = XMLSigner(
        method=methods.enveloped,
        signature_algorithm="ecdsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#",
    )
    return signer.sign(permit_to_element(permit), key=key, cert=[cert])


def test_an_enveloped_signature_is_allowed_last(validator, sample_permit):
    signed = _signed(sample_permit)
    assert signed[-1].tag == f"{{{DS}}}Signature"
    validator.validate(parse_xml(etree.tostring(signed)))


def test_a_signature_anywhere_but_last_is_refused(validator, sample_permit):
    signed = _signed(sample_permit)
    signed.insert(1, signed[-1])  # moved between the context and the header
    error = invalid(validator, signed)
    assert any("Signature" in e["message"] or "Signature" in (e["path"] or "") for e in error.context["errors"])


def test_two_signatures_are_refused(validator, sample_permit):
    signed = _signed(sample_permit)
    signed.append(etree.fromstring(etree.tostring(signed[-1])))
    invalid(validator, signed)


def test_missing_required_element(validator, sample_permit):
    root = permit_to_element(sample_permit)
    root.remove(root.find(H))
    error = invalid(validator, root)
    assert error.context["errors"][0]["path"].startswith("/rsm:CITESEPermit")
    assert "HeaderExchangedDocument" in error.detail


def test_wrong_order(validator, sample_permit):
    root = permit_to_element(sample_permit)
    header = root.find(H)
    type_code = header.find(ram("TypeCode"))
    header.remove(type_code)
    header.insert(0, type_code)  # TypeCode before ID
    error = invalid(validator, root)
    assert any(e["path"].startswith("/rsm:CITESEPermit/rsm:HeaderExchangedDocument") for e in error.context["errors"])


def test_bad_date_names_its_path(validator, sample_permit):
    root = permit_to_element(sample_permit)
    root.find(H).find(ram("IssueDateTime")).text = "2014-13-45T00:00:00+01:00"
    error = invalid(validator, root)
    assert [e["path"] for e in error.context["errors"]] == ["/rsm:CITESEPermit/rsm:HeaderExchangedDocument/ram:IssueDateTime"]
    assert "/rsm:CITESEPermit/rsm:HeaderExchangedDocument/ram:IssueDateTime" in error.detail


def test_quantity_needs_a_decimal_and_a_unit(validator, sample_permit):
    root = permit_to_element(sample_permit)
    quantity = root.find(f"{{{RSM}}}SpecifiedSupplyChainConsignment/{ram('IncludedSupplyChainConsignmentItem')}/{ram('TransportLogisticsPackage')}/{ram('ItemQuantity')}")
    del quantity.attrib["unitCode"]
    invalid(validator, root)
    quantity.set("unitCode", "NAR")
    quantity.text = "1.5e2"
    invalid(validator, root)
    quantity.text = "150"
    validator.validate(root)


def test_every_error_is_listed(validator, sample_permit):
    root = permit_to_element(sample_permit)
    header = root.find(H)
    header.find(ram("IssueDateTime")).text = "yesterday"
    header.find(ram("CopyIndicator")).text = "perhaps"
    etree.SubElement(header, ram("Unknown")).text = "x"
    error = invalid(validator, root)
    assert len(error.context["errors"]) == 3
    assert "and 2 more" in error.detail


def test_another_root_is_invalid(validator):
    invalid(validator, etree.fromstring(b"<CITESEPermit/>"))
    invalid(validator, etree.fromstring("<x:CBFShip xmlns:x='urn:un:unece:uncefact:data:draft:CBFShip:1'/>".encode()))


def test_lxml_messages_use_our_prefixes(sample_permit):
    root = permit_to_element(sample_permit)
    root.find(H).find(ram("IssueDateTime")).text = "soon"
    error = invalid(permit_schema(), root)
    assert "ram:IssueDateTime" in error.detail and RAM not in error.detail
