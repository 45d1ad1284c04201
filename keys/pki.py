"""Keys and X.509 certificates for the gateway and its tests, made with ``cryptography``.

A party (a Management Authority's gateway, a hub) signs with a key whose certificate names it
twice: a human-readable CN and an ``organizationIdentifier`` of the form ``EPIX-<party>`` which
is what ``party_of`` reads back. A throwaway CA (``make_test_ca``) lets tests and the demo build
chains; validity windows are explicit so tests can make expired and not-yet-valid certificates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from domain.errors import EpixError, ErrorCode

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]
PublicKey = Union[rsa.RSAPublicKey, ec.EllipticCurvePublicKey]

PARTY_ID_PREFIX = "EPIX-"
DEFAULT_PARTY_DAYS = 2 * 365
DEFAULT_CA_DAYS = 10 * 365
# Certificates are back-dated a little so a partner whose clock lags does not see "not yet valid".
_CLOCK_SKEW = timedelta(minutes=5)


class Algorithm(str, Enum):
    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"
    P256 = "p256"

    @classmethod
    def parse(cls, value: "str | Algorithm") -> "Algorithm":
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(a.value for a in cls)
            raise EpixError(
                ErrorCode.KEY_ERROR, f"Unknown key algorithm {value!r}; choose one of {choices}.", algorithm=str(value)
            ) from None


def generate_key(algorithm: "Algorithm | str") -> PrivateKey:
    algorithm = Algorithm.parse(algorithm)
    if algorithm is Algorithm.P256:
        return ec.generate_private_key(ec.SECP256R1())
    bits = 2048 if algorithm is Algorithm.RSA2048 else 3072
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def algorithm_of(key: PrivateKey | PublicKey) -> Algorithm:
    """Which of our algorithms a key (private or public) belongs to; anything else is refused."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and key.curve.name == "secp256r1":
        return Algorithm.P256
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)) and key.key_size in (2048, 3072):
        return Algorithm.RSA2048 if key.key_size == 2048 else Algorithm.RSA3072
    raise EpixError(
        ErrorCode.KEY_ERROR,
        f"Keys of type {type(key).__name__} ({getattr(key, 'key_size', '?')} bits) are not supported; "
        "use RSA-2048, RSA-3072 or ECDSA P-256.",
    )


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA key and its self-signed certificate. For tests and demos only: the key is in memory."""

    name: str
    key: PrivateKey
    certificate: x509.Certificate

    @property
    def pem(self) -> bytes:
        return cert_to_pem(self.certificate)


def _window(not_before: datetime | None, not_after: datetime | None, days: int) -> tuple[datetime, datetime]:
    start = not_before or (datetime.now(timezone.utc) - _CLOCK_SKEW)
    end = not_after or (start + timedelta(days=days))
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("certificate validity times must be timezone-aware")
    if end <= start:
        raise ValueError("a certificate's not_after must be later than its not_before")
    return start, end


def _ski(public_key: PublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def make_test_ca(
    name: str = "EPIX Test CA",
    *,
    algorithm: "Algorithm | str" = Algorithm.P256,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: int = DEFAULT_CA_DAYS,
) -> CertificateAuthority:
    """A throwaway root CA able to issue party certificates (path length 0)."""
    key = generate_key(algorithm)
    start, end = _window(not_before, not_after, days)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "epix-gateway test PKI"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(name=name, key=key, certificate=cert)


def party_subject(party: str, organisation: str | None = None) -> x509.Name:
    attributes = []
    if len(party) == 2 and party.isalpha() and party.isupper():
        attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, party))
    attributes += [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation or f"CITES Management Authority {party}"),
        x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, PARTY_ID_PREFIX + party),
        x509.NameAttribute(NameOID.COMMON_NAME, f"epix-gateway {party}"),
    ]
    return x509.Name(attributes)


def issue_party_certificate(
    party: str,
    key: PrivateKey,
    *,
    ca: CertificateAuthority | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: int = DEFAULT_PARTY_DAYS,
    organisation: str | None = None,
) -> x509.Certificate:
    """A signing certificate for ``party``: issued by ``ca``, or self-signed when no CA is given."""
    if not party or not party.replace("-", "").replace("_", "").isalnum():
        raise EpixError(ErrorCode.KEY_ERROR, f"{party!r} is not a usable party identifier.", party=party)
    start, end = _window(not_before, not_after, days)
    subject = party_subject(party, organisation)
    issuer_name = ca.certificate.subject if ca else subject
    signing_key = ca.key if ca else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(key.public_key()), critical=False)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


def party_of(cert: x509.Certificate) -> str | None:
    """The party a certificate was issued to (its ``EPIX-<party>`` organizationIdentifier), if any."""
    for attribute in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER):
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.decode("utf-8", "replace")
        if value.startswith(PARTY_ID_PREFIX):
            return value[len(PARTY_ID_PREFIX) :]
    return None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, hex: how certificates are pinned and logged."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def describe(cert: x509.Certificate) -> str:
    """A short, safe description of a certificate for error messages and logs (no key material)."""
    return f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x}, sha256 {fingerprint(cert)[:16]}…)"


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_to_pem(key: PrivateKey, passphrase: bytes | str | None = None) -> bytes:
    """PKCS#8 PEM, encrypted with the best available scheme when a passphrase is given."""
    if passphrase:
        secret = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
        encryption: serialization.KeySerializationEncryption = serialization.BestAvailableEncryption(secret)
    else:
        encryption = serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def with_names_decoded(cert: x509.Certificate) -> x509.Certificate:
    """``cert``, its subject and issuer decoded now. cryptography decodes them when first read, so
    a certificate can load whose subject does not decode (one changed byte of a KeyInfo's base64
    can do it); read later by whatever describes or trusts it, that would be a crash instead of a
    refusal. Called where a certificate is read: it raises ValueError there."""
    _ = (cert.subject, cert.issuer)
    return cert


def load_certificates_pem(data: bytes, *, source: str = "PEM data") -> list[x509.Certificate]:
    """Every certificate in a PEM blob; a blob with none or with a broken one is a ``KEY_ERROR``."""
    try:
        certs = [with_names_decoded(c) for c in x509.load_pem_x509_certificates(data)]
    except ValueError as exc:
        raise EpixError(ErrorCode.KEY_ERROR, f"{source} holds no readable PEM certificate ({exc}).", source=source) from None
    return certs
