"""Enveloped XML-DSig: what we produce, what we accept, and the specific code for each refusal."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import HealthCheck, given, settings
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, XMLSigner, XMLVerifier, methods

from adapters.ns import DS, RAM, RSM
from adapters.xmlparse import parse_xml
from domain.errors import EpixError, ErrorCode
from keys.pki import cert_to_pem, generate_key, issue_party_certificate, key_to_pem, make_test_ca
from keys.store import KeyStore, SigningIdentity, TrustStore
from keys.xmldsig import Signer, Verified, Verifier
from tests.hostile import attacks
from tests.hostile.reference import STRICT_CONFIG
from tests.hostile.documents import permit_xml, sample_permit_xml
from tests.strategies import permits

NS = {"ds": DS, "rsm": RSM, "ram": RAM}
NOW = datetime.now(timezone.utc)
DAY = timedelta(days=1)
ALGORITHMS = ("rsa2048", "rsa3072", "p256")


class Party:
    """A key, its certificate and a signer, made once per test module and algorithm."""

    def __init__(self, name: str, algorithm: str, *, ca=None, start=None, end=None) -> None:
        self.name = name
        self.key = generate_key(algorithm)
        self.cert = issue_party_certificate(name, self.key, ca=ca, not_before=start, not_after=end)
        self.signer = Signer(SigningIdentity.of(self.key, self.cert))


@pytest.fixture(scope="module", params=ALGORITHMS)
def ch(request):
    return Party("CH", request.param)


@pytest.fixture(scope="module")
def ch_rsa():
    return Party("CH", "rsa2048")


@pytest.fixture(scope="module")
def document():
    return sample_permit_xml()


def verifier_for(*parties: Party) -> Verifier:
    trust = TrustStore()
    for party in parties:
        trust.add(party.name, party.cert)
    return Verifier(trust)


def refused(verifier: Verifier, data: bytes, expected: str | None = "CH", **kw) -> EpixError:
    with pytest.raises(EpixError) as info:
        verifier.verify(data, expected, **kw)
    return info.value


# --------------------------------------------------------------------------- what we produce


def test_round_trip_returns_only_what_was_signed(ch, document):
    signed = ch.signer.sign(document)
    verified = verifier_for(ch).verify(signed, "CH")
    assert isinstance(verified, Verified)
    assert verified.signer == "CH"
    assert verified.certificate == ch.cert
    assert verified.signed_root.tag == f"{{{RSM}}}CITESEPermit"
    assert verified.signed_root.find(".//ds:Signature", NS) is None
    original = parse_xml(document).getroot()
    assert etree.tostring(verified.signed_root, method="c14n", exclusive=True) == etree.tostring(original, method="c14n", exclusive=True)
    assert verified.signed_bytes == etree.tostring(original, method="c14n", exclusive=True)


def test_signature_profile(ch, document):
    root = parse_xml(ch.signer.sign(document)).getroot()
    signature = root[-1]
    assert signature.tag == f"{{{DS}}}Signature"  # the root's last child
    assert len(root.findall(".//ds:Signature", NS)) == 1
    (reference,) = signature.findall("ds:SignedInfo/ds:Reference", NS)
    assert reference.get("URI") == ""
    assert [t.get("Algorithm") for t in reference.findall("ds:Transforms/ds:Transform", NS)] == [
        attacks.ENVELOPED,
        attacks.EXC_C14N,
    ]
    assert reference.find("ds:DigestMethod", NS).get("Algorithm") == attacks.SHA256
    assert signature.find("ds:SignedInfo/ds:CanonicalizationMethod", NS).get("Algorithm") == attacks.EXC_C14N
    method = signature.find("ds:SignedInfo/ds:SignatureMethod", NS).get("Algorithm")
    expected = attacks.RSA_SHA256 if isinstance(ch.key, rsa.RSAPrivateKey) else attacks.ECDSA_SHA256
    assert method == expected
    der = base64.b64decode(signature.find("ds:KeyInfo/ds:X509Data/ds:X509Certificate", NS).text)
    assert der == ch.signer.identity.cert_der


def test_ecdsa_signature_value_is_raw_r_and_s(document):
    party = Party("CH", "p256")
    root = parse_xml(party.signer.sign(document)).getroot()
    value = base64.b64decode(root.find("ds:Signature/ds:SignatureValue", NS).text)
    assert len(value) == 64  # r||s, 32 bytes each; DER would be 70-72 bytes
    signed_info = etree.tostring(root.find("ds:Signature/ds:SignedInfo", NS), method="c14n", exclusive=True)
    der = encode_dss_signature(int.from_bytes(value[:32], "big"), int.from_bytes(value[32:], "big"))
    party.cert.public_key().verify(der, signed_info, ec.ECDSA(hashes.SHA256()))


def test_signing_an_element_leaves_it_untouched(ch_rsa, document):
    root = parse_xml(document).getroot()
    before = etree.tostring(root)
    signed = ch_rsa.signer.sign(root)
    assert etree.tostring(root) == before
    assert verifier_for(ch_rsa).verify(signed, "CH").signer == "CH"


def test_signing_from_bytes_keeps_the_document_bytes(ch_rsa, document):
    signed = ch_rsa.signer.sign(document)
    end = document.rindex(b"</")
    assert signed.startswith(document[:end])
    assert signed.endswith(document[end:])


@pytest.mark.parametrize(
    "data",
    [
        b"<a/>",  # empty root: no end tag to insert before
        b"<a>text</a><!-- after the root -->",
        b"<!-- before --><p:a xmlns:p='urn:x' xml:lang='en'><p:b>1</p:b>\n</p:a>\n",
        b"<a xmlns='urn:default'><b ds='x'>1</b></a>",
    ],
)
def test_unusual_shapes_still_verify(ch_rsa, data):
    signed = ch_rsa.signer.sign(data)
    assert parse_xml(signed).getroot()[-1].tag == f"{{{DS}}}Signature"
    assert verifier_for(ch_rsa).verify(signed, "CH").signer == "CH"


def test_already_signed_document_is_refused(ch_rsa, document):
    with pytest.raises(EpixError) as info:
        ch_rsa.signer.sign(ch_rsa.signer.sign(document))
    assert info.value.code is ErrorCode.SIGNATURE_DUPLICATED


def test_signing_hostile_bytes_goes_through_the_hardened_parser(ch_rsa):
    with pytest.raises(EpixError) as info:
        ch_rsa.signer.sign(b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>')
    assert info.value.code is ErrorCode.XML_FORBIDDEN_CONSTRUCT


def test_signing_a_non_root_element_is_a_programming_error(ch_rsa, document):
    with pytest.raises(ValueError):
        ch_rsa.signer.sign(parse_xml(document).getroot()[0])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(permit=permits())
def test_every_permit_signs_and_verifies_and_any_quantity_change_is_caught(ch_rsa, permit):
    signed = ch_rsa.signer.sign(permit_xml(permit))
    verifier = verifier_for(ch_rsa)
    assert verifier.verify(signed, "CH").signer == "CH"
    assert refused(verifier, attacks.change_first_quantity(signed, Decimal("0.5"))).code is ErrorCode.DIGEST_MISMATCH


def test_interop_with_signxml_both_ways(ch, document):
    # signxml is an independent implementation of the same standard: it accepts ours, we accept its.
    method = SignatureMethod.RSA_SHA256 if isinstance(ch.key, rsa.RSAPrivateKey) else SignatureMethod.ECDSA_SHA256
    theirs = XMLSigner(
        method=methods.enveloped,
        signature_algorithm=method,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    ).sign(parse_xml(document).getroot(), key=ch.key, cert=[ch.cert])
    verified = verifier_for(ch).verify(etree.tostring(theirs), "CH")
    assert verified.signer == "CH"

    ours = ch.signer.sign(document)
    result = XMLVerifier().verify(ours, x509_cert=ch.cert, expect_config=STRICT_CONFIG)
    assert result.signed_data == verifier_for(ch).verify(ours, "CH").signed_bytes


def test_comments_added_after_signing_are_not_returned(ch_rsa, document):
    signed = ch_rsa.signer.sign(document)
    injected = signed.replace(b"<ram:ScientificName>", b"<ram:ScientificName><!-- injected -->", 1)
    assert injected != signed
    verified = verifier_for(ch_rsa).verify(injected, "CH")
    assert b"injected" not in etree.tostring(verified.signed_root)


# --------------------------------------------------------------------------- trust


def test_rollover_two_pinned_certificates_both_verify(document):
    old, new = Party("CH", "p256"), Party("CH", "rsa2048")
    verifier = verifier_for(old, new)
    assert verifier.verify(old.signer.sign(document), "CH").certificate == old.cert
    assert verifier.verify(new.signer.sign(document), "CH").certificate == new.cert


def test_another_signer_is_untrusted(ch, document):
    rogue = Party("CH", "p256")  # claims to be CH, but its certificate is not pinned
    error = refused(verifier_for(ch), rogue.signer.sign(document))
    assert error.code is ErrorCode.SIGNER_UNTRUSTED


def test_pinned_for_another_party_is_untrusted(ch_rsa, document):
    fr = Party("FR", "p256")
    verifier = verifier_for(ch_rsa, fr)
    error = refused(verifier, fr.signer.sign(document), expected="CH")
    assert error.code is ErrorCode.SIGNER_UNTRUSTED
    assert verifier.verify(fr.signer.sign(document), None).signer == "FR"


def test_swapping_in_the_pinned_certificate_does_not_help(ch_rsa, document):
    rogue = Party("CH", "rsa2048")
    signed = rogue.signer.sign(document)
    pinned_b64 = base64.b64encode(ch_rsa.signer.identity.cert_der).decode()
    forged = attacks.set_text(signed, "ds:Signature/ds:KeyInfo/ds:X509Data/ds:X509Certificate", pinned_b64)
    assert refused(verifier_for(ch_rsa), forged).code is ErrorCode.SIGNATURE_INVALID


@pytest.mark.parametrize(
    "start, end, code",
    [(NOW - 30 * DAY, NOW - DAY, ErrorCode.CERT_EXPIRED), (NOW + DAY, NOW + 30 * DAY, ErrorCode.CERT_NOT_YET_VALID)],
)
def test_certificate_window(document, start, end, code):
    party = Party("CH", "p256", start=start, end=end)
    signed = party.signer.sign(document)
    assert refused(verifier_for(party), signed).code is code
    # The same signature checked at a moment inside the window is fine.
    assert verifier_for(party).verify(signed, "CH", at=start + DAY).signer == "CH"


def test_ca_chain_and_its_limits(document):
    ca = make_test_ca("Signature Test CA", not_before=NOW - 365 * DAY)
    member = Party("KE", "p256", ca=ca)
    verifier = Verifier([], anchors=[ca.certificate])
    assert verifier.verify(member.signer.sign(document), "KE").signer == "KE"
    assert verifier.verify(member.signer.sign(document)).signer == "KE"
    assert refused(verifier, member.signer.sign(document), expected="TH").code is ErrorCode.SIGNER_UNTRUSTED
    outsider = Party("KE", "p256", ca=make_test_ca("Other CA"))
    assert refused(verifier, outsider.signer.sign(document), expected="KE").code is ErrorCode.SIGNER_UNTRUSTED
    expired = Party("KE", "p256", ca=ca, start=NOW - 30 * DAY, end=NOW - DAY)
    assert refused(verifier, expired.signer.sign(document), expected="KE").code is ErrorCode.CERT_EXPIRED


def test_from_pem_files(tmp_path, document):
    paths = KeyStore(tmp_path).init_party("CH", "rsa2048", passphrase="s3cret")
    signer = Signer.from_pem_files(paths.key, paths.cert, passphrase="s3cret")
    signed = signer.sign(document)
    assert Verifier.from_pem_files(cert=paths.cert).verify(signed, "CH").signer == "CH"
    ca = make_test_ca()
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    key = generate_key("p256")
    (tmp_path / "k.pem").write_bytes(key_to_pem(key))
    (tmp_path / "c.pem").write_bytes(cert_to_pem(issue_party_certificate("KE", key, ca=ca)))
    chained = Signer.from_pem_files(tmp_path / "k.pem", tmp_path / "c.pem").sign(document)
    assert Verifier.from_pem_files(ca=tmp_path / "ca.pem").verify(chained).signer == "KE"
    with pytest.raises(EpixError) as info:
        Signer.from_pem_files(paths.key, paths.cert, passphrase="wrong")
    assert info.value.code is ErrorCode.KEY_ERROR
    with pytest.raises(EpixError) as info:
        Verifier.from_pem_files(cert=tmp_path / "missing.pem")
    assert info.value.code is ErrorCode.KEY_ERROR
    with pytest.raises(EpixError) as info:
        Verifier.from_pem_files()
    assert info.value.code is ErrorCode.CONFIG_INVALID


# --------------------------------------------------------------------------- tampering and policy


def test_changed_quantity_is_a_digest_mismatch(ch, document):
    signed = ch.signer.sign(document)
    error = refused(verifier_for(ch), attacks.change_first_quantity(signed))
    assert error.code is ErrorCode.DIGEST_MISMATCH
    assert error.context["signer"] == "CH"


def test_bad_signature_value_is_signature_invalid(ch, document):
    signed = ch.signer.sign(document)
    root = parse_xml(signed).getroot()
    value = bytearray(base64.b64decode(root.find("ds:Signature/ds:SignatureValue", NS).text))
    value[-1] ^= 1
    forged = attacks.set_text(signed, "ds:Signature/ds:SignatureValue", base64.b64encode(bytes(value)).decode())
    assert refused(verifier_for(ch), forged).code is ErrorCode.SIGNATURE_INVALID


def test_changed_signed_info_is_signature_invalid(ch_rsa, document):
    # A forger who fixes the DigestValue after tampering still cannot fix the signature.
    tampered = attacks.change_first_quantity(ch_rsa.signer.sign(document))
    body = attacks.strip_signature(tampered)

    digest = base64.b64encode(hashlib.sha256(etree.tostring(parse_xml(body), method="c14n", exclusive=True)).digest())
    forged = attacks.set_text(tampered, "ds:Signature/ds:SignedInfo/ds:Reference/ds:DigestValue", digest.decode())
    assert refused(verifier_for(ch_rsa), forged).code is ErrorCode.SIGNATURE_INVALID


@pytest.mark.parametrize(
    "options",
    [
        dict(signature_method=attacks.RSA_SHA1),
        dict(digest_method=attacks.SHA1),
        dict(digest_method=attacks.MD5),
        dict(signature_method=attacks.RSA_SHA1, digest_method=attacks.SHA1),
    ],
    ids=["rsa-sha1", "digest-sha1", "digest-md5", "both-sha1"],
)
def test_sha1_and_md5_are_weak(ch_rsa, document, options):
    forged = attacks.forge(document, ch_rsa.key, ch_rsa.cert, **options)
    error = refused(verifier_for(ch_rsa), forged)
    assert error.code is ErrorCode.WEAK_ALGORITHM


def test_the_reference_signxml_is_configured_to_refuse_sha1_too():
    assert not any("SHA1" in m.name for m in STRICT_CONFIG.signature_methods)
    assert not any("SHA1" in d.name for d in STRICT_CONFIG.digest_algorithms)
    assert STRICT_CONFIG.location == "./" and STRICT_CONFIG.expect_references == 1


def test_a_correctly_forged_sha256_signature_passes(ch_rsa, document):
    # The forge helper itself makes valid signatures: the refusals above are about the algorithm.
    assert verifier_for(ch_rsa).verify(attacks.forge(document, ch_rsa.key, ch_rsa.cert), "CH").signer == "CH"


def test_reference_to_an_id_is_wrapped(ch_rsa, document):
    with_id = attacks.add_id(document, "rsm:HeaderExchangedDocument", "header")
    forged = attacks.forge(with_id, ch_rsa.key, ch_rsa.cert, uris=("#header",))
    error = refused(verifier_for(ch_rsa), forged)
    assert error.code is ErrorCode.SIGNATURE_WRAPPED
    assert error.context["uri"] == "#header"


def test_two_references_are_wrapped(ch_rsa, document):
    with_id = attacks.add_id(document, "rsm:HeaderExchangedDocument", "header")
    forged = attacks.forge(with_id, ch_rsa.key, ch_rsa.cert, uris=("", "#header"))
    assert refused(verifier_for(ch_rsa), forged).code is ErrorCode.SIGNATURE_WRAPPED


def test_extra_transform_is_wrapped(ch_rsa, document):
    forged = attacks.forge(
        document, ch_rsa.key, ch_rsa.cert, transforms=(attacks.ENVELOPED, attacks.XPATH_FILTER, attacks.EXC_C14N)
    )
    assert refused(verifier_for(ch_rsa), forged).code is ErrorCode.SIGNATURE_WRAPPED


def test_signed_original_inside_a_tampered_root_is_wrapped(ch_rsa, document):
    wrapped = attacks.wrap_in_new_root(ch_rsa.signer.sign(document))
    assert refused(verifier_for(ch_rsa), wrapped).code is ErrorCode.SIGNATURE_WRAPPED


def test_signature_below_the_root_is_wrapped(ch_rsa, document):
    moved = attacks.move_signature_into(ch_rsa.signer.sign(document), "rsm:HeaderExchangedDocument")
    assert refused(verifier_for(ch_rsa), moved).code is ErrorCode.SIGNATURE_WRAPPED


def test_two_signatures_are_duplicated(ch_rsa, document):
    doubled = attacks.duplicate_signature(ch_rsa.signer.sign(document))
    assert refused(verifier_for(ch_rsa), doubled).code is ErrorCode.SIGNATURE_DUPLICATED


def test_unsigned_document_is_missing_a_signature(ch_rsa, document):
    assert refused(verifier_for(ch_rsa), document).code is ErrorCode.SIGNATURE_MISSING


def test_missing_certificate_is_cert_invalid(ch_rsa, document):
    signed = ch_rsa.signer.sign(document)
    root = parse_xml(signed).getroot()
    key_info = root.find("ds:Signature/ds:KeyInfo", NS)
    key_info.getparent().remove(key_info)
    error = refused(verifier_for(ch_rsa), etree.tostring(root))
    assert error.code is ErrorCode.CERT_INVALID


def test_garbage_certificate_is_cert_invalid(ch_rsa, document):
    signed = ch_rsa.signer.sign(document)
    forged = attacks.set_text(signed, "ds:Signature/ds:KeyInfo/ds:X509Data/ds:X509Certificate", "bm90IGEgY2VydA==")
    assert refused(verifier_for(ch_rsa), forged).code is ErrorCode.CERT_INVALID


def test_unknown_canonicalization_is_refused(ch_rsa, document):
    signed = ch_rsa.signer.sign(document)
    forged = attacks.set_attribute(
        signed, "ds:Signature/ds:SignedInfo/ds:CanonicalizationMethod", "Algorithm", "urn:made-up"
    )
    assert refused(verifier_for(ch_rsa), forged).code is ErrorCode.SIGNATURE_INVALID


# --------------------------------------------------------------------------- the narrow profile


def _move_signature_first(root, signature):
    root.insert(0, signature)


def _inclusive_c14n(root, signature):
    signature.find("ds:SignedInfo/ds:CanonicalizationMethod", NS).set("Algorithm", attacks.C14N_10)


def _only_enveloped(root, signature):
    transforms = signature.find("ds:SignedInfo/ds:Reference/ds:Transforms", NS)
    transforms.remove(transforms[1])
    return "inclusive"  # the default reference C14N then applies


def _transforms_swapped(root, signature):
    transforms = signature.find("ds:SignedInfo/ds:Reference/ds:Transforms", NS)
    transforms.insert(0, transforms[1])


def _with_comments(root, signature):
    signature.find("ds:SignedInfo/ds:Reference/ds:Transforms", NS)[1].set("Algorithm", attacks.EXC_C14N + "WithComments")


def _object(root, signature):
    etree.SubElement(signature, f"{{{DS}}}Object").text = "unsigned"


def _signature_method_parameter(root, signature):
    etree.SubElement(signature.find("ds:SignedInfo/ds:SignatureMethod", NS), f"{{{DS}}}HMACOutputLength").text = "128"


def _prefix_list(value):
    def edit(root, signature):
        method = signature.find("ds:SignedInfo/ds:CanonicalizationMethod", NS)
        etree.SubElement(method, f"{{{attacks.EXC_C14N}}}InclusiveNamespaces", PrefixList=value)

    return edit


@pytest.mark.parametrize(
    "edit, code",
    [
        (_move_signature_first, ErrorCode.SIGNATURE_WRAPPED),
        (_inclusive_c14n, ErrorCode.SIGNATURE_INVALID),
        (_only_enveloped, ErrorCode.SIGNATURE_WRAPPED),
        (_transforms_swapped, ErrorCode.SIGNATURE_WRAPPED),
        (_with_comments, ErrorCode.SIGNATURE_WRAPPED),
        (_object, ErrorCode.SIGNATURE_INVALID),
        (_signature_method_parameter, ErrorCode.SIGNATURE_INVALID),
        (_prefix_list("rsm  ram"), ErrorCode.SIGNATURE_INVALID),  # two spaces: implementations disagree
        (_prefix_list("rsm <x>"), ErrorCode.SIGNATURE_INVALID),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)).strip("_"),
)
def test_validly_signed_shapes_outside_the_profile_are_refused(ch_rsa, document, edit, code):
    forged = attacks.resign(ch_rsa.signer.sign(document), ch_rsa.key, edit)
    assert refused(verifier_for(ch_rsa), forged).code is code


def test_a_prefix_list_is_honoured(ch_rsa, document):
    # The control for the refusals above: resign itself makes signatures that verify.
    forged = attacks.resign(ch_rsa.signer.sign(document), ch_rsa.key, _prefix_list("rsm ram"))
    assert b"InclusiveNamespaces" in forged
    assert verifier_for(ch_rsa).verify(forged, "CH").signer == "CH"


def test_signature_method_must_fit_the_key(document):
    party = Party("CH", "p256")
    forged = attacks.forge(document, party.key, party.cert, signature_method=attacks.RSA_SHA256.replace("rsa", "ecdsa"))
    assert verifier_for(party).verify(forged, "CH").signer == "CH"  # ecdsa-sha256 with a P-256 key: fine
    root = parse_xml(forged).getroot()
    root.find("ds:Signature/ds:SignedInfo/ds:SignatureMethod", NS).set("Algorithm", attacks.RSA_SHA256)
    assert refused(verifier_for(party), etree.tostring(root)).code is ErrorCode.SIGNATURE_INVALID


def test_ecdsa_value_of_the_wrong_length_is_signature_invalid(document):
    party = Party("CH", "p256")
    signed = party.signer.sign(document)
    value = base64.b64decode(parse_xml(signed).getroot().find("ds:Signature/ds:SignatureValue", NS).text)
    der = encode_dss_signature(int.from_bytes(value[:32], "big"), int.from_bytes(value[32:], "big"))
    forged = attacks.set_text(signed, "ds:Signature/ds:SignatureValue", base64.b64encode(der).decode())
    error = refused(verifier_for(party), forged)
    assert error.code is ErrorCode.SIGNATURE_INVALID and "r||s" in error.detail


def test_signature_value_that_is_not_base64_is_signature_invalid(ch_rsa, document):
    forged = attacks.set_text(ch_rsa.signer.sign(document), "ds:Signature/ds:SignatureValue", "not base64!")
    assert refused(verifier_for(ch_rsa), forged).code is ErrorCode.SIGNATURE_INVALID


def test_text_after_the_signature_is_signed(ch_rsa):
    # The enveloped transform removes the Signature element only: whitespace after it (a
    # pretty-printed document) stays in what is digested, as xmlsec1 and signxml do it.
    data = b"<a><b>1</b>\n  <!-- sig -->\n</a>"
    forged = attacks.resign(
        ch_rsa.signer.sign(data), ch_rsa.key, lambda root, signature: setattr(signature, "tail", "\n") or "exclusive"
    )
    verified = verifier_for(ch_rsa).verify(forged, "CH")
    assert verified.signed_bytes == b"<a><b>1</b>\n  \n\n</a>"
    untouched = forged.replace(b"</ds:Signature>\n</a>", b"</ds:Signature></a>")
    assert untouched != forged
    assert refused(verifier_for(ch_rsa), untouched).code is ErrorCode.DIGEST_MISMATCH


def test_signed_root_is_reparsed_from_the_digested_bytes(ch_rsa, document):
    signed = ch_rsa.signer.sign(document.replace(b"<rsm:HeaderExchangedDocument>", b"<!--c--><rsm:HeaderExchangedDocument>", 1))
    verified = verifier_for(ch_rsa).verify(signed, "CH")
    assert etree.tostring(verified.signed_root.getroottree(), method="c14n", exclusive=True) == verified.signed_bytes
    assert b"<!--" not in etree.tostring(verified.signed_root)
    assert verified.signed_root.getparent() is None and verified.signed_root.find(".//ds:Signature", NS) is None


def test_canonical_form_is_bounded(ch_rsa, document):
    grafted = attacks.graft_signature(ch_rsa.signer.sign(document), attacks.c14n_amplifier(elements=1100, uri_length=8000))
    assert len(grafted) < 20_000
    error = refused(verifier_for(ch_rsa), grafted)
    assert error.code is ErrorCode.XML_TOO_LARGE and "canonical form" in error.detail
    # The same shape, small enough, is an ordinary digest mismatch: the bound is what refused it.
    small = attacks.graft_signature(ch_rsa.signer.sign(document), attacks.c14n_amplifier(elements=10, uri_length=80))
    assert refused(verifier_for(ch_rsa), small).code is ErrorCode.DIGEST_MISMATCH


def test_the_common_shape_and_the_long_way_read_the_same_profile(ch, document):
    from keys.xmldsig import _check_profile, _common_profile

    signature = parse_xml(ch.signer.sign(document)).getroot()[-1]
    assert _common_profile(signature) == _check_profile(signature)
    etree.SubElement(signature.find("ds:SignedInfo", NS), f"{{{DS}}}Reference", URI="")
    assert _common_profile(signature) is None


def test_a_comment_inside_signed_text_is_not_read_as_splitting_it(tmp_path):
    # Exclusive C14N drops comments, so "12<!--x-->3" is signed as "123"; a reader of the
    # verified tree must see "123" too, not the "12" an lxml .text before the comment holds.
    from keys.pki import make_test_ca
    from keys.store import KeyStore

    store = KeyStore(tmp_path)
    store.init_party("CH", "rsa2048", ca=make_test_ca("Test CA"))
    identity = store.load_signing_identity("CH")
    signed = Signer(identity).sign(b"<a><b>12<!--x-->3</b><c>4</c></a>")
    verified = Verifier([identity.certificate]).verify(signed, "CH")
    assert verified.signed_root.find("b").text == "123"
    assert verified.signed_bytes == b"<a><b>123</b><c>4</c></a>"


def test_signing_an_element_with_its_serialisation_given_signs_the_same_bytes(tmp_path):
    from keys.pki import make_test_ca
    from keys.store import KeyStore
    from lxml import etree

    store = KeyStore(tmp_path)
    store.init_party("CH", "rsa2048", ca=make_test_ca("Test CA"))
    signer = Signer(store.load_signing_identity("CH"))
    root = etree.fromstring(b'<p:a xmlns:p="urn:x"><p:b>1 &amp; 2</p:b></p:a>')
    serialised = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    assert signer.sign(root, serialised=serialised) == signer.sign(root)
