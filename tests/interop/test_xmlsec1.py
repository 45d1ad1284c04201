"""Interop with an independent XML-DSig implementation: xmlsec1 (libxmlsec1 over OpenSSL).

Both ways, RSA and ECDSA: xmlsec1 verifies what our Signer produces (pinned certificate and CA
chain), and our Verifier accepts what xmlsec1 signs from a template; each of xmlsec1's bad
signatures is refused by us with its own code.
"""

from __future__ import annotations

import base64
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree
from lxml.builder import ElementMaker
from signxml import XMLVerifier

from adapters.ns import DS
from adapters.xmlparse import parse_xml
from domain.errors import EpixError, ErrorCode
from keys.pki import cert_to_pem, generate_key, issue_party_certificate, key_to_pem, make_test_ca
from keys.store import SigningIdentity, TrustStore
from keys.xmldsig import Signer, Verifier
from tests.conftest import require_command
from tests.hostile import attacks
from tests.hostile.documents import sample_permit_xml
from tests.hostile.reference import STRICT_CONFIG

pytestmark = pytest.mark.xmlsec

NOW = datetime.now(timezone.utc)
DAY = timedelta(days=1)
_DS = ElementMaker(namespace=DS, nsmap={"ds": DS})
_EC = ElementMaker(namespace=attacks.EXC_C14N, nsmap={"ec": attacks.EXC_C14N})
METHOD = {"rsa2048": attacks.RSA_SHA256, "rsa3072": attacks.RSA_SHA256, "p256": attacks.ECDSA_SHA256}


@pytest.fixture(scope="module")
def xmlsec1() -> str:
    return require_command("xmlsec1")


@pytest.fixture(scope="module")
def ca():
    return make_test_ca("Interop CA", not_before=NOW - 365 * DAY)


@pytest.fixture(scope="module")
def document() -> bytes:
    return sample_permit_xml(seed=11)


class Party:
    """A party's key and certificate, also written as PEM files for xmlsec1."""

    def __init__(self, folder: Path, name: str, algorithm: str, *, ca=None, start=None, end=None) -> None:
        self.name, self.algorithm = name, algorithm
        self.key = generate_key(algorithm)
        self.cert = issue_party_certificate(name, self.key, ca=ca, not_before=start, not_after=end)
        folder.mkdir(parents=True, exist_ok=True)
        self.key_pem = folder / f"{name}-{algorithm}.key.pem"
        self.cert_pem = folder / f"{name}-{algorithm}.cert.pem"
        self.key_pem.write_bytes(key_to_pem(self.key))
        self.cert_pem.write_bytes(cert_to_pem(self.cert))
        self.signer = Signer(SigningIdentity.of(self.key, self.cert))


@pytest.fixture(scope="module", params=["rsa2048", "rsa3072", "p256"])
def ch(request, tmp_path_factory, ca):
    return Party(tmp_path_factory.mktemp("ch"), "CH", request.param, ca=ca)


