"""Enveloped XML-DSig over a whole permit: sign with our own narrow code, verify with signxml.

The signature profile (the only one we produce, and the only shape we accept)::

    <root> ... <ds:Signature>                          last child of the document root
      SignedInfo: exc-c14n, rsa-sha256 | ecdsa-sha256 (sha384/512 also accepted on verify)
        exactly one Reference URI=""                   the whole document
          Transforms: enveloped-signature, exc-c14n    (c14n 1.0/1.1 accepted on verify)
          DigestMethod sha256 (sha384/512 accepted)
      KeyInfo/X509Data/X509Certificate                 the signer's certificate

Why signing is not signxml's ``XMLSigner``: for RSA-2048 on a 5 KB permit it spent about twice
the RSA operation itself in copying the document (serialise + re-parse, twice), rebuilding the
signature skeleton element by element and re-serialising. Enveloped signing is narrow: digest the
exclusive C14N of the document, splice that digest into a SignedInfo whose canonical form is fixed
(exclusive C14N makes it independent of the document's namespaces, so it is computed once per
signer), sign those bytes, append the skeleton. Interop is proven against xmlsec1 and signxml in
the tests.

Why verification stays on signxml: it is the part where being subtly wrong is dangerous. We add
the policy signxml cannot express (one signature, at the root, one Reference URI="", allowed
transforms, SHA-1 named as such, the signer pinned per party) *before* handing it the document,
give it the already-trusted certificate object (so it neither re-parses PEM nor walks a chain per
call), and return only what it says was signed (``VerifyResult.signed_xml``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import lru_cache
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from lxml import etree
from lxml.builder import ElementMaker
from signxml import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConfiguration,
    SignatureMethod,
    XMLVerifier,
)
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature, SignXMLException

from adapters.ns import DS
from adapters.xmlparse import parse_xml
from domain.errors import EpixError, ErrorCode
from keys.pki import Algorithm, describe, load_certificates_pem, party_of
from keys.store import SigningIdentity, TrustStore, load_signing_identity_files

ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N = CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0.value
SHA256 = DigestAlgorithm.SHA256.value
SIGNATURE_METHOD = {
    Algorithm.RSA2048: SignatureMethod.RSA_SHA256,
    Algorithm.RSA3072: SignatureMethod.RSA_SHA256,
    Algorithm.P256: SignatureMethod.ECDSA_SHA256,
}

ACCEPTED_SIGNATURE_METHODS = frozenset(
    {
        SignatureMethod.RSA_SHA256,
        SignatureMethod.RSA_SHA384,
        SignatureMethod.RSA_SHA512,
        SignatureMethod.ECDSA_SHA256,
        SignatureMethod.ECDSA_SHA384,
        SignatureMethod.ECDSA_SHA512,
    }
)
ACCEPTED_DIGESTS = frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512})
# Comments are outside a URI="" reference; a "#WithComments" variant would put them back in.
ACCEPTED_C14N = frozenset(
    {
        CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0.value,
        CanonicalizationMethod.CANONICAL_XML_1_0.value,
        CanonicalizationMethod.CANONICAL_XML_1_1.value,
    }
)
_ACCEPTED_SIGNATURE_URIS = frozenset(m.value for m in ACCEPTED_SIGNATURE_METHODS)
_ACCEPTED_DIGEST_URIS = frozenset(d.value for d in ACCEPTED_DIGESTS)
_WEAK_MARKERS = ("sha1", "md5", "ripemd")

_DS_SIGNATURE = f"{{{DS}}}Signature"
_NS = {"ds": DS}
_DS = ElementMaker(namespace=DS, nsmap={"ds": DS})
_DIGEST_MARK = "DIGESTVALUEPLACEHOLDER"
_VALUE_MARK = "SIGNATUREVALUEPLACEHOLDER"
# The end tag of the root, alone at the end of a document (trailing whitespace allowed).
_ROOT_END_TAG = re.compile(rb"</([A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?)\s*>\s*\Z")

# signxml's parser settings made as strict as ours: the bytes it parses have already passed
# parse_xml, this only keeps a second parse from being looser than the first.
_SIGNXML_PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


# --------------------------------------------------------------------------- signing


def _skeleton(signature_method: str, cert_der: bytes) -> etree._Element:
    cert_b64 = base64.encodebytes(cert_der).decode("ascii").strip()
    return _DS.Signature(
        _DS.SignedInfo(
            _DS.CanonicalizationMethod(Algorithm=EXC_C14N),
            _DS.SignatureMethod(Algorithm=signature_method),
            _DS.Reference(
                _DS.Transforms(_DS.Transform(Algorithm=ENVELOPED), _DS.Transform(Algorithm=EXC_C14N)),
                _DS.DigestMethod(Algorithm=SHA256),
                _DS.DigestValue(_DIGEST_MARK),
                URI="",
            ),
        ),
        _DS.SignatureValue(),
        _DS.KeyInfo(_DS.X509Data(_DS.X509Certificate("\n" + cert_b64 + "\n"))),
    )


class Signer:
    """Signs whole documents for one identity. Create once: key, certificate and skeleton are prepared here."""

    def __init__(self, identity: SigningIdentity) -> None:
        self.identity = identity
        self.algorithm = identity.algorithm
        self._key = identity.key
        self._skeleton = _skeleton(SIGNATURE_METHOD[self.algorithm].value, identity.cert_der)
        # Exclusive C14N of SignedInfo depends only on SignedInfo (only the ds prefix is visibly
        # used, and xml:* attributes are not inherited), so its canonical bytes are fixed except
        # for the digest value: compute them once and splice the digest in per document.
        signed_info = self._skeleton.find("ds:SignedInfo", _NS)
        canonical = etree.tostring(signed_info, method="c14n", exclusive=True)
        self._signed_info_head, self._signed_info_tail = canonical.split(_DIGEST_MARK.encode("ascii"))
        # The serialised Signature is fixed too, but for the digest and the value: splicing bytes
        # instead of building and serialising elements per document saves most of the overhead.
        self._skeleton[1].text = _VALUE_MARK
        serialised = etree.tostring(self._skeleton, encoding="UTF-8")
        head, rest = serialised.split(_DIGEST_MARK.encode("ascii"))
        middle, tail = rest.split(_VALUE_MARK.encode("ascii"))
        self._signature_parts = (head, middle, tail)
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            self._coordinate_bytes = (self._key.curve.key_size + 7) // 8
            self._ecdsa = ec.ECDSA(hashes.SHA256())
        else:
            self._padding = padding.PKCS1v15()
            self._sha256 = hashes.SHA256()

    @classmethod
    def from_pem_files(
        cls, key_path: str | os.PathLike, cert_path: str | os.PathLike, passphrase: bytes | str | None = None
    ) -> "Signer":
        """``epix permit sign FILE --key KEY.pem --cert CERT.pem``."""
        return cls(load_signing_identity_files(key_path, cert_path, passphrase))

    def _signature_value(self, signed_info: bytes) -> bytes:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(signed_info, self._padding, self._sha256)
        # XML-DSig wants ECDSA as the raw r||s, each padded to the curve size, not DER (RFC 4050).
        r, s = decode_dss_signature(self._key.sign(signed_info, self._ecdsa))
        n = self._coordinate_bytes
        return r.to_bytes(n, "big") + s.to_bytes(n, "big")

    def sign(self, document: bytes | etree._Element) -> bytes:
        """The document with an enveloped signature as the root's last child, as UTF-8 bytes.

        Bytes go through the hardened parser first. An element must be a document root; it is
        not modified.
        """
        if isinstance(document, (bytes, bytearray, memoryview)):
            data = bytes(document)
            tree = parse_xml(data, what="document to sign")
        elif isinstance(document, etree._Element):
            if document.getparent() is not None:
                raise ValueError("Signer.sign signs whole documents: pass the root element")
            tree = document.getroottree()
            data = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
        else:
            raise TypeError("Signer.sign takes bytes or an lxml root element")
        root = tree.getroot()
        if next(root.iter(_DS_SIGNATURE), None) is not None:
            raise EpixError(
                ErrorCode.SIGNATURE_DUPLICATED,
                "The document is already signed; a permit carries exactly one signature.",
            )
        # URI="" is the document minus comments; tree-level exclusive C14N is exactly that.
        digest = hashlib.sha256(etree.tostring(tree, method="c14n", exclusive=True, with_comments=False)).digest()
        digest_b64 = base64.b64encode(digest)
        value_b64 = base64.b64encode(self._signature_value(self._signed_info_head + digest_b64 + self._signed_info_tail))
        head, middle, tail = self._signature_parts
        signature = head + digest_b64 + middle + value_b64 + tail
        # Only the last end tag can be the root's; matching there alone keeps this O(1).
        end = _ROOT_END_TAG.match(data, max(data.rfind(b"</"), 0))
        if end is not None and end.group(1).decode("utf-8") == _qualified_name(root):
            # Inserting one element right before the root's end tag adds exactly what the
            # enveloped-signature transform removes again, so the digest above still holds.
            return data[: end.start()] + signature + data[end.start() :]
        # An empty root (<a/>) or something after the root: let lxml place the signature.
        element = parse_xml(signature, what="signature").getroot()
        root.append(element)
        try:
            return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
        finally:
            root.remove(element)


def _qualified_name(element: etree._Element) -> str:
    local = etree.QName(element).localname
    return f"{element.prefix}:{local}" if element.prefix else local


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verified signature vouches for, and nothing else.

    ``signed_root`` is re-parsed from the canonical bytes that were digested (comments and the
    signature itself are gone), so nothing unsigned can be read from it.
    """

    signed_root: etree._Element
    signed_bytes: bytes
    signer: str
    certificate: x509.Certificate


