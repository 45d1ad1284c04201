"""Where keys and trusted certificates live: the key store (ours) and the trust store (partners').

Key store layout, under a data directory (never in the repository)::

    <data_dir>/keys/<PARTY>/key.pem     PKCS#8 PEM, mode 0600, encrypted when a passphrase is given
    <data_dir>/keys/<PARTY>/cert.pem    the party's signing certificate

Trust store layout (``TrustStore.from_directory``)::

    <dir>/<PARTY>/*.pem     certificates pinned for PARTY (several at once during a key rollover;
                            one file may hold several certificates)
    <dir>/_ca/*.pem         CA anchors: a certificate chained to one of them is trusted for the
                            party named in its subject (``keys.pki.party_of``)

Private key bytes and passphrases never appear in errors or logs; certificates are described by
subject, serial and fingerprint only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification

from domain.errors import EpixError, ErrorCode
from keys.pki import (
    Algorithm,
    CertificateAuthority,
    PrivateKey,
    algorithm_of,
    cert_to_pem,
    describe,
    fingerprint,
    generate_key,
    issue_party_certificate,
    key_to_pem,
    load_certificates_pem,
    party_of,
)

ANCHOR_DIR = "_ca"
# Every verification looks its signer up by fingerprint, and hashing the DER each time cost more
# than the rest of the trust check. The verifier hands over the same certificate object for the
# same KeyInfo (it caches them), so the cache is keyed by identity, which costs nothing to hash;
# each entry holds its certificate, so an id cannot be reused while it is cached.
_FINGERPRINTS: dict[int, tuple[x509.Certificate, str]] = {}
_FINGERPRINTS_MAX = 1024


def _fingerprint(cert: x509.Certificate) -> str:
    entry = _FINGERPRINTS.get(id(cert))
    if entry is not None and entry[0] is cert:
        return entry[1]
    fp = fingerprint(cert)
    if len(_FINGERPRINTS) >= _FINGERPRINTS_MAX:
        _FINGERPRINTS.clear()
    _FINGERPRINTS[id(cert)] = (cert, fp)
    return fp
_SECOND = timedelta(seconds=1)  # the chain verifier treats the window's edges as outside it


@dataclass(frozen=True, slots=True)
class PartyPaths:
    key: Path
    cert: Path


@dataclass(frozen=True, slots=True)
class SigningIdentity:
    """Everything needed to sign, parsed once: the private key object and its certificate."""

    party: str | None
    key: PrivateKey = field(repr=False)
    certificate: x509.Certificate
    cert_der: bytes = field(repr=False)
    cert_pem: bytes = field(repr=False)

    @property
    def algorithm(self) -> Algorithm:
        return algorithm_of(self.key)

    @classmethod
    def of(cls, key: PrivateKey, certificate: x509.Certificate, party: str | None = None) -> "SigningIdentity":
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise EpixError(
                ErrorCode.KEY_ERROR,
                f"The private key does not belong to the certificate {describe(certificate)}.",
            )
        algorithm_of(key)  # refuse unsupported key types now, not at the first signature
        return cls(
            party=party if party is not None else party_of(certificate),
            key=key,
            certificate=certificate,
            cert_der=certificate.public_bytes(serialization.Encoding.DER),
            cert_pem=cert_to_pem(certificate),
        )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EpixError(ErrorCode.KEY_ERROR, f"The {what} file {path} cannot be read ({exc.strerror}).", path=str(path)) from None


def load_private_key_pem(data: bytes, passphrase: bytes | str | None = None, *, source: str = "key") -> PrivateKey:
    """A private key from PEM; a wrong, missing or superfluous passphrase is a ``KEY_ERROR``."""
    secret = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
    encrypted = b"ENCRYPTED" in data[:64]
    if encrypted and not secret:
        raise EpixError(ErrorCode.KEY_ERROR, f"The private key in {source} is encrypted; a passphrase is required.", source=source)
    try:
        key = serialization.load_pem_private_key(data, password=secret if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # cryptography's types for the same mistakes
        if encrypted:
            detail = f"The private key in {source} could not be decrypted: wrong passphrase."
        else:
            detail = f"The private key in {source} is not a readable PEM private key ({type(exc).__name__})."
        raise EpixError(ErrorCode.KEY_ERROR, detail, source=source) from None
    algorithm_of(key)
    return key  # type: ignore[return-value]


def load_certificate_pem(data: bytes, *, source: str = "certificate") -> x509.Certificate:
    return load_certificates_pem(data, source=source)[0]


def load_signing_identity_files(
    key_path: str | os.PathLike, cert_path: str | os.PathLike, passphrase: bytes | str | None = None
) -> SigningIdentity:
    key_path, cert_path = Path(key_path), Path(cert_path)
    key = load_private_key_pem(_read(key_path, "private key"), passphrase, source=str(key_path))
    cert = load_certificate_pem(_read(cert_path, "certificate"), source=str(cert_path))
    return SigningIdentity.of(key, cert)


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start (no window where the key is world-readable), then replaced atomically.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class KeyStore:
    """This gateway's own signing keys, one directory per party it signs for."""

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "keys"

    def paths(self, party: str) -> PartyPaths:
        if not party or "/" in party or party.startswith("."):
            raise EpixError(ErrorCode.KEY_ERROR, f"{party!r} is not a usable party identifier.", party=party)
        folder = self.root / party
        return PartyPaths(key=folder / "key.pem", cert=folder / "cert.pem")

    def has_party(self, party: str) -> bool:
        paths = self.paths(party)
        return paths.key.exists() and paths.cert.exists()

    def init_party(
        self,
        party: str,
        algorithm: Algorithm | str,
        passphrase: bytes | str | None = None,
        ca: CertificateAuthority | None = None,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        overwrite: bool = False,
    ) -> PartyPaths:
        """Generate a key and certificate (CA-issued or self-signed) for ``party`` and store both."""
        paths = self.paths(party)
        if paths.key.exists() and not overwrite:
            raise EpixError(
                ErrorCode.CONFLICT,
                f"A key for party {party} already exists in {paths.key.parent}; refusing to overwrite it.",
                party=party,
            )
        key = generate_key(algorithm)
        cert = issue_party_certificate(party, key, ca=ca, not_before=not_before, not_after=not_after)
        paths.key.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(paths.key.parent, 0o700)
        _write_private(paths.key, key_to_pem(key, passphrase))
        paths.cert.write_bytes(cert_to_pem(cert))
        return paths

    def previous_dir(self, party: str) -> Path:
        return self.paths(party).cert.parent / "previous"

    def renew_party(
        self, party: str, algorithm: Algorithm | str, passphrase: bytes | str | None = None, ca: CertificateAuthority | None = None
    ) -> PartyPaths:
        """A new key and certificate for ``party``; the certificate it replaces goes to
        ``previous/``, where the gateway still finds it to check what it signed before."""
        paths = self.paths(party)
        if not paths.cert.exists():
            raise EpixError(ErrorCode.KEY_ERROR, f"No certificate for party {party} in {self.root} to renew; use keys init.", party=party)
        old = load_certificate_pem(_read(paths.cert, "certificate"), source=str(paths.cert))
        archive = self.previous_dir(party)
        archive.mkdir(exist_ok=True)
        (archive / f"{fingerprint(old)[:16]}.pem").write_bytes(paths.cert.read_bytes())
        return self.init_party(party, algorithm, passphrase, ca, overwrite=True)

    def previous_certificates(self, party: str) -> list[x509.Certificate]:
        """The certificates ``party`` signed with before (``previous/*.pem``, named by fingerprint)."""
        archive = self.previous_dir(party)
        if not archive.is_dir():
            return []
        return [c for pem in sorted(archive.glob("*.pem")) for c in load_certificates_pem(_read(pem, "certificate"), source=str(pem))]

    def load_signing_identity(self, party: str, passphrase: bytes | str | None = None) -> SigningIdentity:
        paths = self.paths(party)
        if not paths.key.exists():
            raise EpixError(ErrorCode.KEY_ERROR, f"No key for party {party} in {self.root}.", party=party)
        identity = load_signing_identity_files(paths.key, paths.cert, passphrase)
        return SigningIdentity.of(identity.key, identity.certificate, party=party)