def run(xmlsec1: str, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([xmlsec1, *map(str, args)], capture_output=True, timeout=60, check=False)


def xmlsec_verify(xmlsec1: str, path: Path, *, cert: Path | None = None, ca_pem: Path | None = None):
    trust = ["--pubkey-cert-pem", cert] if cert else ["--trusted-pem", ca_pem]
    return run(xmlsec1, "--verify", "--enabled-reference-uris", "empty", *trust, path)


def template(
    document: bytes,
    signature_method: str,
    *,
    digest_method: str = attacks.SHA256,
    uri: str = "",
    signed_info_prefixes: str | None = None,
    transform_prefixes: str | None = None,
    default_namespace: bool = False,
    tail: str | None = None,
) -> bytes:
    """The unsigned permit with an empty enveloped Signature (URI="", exc-c14n) for xmlsec1 to fill.

    ``*_prefixes`` add an ``ec:InclusiveNamespaces PrefixList`` to SignedInfo's canonicalization
    or to the reference's exc-c14n transform; ``default_namespace`` writes the Signature in the
    default namespace instead of ds:; ``tail`` is text after the Signature (pretty-printing).
    """
    ds = ElementMaker(namespace=DS, nsmap={None: DS}) if default_namespace else _DS

    def exc_c14n(element_maker, prefixes):
        inclusive = [] if prefixes is None else [_EC.InclusiveNamespaces(PrefixList=prefixes)]
        return element_maker(*inclusive, Algorithm=attacks.EXC_C14N)

    root = parse_xml(document).getroot()
    signature = ds.Signature(
        ds.SignedInfo(
            exc_c14n(ds.CanonicalizationMethod, signed_info_prefixes),
            ds.SignatureMethod(Algorithm=signature_method),
            ds.Reference(
                ds.Transforms(ds.Transform(Algorithm=attacks.ENVELOPED), exc_c14n(ds.Transform, transform_prefixes)),
                ds.DigestMethod(Algorithm=digest_method),
                ds.DigestValue(),
                URI=uri,
            ),
        ),
        ds.SignatureValue(),
        ds.KeyInfo(ds.X509Data()),
    )
    signature.tail = tail
    root.append(signature)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def xmlsec_sign(xmlsec1: str, folder: Path, party: Party, tmpl: bytes, *extra: str) -> bytes:
    source, output = folder / "template.xml", folder / "signed-by-xmlsec1.xml"
    source.write_bytes(tmpl)
    result = run(
        xmlsec1, "--sign", *extra, "--privkey-pem", f"{party.key_pem},{party.cert_pem}", "--output", output, source
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return output.read_bytes()


def pinned(*parties: Party) -> Verifier:
    return Verifier(TrustStore.of({p.name: [p.cert] for p in parties}))


def code_of(verifier: Verifier, data: bytes, expected: str = "CH") -> ErrorCode:
    with pytest.raises(EpixError) as info:
        verifier.verify(data, expected)
    return info.value.code


# --------------------------------------------------------------------------- xmlsec1 verifies ours


def test_xmlsec1_verifies_our_signature_with_the_pinned_certificate(xmlsec1, ch, document, tmp_path):
    signed = tmp_path / "ours.xml"
    signed.write_bytes(ch.signer.sign(document))
    result = xmlsec_verify(xmlsec1, signed, cert=ch.cert_pem)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"OK" in result.stderr + result.stdout


def test_xmlsec1_verifies_our_signature_through_the_ca(xmlsec1, ch, ca, document, tmp_path):
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    signed = tmp_path / "ours.xml"
    signed.write_bytes(ch.signer.sign(document))
    result = xmlsec_verify(xmlsec1, signed, ca_pem=tmp_path / "ca.pem")
    assert result.returncode == 0, result.stderr.decode(errors="replace")


def test_xmlsec1_refuses_our_signature_once_tampered(xmlsec1, ch, document, tmp_path):
    # The control that makes the two tests above mean something.
    signed = tmp_path / "tampered.xml"
    signed.write_bytes(attacks.change_first_quantity(ch.signer.sign(document)))
    assert xmlsec_verify(xmlsec1, signed, cert=ch.cert_pem).returncode != 0


# --------------------------------------------------------------------------- we verify xmlsec1's


def test_we_verify_xmlsec1_signatures(xmlsec1, ch, document, tmp_path):
    signed = xmlsec_sign(xmlsec1, tmp_path, ch, template(document, METHOD[ch.algorithm]))
    verified = pinned(ch).verify(signed, "CH")
    assert verified.signer == "CH"
    assert verified.certificate == ch.cert
    original = parse_xml(document).getroot()
    assert verified.signed_bytes == etree.tostring(original, method="c14n", exclusive=True)


def test_we_verify_xmlsec1_signatures_through_the_ca(xmlsec1, ch, ca, document, tmp_path):
    signed = xmlsec_sign(xmlsec1, tmp_path, ch, template(document, METHOD[ch.algorithm]))
    assert Verifier([], anchors=[ca.certificate]).verify(signed, "CH").signer == "CH"


def test_xmlsec1_signature_with_changed_quantity_is_a_digest_mismatch(xmlsec1, ch, document, tmp_path):
    signed = xmlsec_sign(xmlsec1, tmp_path, ch, template(document, METHOD[ch.algorithm]))
    assert code_of(pinned(ch), attacks.change_first_quantity(signed)) is ErrorCode.DIGEST_MISMATCH


def test_xmlsec1_signature_by_another_signer_is_untrusted(xmlsec1, ch, document, tmp_path):
    rogue = Party(tmp_path / "rogue", "CH", "p256")
    signed = xmlsec_sign(xmlsec1, tmp_path, rogue, template(document, attacks.ECDSA_SHA256))
    assert code_of(pinned(ch), signed) is ErrorCode.SIGNER_UNTRUSTED


def test_xmlsec1_signature_with_an_expired_certificate(xmlsec1, document, tmp_path):
    expired = Party(tmp_path / "expired", "CH", "rsa2048", start=NOW - 60 * DAY, end=NOW - DAY)
    signed = xmlsec_sign(xmlsec1, tmp_path, expired, template(document, attacks.RSA_SHA256))
    assert code_of(pinned(expired), signed) is ErrorCode.CERT_EXPIRED


def test_xmlsec1_sha1_signature_is_weak(xmlsec1, document, tmp_path):
    party = Party(tmp_path / "sha1", "CH", "rsa2048")
    signed = xmlsec_sign(
        xmlsec1, tmp_path, party, template(document, attacks.RSA_SHA1, digest_method=attacks.SHA1)
    )
    assert b"#rsa-sha1" in signed
    assert run(xmlsec1, "--verify", "--pubkey-cert-pem", party.cert_pem, tmp_path / "signed-by-xmlsec1.xml").returncode == 0
    assert code_of(pinned(party), signed) is ErrorCode.WEAK_ALGORITHM


def test_xmlsec1_signature_over_an_id_reference_is_wrapped(xmlsec1, document, tmp_path):
    party = Party(tmp_path / "id", "CH", "p256")
    with_id = attacks.add_id(document, "rsm:HeaderExchangedDocument", "header")
    signed = xmlsec_sign(
        xmlsec1,
        tmp_path,
        party,
        template(with_id, attacks.ECDSA_SHA256, uri="#header"),
        "--id-attr:Id",
        "urn:un:unece:uncefact:data:standard:CITESEPermit:2:HeaderExchangedDocument",
    )
    assert b'URI="#header"' in signed
    assert code_of(pinned(party), signed) is ErrorCode.SIGNATURE_WRAPPED


def test_xmlsec1_signed_original_moved_under_a_tampered_root_is_wrapped(xmlsec1, document, tmp_path):
    party = Party(tmp_path / "wrap", "CH", "rsa2048")
    signed = xmlsec_sign(xmlsec1, tmp_path, party, template(document, attacks.RSA_SHA256))
    assert code_of(pinned(party), attacks.wrap_in_new_root(signed)) is ErrorCode.SIGNATURE_WRAPPED


# --------------------------------------------------------------------------- the canonical forms


def test_xmlsec1_writes_no_inclusive_namespaces_unless_its_template_has_them(xmlsec1, ch, document, tmp_path):
    signed = xmlsec_sign(xmlsec1, tmp_path, ch, template(document, METHOD[ch.algorithm]))
    assert b"InclusiveNamespaces" not in signed


def _signed_info_and_value(signed: bytes) -> tuple[etree._Element, bytes]:
    signature = parse_xml(signed).getroot()[-1]
    value = base64.b64decode("".join(signature.findtext(f"{{{DS}}}SignatureValue").split()))
    return signature.find(f"{{{DS}}}SignedInfo"), value


@pytest.mark.parametrize(
    "shape",
    [
        dict(),
        dict(default_namespace=True, tail="\n"),
        dict(signed_info_prefixes="rsm ram"),
        dict(signed_info_prefixes="#default rsm", default_namespace=True),
    ],
    ids=["ds-prefix", "default-namespace", "prefix-list", "prefix-list-with-default"],
)
def test_lxml_subtree_exc_c14n_of_signed_info_is_what_xmlsec1_signed(xmlsec1, ch, document, tmp_path, shape):
    # We canonicalise SignedInfo as an lxml subtree of the parsed document; xmlsec1 canonicalises
    # the same node set in place. The raw signature over our bytes verifying proves they agree.
    signed = xmlsec_sign(xmlsec1, tmp_path, ch, template(document, METHOD[ch.algorithm], **shape))
    signed_info, value = _signed_info_and_value(signed)
    prefixes = shape.get("signed_info_prefixes")
    canonical = etree.tostring(
        signed_info, method="c14n", exclusive=True, inclusive_ns_prefixes=prefixes.split() if prefixes else None
    )
    public = ch.cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(value, canonical, padding.PKCS1v15(), hashes.SHA256())
    else:
        half = len(value) // 2
        der = encode_dss_signature(int.from_bytes(value[:half], "big"), int.from_bytes(value[half:], "big"))
        public.verify(der, canonical, ec.ECDSA(hashes.SHA256()))
    if prefixes and "rsm" in prefixes:
        assert b"xmlns:rsm=" in canonical  # the PrefixList made a difference
    assert pinned(ch).verify(signed, "CH").signer == "CH"


@pytest.mark.parametrize(
    "prefixes",
    [dict(transform_prefixes="rsm ram"), dict(signed_info_prefixes="rsm", transform_prefixes="ram #default")],
    ids=["transform", "both"],
)
def test_we_verify_xmlsec1_signatures_with_inclusive_namespaces(xmlsec1, ch, document, tmp_path, prefixes):
    signed = xmlsec_sign(xmlsec1, tmp_path, ch, template(document, METHOD[ch.algorithm], **prefixes))
    assert b"InclusiveNamespaces" in signed
    assert xmlsec_verify(xmlsec1, tmp_path / "signed-by-xmlsec1.xml", cert=ch.cert_pem).returncode == 0
    verified = pinned(ch).verify(signed, "CH")
    tree = parse_xml(document)
    with_prefixes = etree.tostring(
        tree, method="c14n", exclusive=True, inclusive_ns_prefixes=prefixes["transform_prefixes"].split()
    )
    assert verified.signed_bytes == with_prefixes
    assert with_prefixes != etree.tostring(tree, method="c14n", exclusive=True)  # so the prefixes were honoured
    # signxml agrees on what was signed (its bundled XSD has no declaration for
    # ec:InclusiveNamespaces under CanonicalizationMethod, so its schema check stays off here).
    result = XMLVerifier().verify(signed, x509_cert=ch.cert, expect_config=STRICT_CONFIG, validate_schema=False)
    assert result.signed_data == verified.signed_bytes


def test_a_changed_prefix_list_is_signature_invalid(xmlsec1, ch, document, tmp_path):
    signed = xmlsec_sign(xmlsec1, tmp_path, ch, template(document, METHOD[ch.algorithm], transform_prefixes="rsm ram"))
    assert code_of(pinned(ch), signed.replace(b'PrefixList="rsm ram"', b'PrefixList="rsm"')) is ErrorCode.SIGNATURE_INVALID


def test_we_verify_a_pretty_printed_xmlsec1_signature(xmlsec1, ch, tmp_path):
    # Whitespace after the Signature is the document's own text: xmlsec1 signs it, we keep it.
    document = etree.tostring(parse_xml(sample_permit_xml(seed=12)), pretty_print=True, xml_declaration=True, encoding="UTF-8")
    signed = xmlsec_sign(xmlsec1, tmp_path, ch, template(document, METHOD[ch.algorithm], tail="\n"))
    assert signed.rstrip().endswith(b"</ds:Signature>\n</rsm:CITESEPermit>")
    verified = pinned(ch).verify(signed, "CH")
    assert verified.signed_bytes.endswith(b"\n\n</rsm:CITESEPermit>")