@lru_cache(maxsize=512)
def _certificate_from_der(der: bytes) -> x509.Certificate:
    # Partners send the same few certificates over and over: parse each DER once.
    return x509.load_der_x509_certificate(der)


def _refuse_weak(uri: str | None, what: str, accepted: frozenset[str]) -> None:
    lowered = (uri or "").lower()
    if any(marker in lowered for marker in _WEAK_MARKERS):
        raise EpixError(
            ErrorCode.WEAK_ALGORITHM,
            f"The signature's {what} is {uri}; SHA-1, MD5 and RIPEMD are refused.",
            algorithm=uri,
        )
    if uri not in accepted:
        raise EpixError(
            ErrorCode.WEAK_ALGORITHM,
            f"The signature's {what} {uri!r} is not one the gateway accepts.",
            algorithm=uri,
        )


def _one(parent: etree._Element, path: str, what: str) -> etree._Element:
    found = parent.findall(path, _NS)
    if len(found) != 1:
        raise EpixError(
            ErrorCode.SIGNATURE_INVALID,
            f"The signature has {len(found)} {what} elements where exactly one is required.",
        )
    return found[0]


def _find_signature(root: etree._Element) -> etree._Element:
    signatures = list(root.iter(_DS_SIGNATURE))
    if not signatures:
        raise EpixError(ErrorCode.SIGNATURE_MISSING, "The document carries no ds:Signature.")
    if len(signatures) > 1:
        raise EpixError(
            ErrorCode.SIGNATURE_DUPLICATED,
            f"The document carries {len(signatures)} ds:Signature elements; exactly one is accepted.",
            count=len(signatures),
        )
    signature = signatures[0]
    if signature.getparent() is not root:
        where = "is the document root" if signature is root else f"sits inside {signature.getparent().tag}"
        raise EpixError(
            ErrorCode.SIGNATURE_WRAPPED,
            f"The signature {where}, not directly under the document root.",
        )
    return signature


