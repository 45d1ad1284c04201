"""The closed catalogue of errors, shared by HTTP answers, signed receipts, the CLI and logs.

Every failure the gateway reports carries one of these stable codes. The HTTP status is part
of the catalogue so that every front end maps a code the same way; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


@dataclass(frozen=True, slots=True)
class _Spec:
    status: int
    sentence: str
    retryable: bool = False


class ErrorCode(Enum):
    # Input that is not usable XML or JSON at all.
    XML_MALFORMED = _Spec(400, "The document is not well-formed XML.")
    XML_FORBIDDEN_CONSTRUCT = _Spec(
        400, "The document uses a DTD, an entity or a processing instruction, which are refused."
    )
    XML_TOO_LARGE = _Spec(413, "The document is larger than the gateway accepts.")
    XML_TOO_DEEP = _Spec(400, "The document nests elements deeper than the gateway accepts.")
    XML_ENCODING = _Spec(400, "The document is not encoded in UTF-8.")
    JSON_MALFORMED = _Spec(400, "The body is not valid JSON of the expected shape.")
    UNSUPPORTED_MEDIA_TYPE = _Spec(415, "The body's content type is not one the gateway reads.")
    NOT_A_PERMIT = _Spec(422, "The document is not a CITES e-permit the gateway can read.")
    SCHEMA_INVALID = _Spec(422, "The document does not match the CITESEPermit schema.")
    PERMIT_INVALID = _Spec(422, "The permit breaks one or more CITES permit rules.")
    # Signatures and certificates.
    SIGNATURE_MISSING = _Spec(422, "The document carries no XML signature.")
    SIGNATURE_DUPLICATED = _Spec(422, "The document carries more than one XML signature.")
    SIGNATURE_WRAPPED = _Spec(
        422,
        "The signature does not cover the whole document as an enveloped signature "
        "at the root (possible signature-wrapping attack).",
    )
    SIGNATURE_INVALID = _Spec(422, "The signature value does not verify.")
    DIGEST_MISMATCH = _Spec(422, "The document was changed after it was signed.")
    WEAK_ALGORITHM = _Spec(422, "The signature uses an algorithm that is refused (SHA-1 or weaker).")
    SIGNER_UNTRUSTED = _Spec(422, "The document was signed by a certificate that is not trusted for this party.")
    CERT_EXPIRED = _Spec(422, "The signing certificate has expired.")
    CERT_NOT_YET_VALID = _Spec(422, "The signing certificate is not valid yet.")
    CERT_INVALID = _Spec(422, "The signing certificate could not be read or is not usable.")
    KEY_ERROR = _Spec(400, "The key or certificate could not be loaded.")
    # Exchange and access.
    UNAUTHENTICATED = _Spec(401, "The request carries no valid credentials.")
    FORBIDDEN = _Spec(403, "The credentials do not allow this action or this party.")
    UNKNOWN_PARTNER = _Spec(403, "The party is not known to this gateway or has no agreement.")
    NOT_AUTHORISED_FOR_DOCUMENT = _Spec(403, "The agreement does not allow this document or action.")
    MISADDRESSED = _Spec(422, "The message is not addressed to this gateway.")
    SENDER_MISMATCH = _Spec(403, "The sender named in the message is not the party that authenticated.")
    ENVELOPE_INVALID = _Spec(422, "The exchange envelope is missing a field or does not match its schema.")
    ENVELOPE_SIGNATURE_INVALID = _Spec(422, "The exchange envelope's signature does not verify.")
    REPLAY_REJECTED = _Spec(409, "The message was created outside the accepted time window (possible replay).")
    DUPLICATE_MESSAGE = _Spec(200, "The message was already received; the original receipt is returned.")
    IDEMPOTENCY_CONFLICT = _Spec(409, "The idempotency key was already used for a different request.")
    VERSION_CONFLICT = _Spec(409, "This permit number and version is already held with other content.")
    NOT_FOUND = _Spec(404, "Nothing is known under that identifier.")
    CONFLICT = _Spec(409, "The request conflicts with the current state.")
    QUANTITY_EXCEEDED = _Spec(409, "The write-off would take more than a permit line has left; nothing was written.")
    PAYLOAD_TOO_LARGE = _Spec(413, "The request body is larger than the gateway accepts.")
    # Delivery outcomes.
    PARTNER_UNAVAILABLE = _Spec(503, "The partner gateway could not be reached.", retryable=True)
    PARTNER_REJECTED = _Spec(502, "The partner gateway refused the message.")
    RECEIPT_INVALID = _Spec(502, "The partner's receipt is missing, unsigned or does not match what was sent.")
    CONFIG_INVALID = _Spec(500, "The gateway configuration is invalid.")
    STORE_UNAVAILABLE = _Spec(503, "The gateway's database cannot be reached; try again shortly.", retryable=True)
    QUEUE_UNAVAILABLE = _Spec(503, "The gateway's message broker cannot be reached or did not confirm; try again shortly.", retryable=True)
    SIGNING_CERT_UNUSABLE = _Spec(503, "This gateway's own signing certificate is not valid now; an operator must renew it.")
    INTERNAL_ERROR = _Spec(500, "The gateway failed unexpectedly; the operator has the details.", retryable=True)

    @property
    def status(self) -> int:
        return self.value.status

    @property
    def sentence(self) -> str:
        return self.value.sentence

    @property
    def retryable(self) -> bool:
        return self.value.retryable


class EpixError(Exception):
    """The project's one error root: a stable code, a sentence a person understands, context."""

    def __init__(self, code: ErrorCode, detail: str | None = None, **context: Any) -> None:
        self.code = code
        self.detail = detail or code.sentence
        self.context = context
        super().__init__(f"{code.name}: {self.detail}")

    @property
    def status(self) -> int:
        return self.code.status

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code.name, "message": self.detail}
        if self.context:
            body["context"] = {k: v for k, v in self.context.items() if v is not None}
        return body