def init_party(
    data_dir: str | os.PathLike,
    party: str,
    algorithm: Algorithm | str,
    passphrase: bytes | str | None = None,
    ca: CertificateAuthority | None = None,
    **options,
) -> PartyPaths:
    """``epix keys init --party CC --algorithm ALG --dir DIR``."""
    return KeyStore(data_dir).init_party(party, algorithm, passphrase, ca, **options)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def check_validity(cert: x509.Certificate, at: datetime) -> None:
    """``CERT_NOT_YET_VALID`` / ``CERT_EXPIRED`` for a certificate outside its window at ``at``."""
    if at < cert.not_valid_before_utc:
        raise EpixError(
            ErrorCode.CERT_NOT_YET_VALID,
            f"The signing certificate {describe(cert)} is valid only from {cert.not_valid_before_utc.isoformat()}.",
            not_before=cert.not_valid_before_utc.isoformat(),
            fingerprint=fingerprint(cert),
        )
    if at > cert.not_valid_after_utc:
        raise EpixError(
            ErrorCode.CERT_EXPIRED,
            f"The signing certificate {describe(cert)} expired on {cert.not_valid_after_utc.isoformat()}.",
            not_after=cert.not_valid_after_utc.isoformat(),
            fingerprint=fingerprint(cert),
        )