def _check_profile(signature: etree._Element) -> None:
    """The signature policy, checked on the parsed tree before any cryptography."""
    signed_info = _one(signature, "ds:SignedInfo", "SignedInfo")
    c14n = _one(signed_info, "ds:CanonicalizationMethod", "CanonicalizationMethod").get("Algorithm")
    _refuse_weak(
        _one(signed_info, "ds:SignatureMethod", "SignatureMethod").get("Algorithm"),
        "signature method",
        _ACCEPTED_SIGNATURE_URIS,
    )
    if c14n not in ACCEPTED_C14N:
        raise EpixError(
            ErrorCode.SIGNATURE_INVALID, f"The signature's canonicalization {c14n!r} is not accepted.", algorithm=c14n
        )
    references = signed_info.findall("ds:Reference", _NS)
    if len(references) != 1:
        raise EpixError(
            ErrorCode.SIGNATURE_WRAPPED,
            f"The signature has {len(references)} references; exactly one, covering the whole document, is accepted.",
            references=len(references),
        )
    reference = references[0]
    uri = reference.get("URI")
    if uri != "":
        raise EpixError(
            ErrorCode.SIGNATURE_WRAPPED,
            f'The signature references {uri!r}, not the whole document (URI="").',
            uri=uri,
        )
    for method in signature.iterfind(".//ds:DigestMethod", _NS):
        _refuse_weak(method.get("Algorithm"), "digest method", _ACCEPTED_DIGEST_URIS)
    transforms = [t.get("Algorithm") for t in reference.iterfind("ds:Transforms/ds:Transform", _NS)]
    if transforms.count(ENVELOPED) != 1 or any(t != ENVELOPED and t not in ACCEPTED_C14N for t in transforms):
        raise EpixError(
            ErrorCode.SIGNATURE_WRAPPED,
            f"The reference's transforms {transforms} are not enveloped-signature plus canonicalization; "
            "any other transform could narrow what is signed.",
            transforms=transforms,
        )


