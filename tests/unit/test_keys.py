"""Keys, certificates, the key store and the trust store."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from domain.errors import EpixError, ErrorCode
from keys.pki import (
    Algorithm,
    algorithm_of,
    cert_to_pem,
    fingerprint,
    generate_key,
    issue_party_certificate,
    key_to_pem,
    load_certificates_pem,
    make_test_ca,
    party_of,
    with_names_decoded,
)
from keys.store import KeyStore, SigningIdentity, TrustStore, init_party, load_private_key_pem
from tests.hostile import attacks

NOW = datetime.now(timezone.utc)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def ca():
    return make_test_ca("Unit Test CA", not_before=NOW - 365 * DAY)


@pytest.fixture(scope="module")
def p256_key():
    return generate_key(Algorithm.P256)


# --------------------------------------------------------------------------- pki


@pytest.mark.parametrize(
    "algorithm, kind, size",
    [("rsa2048", rsa.RSAPrivateKey, 2048), ("rsa3072", rsa.RSAPrivateKey, 3072), ("p256", ec.EllipticCurvePrivateKey, 256)],
)
def test_generate_key_makes_the_named_algorithm(algorithm, kind, size):
    key = generate_key(algorithm)
    assert isinstance(key, kind)
    assert key.key_size == size
    assert algorithm_of(key) is Algorithm(algorithm)
    assert algorithm_of(key.public_key()) is Algorithm(algorithm)


def test_unknown_algorithm_is_a_key_error():
    with pytest.raises(EpixError) as info:
        generate_key("dsa1024")
    assert info.value.code is ErrorCode.KEY_ERROR
    assert "rsa2048" in info.value.detail


def test_unsupported_key_size_is_refused():
    with pytest.raises(EpixError) as info:
        algorithm_of(ec.generate_private_key(ec.SECP384R1()))
    assert info.value.code is ErrorCode.KEY_ERROR


def test_party_certificate_names_the_party(ca, p256_key):
    cert = issue_party_certificate("KE", p256_key, ca=ca)
    assert party_of(cert) == "KE"
    assert cert.issuer == ca.certificate.subject
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COUNTRY_NAME)[0].value == "KE"
    assert "KE" in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    cert.verify_directly_issued_by(ca.certificate)


def test_self_signed_party_certificate(p256_key):
    cert = issue_party_certificate("HUB-EU", p256_key)
    assert cert.issuer == cert.subject
    assert party_of(cert) == "HUB-EU"
    assert not cert.subject.get_attributes_for_oid(x509.NameOID.COUNTRY_NAME)  # not a country code
    cert.verify_directly_issued_by(cert)


def test_a_certificate_whose_subject_does_not_decode_is_refused_where_it_is_read(p256_key):
    broken = x509.load_der_x509_certificate(attacks.undecodable_subject(issue_party_certificate("CH", p256_key)))
    with pytest.raises(ValueError):
        with_names_decoded(broken)
    with pytest.raises(EpixError) as info:
        load_certificates_pem(cert_to_pem(broken), source="ch.pem")
    assert info.value.code is ErrorCode.KEY_ERROR


def test_validity_window_is_what_was_asked(p256_key):
    start, end = NOW - 10 * DAY, NOW - DAY
    cert = issue_party_certificate("CH", p256_key, not_before=start, not_after=end)
    assert cert.not_valid_before_utc == start.replace(microsecond=0)
    assert cert.not_valid_after_utc == end.replace(microsecond=0)


def test_inverted_validity_window_is_refused(p256_key):
    with pytest.raises(ValueError):
        issue_party_certificate("CH", p256_key, not_before=NOW, not_after=NOW - DAY)


def test_ca_is_a_ca(ca):
    assert ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert party_of(ca.certificate) is None
    assert ca.pem.startswith(b"-----BEGIN CERTIFICATE-----")


def test_fingerprint_is_stable_and_distinct(p256_key):
    a = issue_party_certificate("CH", p256_key)
    b = issue_party_certificate("CH", p256_key)
    assert fingerprint(a) == fingerprint(x509.load_pem_x509_certificate(cert_to_pem(a)))
    assert fingerprint(a) != fingerprint(b)  # same key, different serial


# --------------------------------------------------------------------------- key store


def test_init_party_writes_a_0600_key_and_a_certificate(tmp_path, ca):
    paths = KeyStore(tmp_path).init_party("CH", "p256", ca=ca)
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.key.parent.stat().st_mode) == 0o700
    assert paths.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    assert party_of(cert) == "CH"
    assert cert.issuer == ca.certificate.subject
    assert not list(paths.key.parent.glob("*.tmp"))


def test_passphrase_encrypts_the_key_and_is_needed_to_load_it(tmp_path):
    store = KeyStore(tmp_path)
    paths = store.init_party("FR", Algorithm.RSA2048, passphrase="correct horse")
    assert paths.key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    identity = store.load_signing_identity("FR", "correct horse")
    assert identity.party == "FR"
    assert identity.algorithm is Algorithm.RSA2048
    assert identity.cert_der == identity.certificate.public_bytes(serialization.Encoding.DER)
    assert identity.cert_pem == paths.cert.read_bytes()


@pytest.mark.parametrize("passphrase", ["wrong horse", None])
def test_wrong_or_missing_passphrase_is_a_key_error_without_secrets(tmp_path, passphrase):
    store = KeyStore(tmp_path)
    store.init_party("FR", "p256", passphrase="correct horse")
    with pytest.raises(EpixError) as info:
        store.load_signing_identity("FR", passphrase)
    assert info.value.code is ErrorCode.KEY_ERROR
    text = str(info.value) + repr(info.value.to_dict())
    assert "correct horse" not in text and "wrong horse" not in text
    assert "BEGIN" not in text


def test_garbage_key_file_is_a_key_error():
    with pytest.raises(EpixError) as info:
        load_private_key_pem(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    assert info.value.code is ErrorCode.KEY_ERROR


def test_unknown_party_is_a_key_error(tmp_path):
    with pytest.raises(EpixError) as info:
        KeyStore(tmp_path).load_signing_identity("ZZ")
    assert info.value.code is ErrorCode.KEY_ERROR


def test_init_party_does_not_overwrite_an_existing_key(tmp_path):
    paths = init_party(tmp_path, "CH", "p256")
    before = paths.key.read_bytes()
    with pytest.raises(EpixError) as info:
        init_party(tmp_path, "CH", "p256")
    assert info.value.code is ErrorCode.CONFLICT
    assert paths.key.read_bytes() == before
    init_party(tmp_path, "CH", "p256", overwrite=True)
    assert paths.key.read_bytes() != before


@pytest.mark.parametrize("party", ["", "../etc", ".hidden"])
def test_party_names_cannot_escape_the_store(tmp_path, party):
    with pytest.raises(EpixError) as info:
        KeyStore(tmp_path).init_party(party, "p256")
    assert info.value.code is ErrorCode.KEY_ERROR


def test_identity_refuses_a_key_that_is_not_the_certificates(p256_key):
    cert = issue_party_certificate("CH", generate_key("p256"))
    with pytest.raises(EpixError) as info:
        SigningIdentity.of(p256_key, cert)
    assert info.value.code is ErrorCode.KEY_ERROR


def test_identity_repr_shows_no_key_material(p256_key):
    identity = SigningIdentity.of(p256_key, issue_party_certificate("CH", p256_key))
    text = repr(identity)
    assert "key=" not in text and "cert_der" not in text
    pem = key_to_pem(p256_key).decode()
    assert pem.splitlines()[1] not in text


# --------------------------------------------------------------------------- trust store


def _cert(party, *, ca=None, start=None, end=None, key=None):
    return issue_party_certificate(party, key or generate_key("p256"), ca=ca, not_before=start, not_after=end)


def test_several_certificates_per_party_for_rollover():
    old, new, other = _cert("FR"), _cert("FR"), _cert("DE")
    trust = TrustStore()
    trust.add("FR", old)
    trust.add("FR", new)
    trust.add("DE", other)
    assert set(map(fingerprint, trust.certificates_for("FR"))) == {fingerprint(old), fingerprint(new)}
    assert trust.parties() == ("DE", "FR")
    assert trust.is_trusted("FR", old) and trust.is_trusted("FR", new)
    assert not trust.is_trusted("FR", other)
    trust.remove("FR", old)
    assert not trust.is_trusted("FR", old)
    assert trust.is_trusted("FR", new)


def test_one_certificate_cannot_be_pinned_for_two_parties():
    cert = _cert("FR")
    trust = TrustStore.of({"FR": [cert]})
    with pytest.raises(EpixError) as info:
        trust.add("DE", cert)
    assert info.value.code is ErrorCode.CONFIG_INVALID


def test_is_trusted_checks_the_validity_window():
    cert = _cert("FR", start=NOW - 10 * DAY, end=NOW + 10 * DAY)
    trust = TrustStore.of({"FR": [cert]})
    assert trust.is_trusted("FR", cert, at=NOW)
    assert not trust.is_trusted("FR", cert, at=NOW + 11 * DAY)
    assert not trust.is_trusted("FR", cert, at=NOW - 11 * DAY)


@pytest.mark.parametrize(
    "start, end, code",
    [
        (NOW - 10 * DAY, NOW - DAY, ErrorCode.CERT_EXPIRED),
        (NOW + DAY, NOW + 10 * DAY, ErrorCode.CERT_NOT_YET_VALID),
    ],
)
def test_check_names_the_window_problem(start, end, code, ca):
    pinned = _cert("FR", start=start, end=end)
    with pytest.raises(EpixError) as info:
        TrustStore.of({"FR": [pinned]}).check(pinned, expected_party="FR")
    assert info.value.code is code
    chained = _cert("FR", ca=ca, start=start, end=end)
    with pytest.raises(EpixError) as info:
        TrustStore(anchors=[ca.certificate]).check(chained, expected_party="FR")
    assert info.value.code is code


def test_untrusted_beats_expired():
    # A stranger's expired certificate is first of all a stranger's.
    stranger = _cert("FR", start=NOW - 10 * DAY, end=NOW - DAY)
    with pytest.raises(EpixError) as info:
        TrustStore.of({"FR": [_cert("FR")]}).check(stranger, expected_party="FR")
    assert info.value.code is ErrorCode.SIGNER_UNTRUSTED


def test_ca_anchor_trusts_the_party_named_in_the_subject(ca):
    cert = _cert("KE", ca=ca)
    trust = TrustStore(anchors=[ca.certificate])
    assert trust.check(cert) == "KE"
    assert trust.is_trusted("KE", cert)
    assert not trust.is_trusted("TH", cert)  # chained, but issued to someone else
    assert not trust.is_trusted("KE", _cert("KE", ca=make_test_ca("Other CA")))
    assert not trust.is_trusted("KE", _cert("KE"))  # self-signed


def test_pinned_for_another_party_is_untrusted():
    cert = _cert("FR")
    with pytest.raises(EpixError) as info:
        TrustStore.of({"FR": [cert]}).check(cert, expected_party="DE")
    assert info.value.code is ErrorCode.SIGNER_UNTRUSTED
    assert info.value.context["pinned_for"] == "FR"


def test_trust_store_from_directory(tmp_path, ca):
    fr_old, fr_new, de = _cert("FR"), _cert("FR"), _cert("DE")
    (tmp_path / "FR").mkdir()
    (tmp_path / "FR" / "2025.pem").write_bytes(cert_to_pem(fr_old))
    (tmp_path / "FR" / "2026.pem").write_bytes(cert_to_pem(fr_new))
    (tmp_path / "DE").mkdir()
    (tmp_path / "DE" / "both.pem").write_bytes(cert_to_pem(de) + cert_to_pem(_cert("DE")))
    (tmp_path / "_ca").mkdir()
    (tmp_path / "_ca" / "root.pem").write_bytes(ca.pem)
    (tmp_path / "README.txt").write_text("ignored")
    trust = TrustStore.from_directory(tmp_path)
    assert trust.parties() == ("DE", "FR")
    assert len(trust.certificates_for("FR")) == 2
    assert len(trust.certificates_for("DE")) == 2
    assert trust.is_trusted("DE", de)
    assert [fingerprint(a) for a in trust.anchors] == [fingerprint(ca.certificate)]
    assert trust.is_trusted("KE", _cert("KE", ca=ca))


def test_trust_store_directory_errors(tmp_path):
    with pytest.raises(EpixError) as info:
        TrustStore.from_directory(tmp_path / "absent")
    assert info.value.code is ErrorCode.CONFIG_INVALID
    (tmp_path / "FR").mkdir()
    (tmp_path / "FR" / "bad.pem").write_bytes(b"not a certificate")
    with pytest.raises(EpixError) as info:
        TrustStore.from_directory(tmp_path)
    assert info.value.code is ErrorCode.KEY_ERROR
    assert "bad.pem" in info.value.detail
