"""The gateway's signing identity and its trust in partners, loaded once at start-up.

One identity signs what this gateway issues: permits on behalf of its Management Authority,
hop envelopes, receipts and error signals. Partners' certificates are pinned per party from the
agreements (several per party during a key rollover).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509

from adapters.exchange_xml import answer_signed_at, canonical_form
from domain.errors import EpixError, ErrorCode
from keys.pki import load_certificates_pem, party_of
from keys.store import KeyStore, TrustStore, check_validity
from keys.xmldsig import Signer, Verified, Verifier
from routing.agreements import Agreements


@dataclass
class Security:
    party: str
    signer: Signer
    trust: TrustStore
    verifier: Verifier
    certificate_pem: bytes
    # Certificates this gateway signed with before a renewal (keys/<party>/previous/): what it
    # signed then is still its own (gateway/customs: its own permits checked again).
    previous_certificates: tuple[x509.Certificate, ...] = ()

    @classmethod
    def load(cls, *, party: str, keys_dir, passphrase: str | None, agreements: Agreements) -> "Security":
        keys = KeyStore(keys_dir)
        identity = keys.load_signing_identity(party, passphrase)
        trust = TrustStore()
        for agreement in agreements:
            for path in agreement.certificates:
                for cert in load_certificates_pem(path.read_bytes(), source=str(path)):
                    trust.add(agreement.party, cert)
        return cls.from_parts(
            party=party, signer=Signer(identity), trust=trust, certificate_pem=identity.cert_pem,
            previous_certificates=keys.previous_certificates(party),
        )  # fmt: skip

    @classmethod
    def from_parts(
        cls, *, party: str, signer: Signer, trust: TrustStore, certificate_pem: bytes, previous_certificates=()
    ) -> "Security":
        return cls(
            party=party, signer=signer, trust=trust, verifier=Verifier(trust), certificate_pem=certificate_pem,
            previous_certificates=tuple(previous_certificates),
        )  # fmt: skip

    @property
    def certificate(self) -> x509.Certificate:
        return self.signer.identity.certificate

    def certificates(self) -> list[tuple[str, str, x509.Certificate]]:
        """(use, party, certificate): this gateway's own (``signing``), then each partner's pinned one."""
        rows = [("signing", self.party, self.certificate)]
        return rows + [("pinned", party, cert) for party in self.trust.parties() for cert in self.trust.certificates_for(party)]

    def unusable(self, now: datetime) -> EpixError | None:
        """Why this gateway's own certificate cannot sign now (outside its validity), or None."""
        try:
            check_validity(self.certificate, now)
        except EpixError as exc:
            return exc
        return None

    def require_usable(self, now: datetime) -> None:
        """Refuse work whose signature partners would refuse: this gateway's own certificate
        outside its validity (``SIGNING_CERT_UNUSABLE``, naming the window)."""
        exc = self.unusable(now)
        if exc is not None:
            raise EpixError(
                ErrorCode.SIGNING_CERT_UNUSABLE,
                f"This gateway's signing certificate cannot be used now: {exc.detail} Nothing was stored; "
                "the operator must install a renewed certificate and restart the gateway.",
                **exc.context,
            )

    def sign(self, data, *, serialised: bytes | None = None) -> bytes:
        return self.signer.sign(data, serialised=serialised)

    def sign_template(self, document: bytes) -> bytes:
        """An exchange document ``envelope_xml`` or ``receipt_xml`` wrote: signed from its canonical
        form, which the template already is (no parse, no C14N)."""
        return self.signer.sign(document, canonical=canonical_form(document))

    def verify(self, data: bytes, party: str, *, parsed=None, at: datetime | None = None) -> Verified:
        """Verify ``data`` as signed by ``party``; on an untrusted signer, say whether it is another partner.

        ``parsed``: ``parse_xml(data)``'s tree when the caller already has it (see ``Verifier.verify``).
        ``at``: the time the certificates are judged at (default now)."""
        try:
            return self.verifier.verify(data, expected_signer=party, parsed=parsed, at=at)
        except EpixError as exc:
            if exc.code is ErrorCode.SIGNER_UNTRUSTED:
                other = self._known_party_of_signature(data, party, at)
                if other is not None:
                    raise EpixError(
                        ErrorCode.SENDER_MISMATCH,
                        f"The document claims to come from {party} but is signed by {other}'s certificate.",
                        claimed=party,
                        signer=other,
                    ) from None
            raise

    def verify_answer(self, data: bytes, party: str, *, earliest: datetime, now: datetime | None = None) -> Verified:
        """``verify`` for a partner's answer to a message (a receipt or an error signal): as of now,
        or, when the partner's certificate has ended since, as of the time the answer says it was
        made, if that lies between ``earliest`` (the message's creation, less the replay window)
        and now.

        A partner answers a message it already holds with the answer it stored then (the same id
        again, the same receipt), and a hub reports the receiver's answer as it came: it can be
        signed with a certificate that has ended since. Judged now, it would be refused for good,
        even after the partner's renewal, and the message could never be settled. The time is the
        one the signature covers, and it cannot be earlier than the message itself."""
        now = now or datetime.now(timezone.utc)
        try:
            return self.verify(data, party, at=now)
        except EpixError as exc:
            if exc.code is not ErrorCode.CERT_EXPIRED:
                raise
            signed_at = answer_signed_at(data)
            if signed_at is None or not earliest <= signed_at <= now:
                raise
            return self.verify(data, party, at=signed_at)

    def _known_party_of_signature(self, data: bytes, claimed: str, at: datetime | None) -> str | None:
        try:
            verified = self.verifier.verify(data, expected_signer=None, at=at)
        except EpixError:
            return None
        signer = verified.signer or party_of(verified.certificate)
        return signer if signer and signer != claimed else None

    def certificates_for(self, party: str) -> list[x509.Certificate]:
        return list(self.trust.certificates_for(party))