def _signer_certificates(signature: etree._Element) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """(leaf, intermediates) from KeyInfo/X509Data; the leaf issues no other certificate there."""
    texts = [el.text or "" for el in signature.iterfind("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _NS)]
    if not texts:
        raise EpixError(ErrorCode.CERT_INVALID, "The signature carries no X509Certificate in its KeyInfo.")
    certs = []
    for text in texts:
        try:
            certs.append(_certificate_from_der(base64.b64decode("".join(text.split()), validate=True)))
        except (ValueError, binascii.Error):
            raise EpixError(ErrorCode.CERT_INVALID, "An X509Certificate in the signature is not a readable certificate.") from None
    if len(certs) == 1:
        return certs[0], []
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    leaves = [c for c in certs if c.subject not in issuers]
    if len(leaves) != 1:
        raise EpixError(ErrorCode.CERT_INVALID, "The certificates in the signature's KeyInfo do not form one chain.")
    leaf = leaves[0]
    return leaf, [c for c in certs if c is not leaf]


class _SignxmlVerifier(XMLVerifier):
    """signxml's verifier, with its parser as strict as ours."""

    _default_parser = etree.XMLParser(**_SIGNXML_PARSER_OPTIONS)

    def get_root(self, data):
        # The tree we pass is private to one verify() call and fresh from parse_xml (which has
        # refused DTDs, entities and PIs); signxml copies before it mutates anything, so its
        # defensive serialise-and-reparse of the whole document would only cost time.
        if isinstance(data, etree._Element):
            return data
        return super().get_root(data)


_BASE_CONFIG = SignatureConfiguration(
    require_x509=True,
    location="./",  # a child of the root, nowhere else
    expect_references=1,
    signature_methods=ACCEPTED_SIGNATURE_METHODS,
    digest_algorithms=ACCEPTED_DIGESTS,
    ignore_ambiguous_key_info=False,
)


def _signxml_error(exc: Exception) -> EpixError:
    message = str(exc)
    if isinstance(exc, InvalidDigest):
        return EpixError(ErrorCode.DIGEST_MISMATCH, "The document was changed after it was signed (digest mismatch).")
    if isinstance(exc, InvalidCertificate):
        return EpixError(ErrorCode.CERT_INVALID, f"The signing certificate was refused: {message}")
    if isinstance(exc, InvalidSignature):
        return EpixError(ErrorCode.SIGNATURE_INVALID, f"The signature value does not verify: {message}")
    if isinstance(exc, InvalidInput) and "forbidden by configuration" in message:
        return EpixError(ErrorCode.WEAK_ALGORITHM, f"The signature uses a refused algorithm: {message}")
    if isinstance(exc, etree.DocumentInvalid):
        return EpixError(ErrorCode.SIGNATURE_INVALID, f"The ds:Signature element does not follow the XML-DSig schema: {message}")
    return EpixError(ErrorCode.SIGNATURE_INVALID, f"The signature could not be processed: {message}", error=type(exc).__name__)


class Verifier:
    """Verifies enveloped permit signatures against a trust store. Create once, call ``verify`` many times."""

    def __init__(self, trust: TrustStore | Iterable[x509.Certificate], *, anchors: Iterable[x509.Certificate] = ()) -> None:
        if isinstance(trust, TrustStore):
            self.trust = trust
            for anchor in anchors:
                trust.add_anchor(anchor)
        else:
            self.trust = TrustStore(anchors)
            for cert in trust:
                self.trust.add(party_of(cert) or cert.subject.rfc4514_string(), cert)

    @classmethod
    def from_pem_files(
        cls,
        *,
        cert: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
        ca: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    ) -> "Verifier":
        """``epix permit verify FILE (--cert CERT.pem | --ca CA.pem)``: pinned certificates and/or CA anchors."""

        def load(paths) -> list[x509.Certificate]:
            if paths is None:
                return []
            if isinstance(paths, (str, os.PathLike)):
                paths = [paths]
            certs: list[x509.Certificate] = []
            for path in paths:
                try:
                    with open(path, "rb") as handle:
                        data = handle.read()
                except OSError as exc:
                    raise EpixError(ErrorCode.KEY_ERROR, f"The certificate file {path} cannot be read ({exc.strerror}).") from None
                certs += load_certificates_pem(data, source=str(path))
            return certs

        pinned, anchors = load(cert), load(ca)
        if not pinned and not anchors:
            raise EpixError(ErrorCode.CONFIG_INVALID, "A verifier needs at least one pinned certificate or CA.")
        return cls(pinned, anchors=anchors)

    def verify(self, data: bytes, expected_signer: str | None = None, *, at: datetime | None = None) -> Verified:
        """Check ``data``'s signature and return only what was signed, or raise a specific ``EpixError``.

        ``expected_signer`` pins the party whose certificate must have signed (the issuing MA of
        the permit, the partner at the other end of a hop); ``at`` is the verification time.
        """
        at = at or datetime.now(timezone.utc)
        tree = parse_xml(data, what="signed document")
        signature = _find_signature(tree.getroot())
        _check_profile(signature)
        certificate, intermediates = _signer_certificates(signature)
        party = self.trust.check(certificate, expected_party=expected_signer, intermediates=intermediates, at=at)
        try:
            result = _SignxmlVerifier().verify(
                tree.getroot(),
                x509_cert=certificate,
                expect_config=replace(_BASE_CONFIG, verification_time=at),
            )
        except (SignXMLException, etree.DocumentInvalid, ValueError, TypeError) as exc:
            error = _signxml_error(exc)
            error.context.update(signer=party, certificate=describe(certificate))
            raise error from None
        if result.signed_xml is None:
            raise EpixError(ErrorCode.SIGNATURE_INVALID, "What the signature covers is not an XML document.")
        return Verified(
            signed_root=result.signed_xml,
            signed_bytes=result.signed_data,
            signer=party,
            certificate=certificate,
        )