def _require_digital_signature(policy, cert, key_usage) -> None:
    if key_usage is not None and not key_usage.digital_signature:
        raise ValueError("the certificate's KeyUsage does not allow digitalSignature")


class TrustStore:
    """Partners' certificates pinned per party (several at once, for rollover) and optional CA anchors."""

    def __init__(self, anchors: Iterable[x509.Certificate] = ()) -> None:
        self._pinned: dict[str, dict[str, x509.Certificate]] = {}
        self._owner: dict[str, str] = {}  # fingerprint -> party
        self._anchors: list[x509.Certificate] = []
        self._store: verification.Store | None = None
        for anchor in anchors:
            self.add_anchor(anchor)

    # -- building
    def add(self, party: str, cert: x509.Certificate) -> None:
        fp = fingerprint(cert)
        owner = self._owner.get(fp)
        if owner is not None and owner != party:
            raise EpixError(
                ErrorCode.CONFIG_INVALID,
                f"The certificate {describe(cert)} is already pinned for party {owner}; it cannot also be {party}'s.",
                party=party,
            )
        self._pinned.setdefault(party, {})[fp] = cert
        self._owner[fp] = party

    def remove(self, party: str, cert: x509.Certificate) -> None:
        fp = fingerprint(cert)
        self._pinned.get(party, {}).pop(fp, None)
        if self._owner.get(fp) == party:
            del self._owner[fp]

    def add_anchor(self, cert: x509.Certificate) -> None:
        self._anchors.append(cert)
        self._store = verification.Store(self._anchors)

    @classmethod
    def from_directory(cls, path: str | os.PathLike) -> "TrustStore":
        """Load ``<dir>/<PARTY>/*.pem`` (pinned) and ``<dir>/_ca/*.pem`` (anchors)."""
        base = Path(path)
        if not base.is_dir():
            raise EpixError(ErrorCode.CONFIG_INVALID, f"The trust store directory {base} does not exist.", path=str(base))
        store = cls()
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            for pem in sorted(folder.glob("*.pem")):
                certs = load_certificates_pem(_read(pem, "certificate"), source=str(pem))
                for cert in certs:
                    if folder.name == ANCHOR_DIR:
                        store.add_anchor(cert)
                    else:
                        store.add(folder.name, cert)
        return store

    @classmethod
    def of(cls, pinned: dict[str, Iterable[x509.Certificate]] | None = None, anchors: Iterable[x509.Certificate] = ()) -> "TrustStore":
        store = cls(anchors)
        for party, certs in (pinned or {}).items():
            for cert in certs:
                store.add(party, cert)
        return store

    # -- questions
    def parties(self) -> tuple[str, ...]:
        return tuple(sorted(p for p, certs in self._pinned.items() if certs))

    def certificates_for(self, party: str) -> tuple[x509.Certificate, ...]:
        return tuple(self._pinned.get(party, {}).values())

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        return tuple(self._anchors)

    def marks(self) -> dict[str, str]:
        """Per party, a fingerprint of everything its signatures are checked against: its pinned
        certificates and the CA anchors. Equal marks, equal verdicts on the same bytes (at the
        same time); the store keeps them to see when the trust changed between two starts."""
        anchors = sorted("anchor " + fingerprint(cert) for cert in self._anchors)
        return {
            party: hashlib.sha256("\n".join(sorted(self._pinned[party]) + anchors).encode("ascii")).hexdigest()
            for party in self.parties()
        }

    def pinned_party(self, cert: x509.Certificate) -> str | None:
        return self._owner.get(fingerprint(cert))

    def is_trusted(self, party: str, cert: x509.Certificate, at: datetime | None = None) -> bool:
        try:
            self.check(cert, expected_party=party, at=at)
        except EpixError:
            return False
        return True

    def check(
        self,
        cert: x509.Certificate,
        *,
        expected_party: str | None = None,
        intermediates: Iterable[x509.Certificate] = (),
        at: datetime | None = None,
    ) -> str:
        """The party ``cert`` is trusted for at ``at``, or a specific ``EpixError``.

        Trust first (pinned for the party, or chained to an anchor and naming the party in its
        subject): an unknown signer is ``SIGNER_UNTRUSTED`` whatever its dates. Then the window:
        ``CERT_EXPIRED`` / ``CERT_NOT_YET_VALID``.
        """
        at = at or _now()
        fp = _fingerprint(cert)
        party = self._owner.get(fp)
        if party is not None and (expected_party is None or party == expected_party):
            check_validity(cert, at)
            return party
        if self._store is not None:
            named = party_of(cert)
            if named is not None and (expected_party is None or named == expected_party):
                self._verify_chain(cert, list(intermediates), at)
                return named
        expected = f" for party {expected_party}" if expected_party else ""
        raise EpixError(
            ErrorCode.SIGNER_UNTRUSTED,
            f"The signing certificate {describe(cert)} is not pinned{expected} and does not chain to a trusted CA.",
            expected_signer=expected_party,
            pinned_for=party,
            fingerprint=fp,
        )

    def _verify_chain(self, cert: x509.Certificate, intermediates: list[x509.Certificate], at: datetime) -> None:
        # Verify the chain at a moment inside the leaf's own window, so that a leaf that is merely
        # expired is reported as CERT_EXPIRED rather than as an untrusted signer; the window itself
        # is then checked against the real time.
        moment = min(max(at, cert.not_valid_before_utc + _SECOND), cert.not_valid_after_utc - _SECOND)
        try:
            verifier = (
                verification.PolicyBuilder()
                .store(self._store)
                .time(moment)
                .extension_policies(
                    ee_policy=verification.ExtensionPolicy.permit_all().require_present(
                        x509.KeyUsage, verification.Criticality.AGNOSTIC, _require_digital_signature
                    ),
                    ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                )
                .build_client_verifier()
            )
            verifier.verify(cert, intermediates)
        except verification.VerificationError as exc:
            raise EpixError(
                ErrorCode.SIGNER_UNTRUSTED,
                f"The signing certificate {describe(cert)} does not chain to a trusted CA ({exc}).",
                fingerprint=fingerprint(cert),
            ) from None
        check_validity(cert, at)
