"""Enveloped XML-DSig over a whole permit: our own narrow signer and verifier for one profile.

The signature profile (the only one we produce, and the only shape we accept)::

    <root> ... <ds:Signature>                          the root's last element child, the only one
      SignedInfo: exc-c14n, rsa-sha256 | ecdsa-sha256 (sha384/512 also accepted on verify)
        exactly one Reference URI=""                   the whole document
          Transforms: enveloped-signature, exc-c14n    exactly these two, in this order
          DigestMethod sha256 (sha384/512 accepted)
      SignatureValue
      KeyInfo/X509Data/X509Certificate                 the signer's certificate (and its chain)

Both exclusive C14N steps may carry an ``ec:InclusiveNamespaces PrefixList`` (xmlsec1 writes
one when its template has it); the prefixes are honoured exactly as libxml2, xmlsec1 and signxml
do.

Why signing is not signxml's ``XMLSigner``: for RSA-2048 on a 5 KB permit it spent about twice
the RSA operation itself in copying the document (serialise + re-parse, twice), rebuilding the
signature skeleton element by element and re-serialising. Enveloped signing is narrow: digest the
exclusive C14N of the document, splice that digest into a SignedInfo whose canonical form is fixed
(exclusive C14N makes it independent of the document's namespaces, so it is computed once per
signer), sign those bytes, append the skeleton.

Why verification is not signxml's ``XMLVerifier`` either: it re-parsed and copied the document
about five times per call, which made verifying cost thirty times the RSA operation. Verifying
exactly one profile is short: strict policy checks on the parsed tree (everything else is
refused before any cryptography), the trust store decides on the certificate, the SignatureValue
is checked over the exclusive C14N of SignedInfo in its document context, then the document
without its Signature is canonicalised and digested. What is returned holds exactly those
digested bytes (the tree itself, or a re-parse of the bytes when comments could hide unsigned
text), so nothing unsigned can be read from it. signxml and xmlsec1 stay in the tests
as independent implementations that must agree with this one (tests/unit/test_verifier_crosscheck.py,
tests/interop/test_xmlsec1.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Callable, Iterable, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from lxml import etree
from lxml.builder import ElementMaker

from adapters.ns import DS
from adapters.xmlparse import DEFAULT_LIMITS, XmlLimits, parse_xml
from domain.errors import EpixError, ErrorCode
from keys.pki import Algorithm, describe, load_certificates_pem, party_of, with_names_decoded
from keys.store import SigningIdentity, TrustStore, load_signing_identity_files

ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
EXC_C14N_NS = EXC_C14N  # the namespace of ec:InclusiveNamespaces is the algorithm's URI
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA384 = "http://www.w3.org/2001/04/xmldsig-more#sha384"
SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
ECDSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
ECDSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"
SIGNATURE_METHOD = {
    Algorithm.RSA2048: RSA_SHA256,
    Algorithm.RSA3072: RSA_SHA256,
    Algorithm.P256: ECDSA_SHA256,
}
# What each accepted method means to cryptography: (key type, hash).
_SIGNATURE_METHODS: dict[str, tuple[type, Callable[[], hashes.HashAlgorithm]]] = {
    RSA_SHA256: (rsa.RSAPublicKey, hashes.SHA256),
    RSA_SHA384: (rsa.RSAPublicKey, hashes.SHA384),
    RSA_SHA512: (rsa.RSAPublicKey, hashes.SHA512),
    ECDSA_SHA256: (ec.EllipticCurvePublicKey, hashes.SHA256),
    ECDSA_SHA384: (ec.EllipticCurvePublicKey, hashes.SHA384),
    ECDSA_SHA512: (ec.EllipticCurvePublicKey, hashes.SHA512),
}
_DIGEST_METHODS: dict[str, Callable[[], "hashlib._Hash"]] = {
    SHA256: hashlib.sha256,
    SHA384: hashlib.sha384,
    SHA512: hashlib.sha512,
}
ACCEPTED_SIGNATURE_METHODS = frozenset(_SIGNATURE_METHODS)
ACCEPTED_DIGEST_METHODS = frozenset(_DIGEST_METHODS)
# The only transforms a Reference may carry, in this order. Comments are outside URI="" and
# exc-c14n without "#WithComments" keeps them out; any other transform could narrow what is signed.
REQUIRED_TRANSFORMS = (ENVELOPED, EXC_C14N)
_WEAK_MARKERS = ("sha1", "md5", "ripemd")

_DS_SIGNATURE = f"{{{DS}}}Signature"
_NS = {"ds": DS}
_DS = ElementMaker(namespace=DS, nsmap={"ds": DS})
_DIGEST_MARK = "DIGESTVALUEPLACEHOLDER"
_VALUE_MARK = "SIGNATUREVALUEPLACEHOLDER"
# The end tag of the root, alone at the end of a document (trailing whitespace allowed).
_ROOT_END_TAG = re.compile(rb"</([A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?)\s*>\s*\Z")

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
        self._skeleton = _skeleton(SIGNATURE_METHOD[self.algorithm], identity.cert_der)
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

    def sign(
        self, document: bytes | etree._Element, *, canonical: bytes | None = None, serialised: bytes | None = None
    ) -> bytes:
        """The document with an enveloped signature as the root's last child, as UTF-8 bytes.

        Bytes go through the hardened parser first. An element must be a document root; it is
        not modified. ``canonical``: the exclusive C14N of ``document`` (bytes), when the caller
        wrote the document so that it knows it (the exchange templates); it spares the parse and
        the canonicalisation, and must be exact, or the signature will not verify. ``serialised``:
        the element's document as ``etree.tostring(root, xml_declaration=True, encoding="UTF-8")``
        writes it, when the caller needed those bytes too; it spares serialising twice.
        """
        if canonical is not None and isinstance(document, (bytes, bytearray, memoryview)):
            return self._sign_canonical(bytes(document), canonical)
        if isinstance(document, (bytes, bytearray, memoryview)):
            data = bytes(document)
            tree = parse_xml(data, what="document to sign")
        elif isinstance(document, etree._Element):
            if document.getparent() is not None:
                raise ValueError("Signer.sign signs whole documents: pass the root element")
            tree = document.getroottree()
            data = serialised if serialised is not None else etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
        else:
            raise TypeError("Signer.sign takes bytes or an lxml root element")
        root = tree.getroot()
        if next(root.iter(_DS_SIGNATURE), None) is not None:
            raise EpixError(
                ErrorCode.SIGNATURE_DUPLICATED,
                "The document is already signed; a permit carries exactly one signature.",
            )
        # URI="" is the document minus comments; tree-level exclusive C14N is exactly that.
        try:
            canonical = etree.tostring(tree, method="c14n", exclusive=True, with_comments=False)
        except etree.C14NError as exc:
            raise EpixError(ErrorCode.XML_MALFORMED, f"The document cannot be canonicalised for signing ({exc}).") from None
        signature = self._signature(canonical)
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

    def _signature(self, canonical: bytes) -> bytes:
        """The serialised ds:Signature over a document whose exclusive C14N is ``canonical``."""
        digest_b64 = base64.b64encode(hashlib.sha256(canonical).digest())
        value_b64 = base64.b64encode(self._signature_value(self._signed_info_head + digest_b64 + self._signed_info_tail))
        head, middle, tail = self._signature_parts
        return head + digest_b64 + middle + value_b64 + tail

    def _sign_canonical(self, data: bytes, canonical: bytes) -> bytes:
        end = _ROOT_END_TAG.match(data, max(data.rfind(b"</"), 0))
        if end is None:
            raise ValueError("a document signed from its canonical form must end with its root's end tag")
        return data[: end.start()] + self._signature(canonical) + data[end.start() :]


def _qualified_name(element: etree._Element) -> str:
    local = etree.QName(element).localname
    return f"{element.prefix}:{local}" if element.prefix else local



# --------------------------------------------------------------------------- verification

_SIGNED_INFO = f"{{{DS}}}SignedInfo"
_SIGNATURE_VALUE = f"{{{DS}}}SignatureValue"
_KEY_INFO = f"{{{DS}}}KeyInfo"
_CANONICALIZATION_METHOD = f"{{{DS}}}CanonicalizationMethod"
_SIGNATURE_METHOD = f"{{{DS}}}SignatureMethod"
_REFERENCE = f"{{{DS}}}Reference"
_TRANSFORMS = f"{{{DS}}}Transforms"
_TRANSFORM = f"{{{DS}}}Transform"
_DIGEST_METHOD = f"{{{DS}}}DigestMethod"
_DIGEST_VALUE = f"{{{DS}}}DigestValue"
_X509_DATA = f"{{{DS}}}X509Data"
_X509_CERTIFICATE = f"{{{DS}}}X509Certificate"
_INCLUSIVE_NAMESPACES = f"{{{EXC_C14N_NS}}}InclusiveNamespaces"
_DIGEST_SIZES = {uri: make().digest_size for uri, make in _DIGEST_METHODS.items()}
_HASHES = {uri: make() for uri, (_, make) in _SIGNATURE_METHODS.items()}
_ECDSA = {uri: ec.ECDSA(_HASHES[uri]) for uri, (kind, _) in _SIGNATURE_METHODS.items() if kind is ec.EllipticCurvePublicKey}
_PKCS1 = padding.PKCS1v15()
_XML_SPACE = b" \t\r\n"  # what base64Binary content may be broken with
_PREFIX = re.compile(r"[^\W\d][\w.\-]*|#default")
# Exclusive C14N re-declares a namespace on every element that uses it below an element that does
# not, so the canonical form can be much larger than the document (a long namespace URI used by
# many siblings). It is built in chunks and refused past this many times the input limit, which
# is far above what a permit grows by (about 1.4x) and far below what an attacker could make.
CANONICAL_GROWTH = 4


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verified signature vouches for, and nothing else.

    ``signed_root`` holds exactly ``signed_bytes``, the canonical bytes that were digested
    (comments and the signature itself are gone), so nothing unsigned can be read from it: it is
    the verified tree without its Signature, or re-parsed from those bytes when the document had
    comments.
    """

    signed_root: etree._Element
    signed_bytes: bytes
    signer: str
    certificate: x509.Certificate


class _Profile(NamedTuple):
    """What the policy checks read from a ds:Signature, for the cryptographic steps."""

    signed_info: etree._Element
    signed_info_prefixes: list[str] | None
    signature_method: str
    signature_value: bytes
    digest_method: str
    digest_value: bytes
    reference_prefixes: list[str] | None
    key_info: etree._Element | None


def _unbase64(text: str) -> bytes:
    # Non-ASCII raises UnicodeEncodeError, a ValueError: only XML whitespace may break the value.
    return base64.b64decode(text.encode("ascii").translate(None, _XML_SPACE), validate=True)


@lru_cache(maxsize=512)
def _certificate_from_text(text: str) -> x509.Certificate:
    # Partners send the same few certificates over and over: decode and parse each one once.
    return with_names_decoded(x509.load_der_x509_certificate(_unbase64(text)))


class _PublicKey(NamedTuple):
    key: object
    kind: type | None  # rsa.RSAPublicKey, ec.EllipticCurvePublicKey, or None for anything else
    coordinate_bytes: int  # ECDSA: the size of r and of s


_PUBLIC_KEYS: dict[int, tuple[x509.Certificate, _PublicKey]] = {}


def _public_key(certificate: x509.Certificate) -> _PublicKey:
    """The certificate's key, parsed once. Keyed by identity: ``_certificate_from_text`` hands out
    one object per certificate, and each entry holds its certificate so the id stays its own."""
    entry = _PUBLIC_KEYS.get(id(certificate))
    if entry is not None and entry[0] is certificate:
        return entry[1]
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        parsed = _PublicKey(key, rsa.RSAPublicKey, 0)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        parsed = _PublicKey(key, ec.EllipticCurvePublicKey, (key.curve.key_size + 7) // 8)
    else:
        parsed = _PublicKey(key, None, 0)
    if len(_PUBLIC_KEYS) >= 512:
        _PUBLIC_KEYS.clear()
    _PUBLIC_KEYS[id(certificate)] = (certificate, parsed)
    return parsed


def _name(tag: object) -> str:
    if not isinstance(tag, str):
        return "a comment"
    qname = etree.QName(tag)
    return qname.localname if qname.namespace == DS else tag


def _invalid(detail: str, **context) -> EpixError:
    return EpixError(ErrorCode.SIGNATURE_INVALID, detail, **context)


def _elements(parent: etree._Element) -> list[etree._Element]:
    # Comments between the signature's elements are neither signed nor read: skip them.
    return list(parent.iterchildren(tag=etree.Element))


def _expect(elements: list[etree._Element], names: tuple[str, ...], where: str) -> None:
    if [el.tag for el in elements] != [f"{{{DS}}}{n}" for n in names]:
        found = ", ".join(_name(el.tag) for el in elements) or "nothing"
        raise _invalid(f"The signature's {where} holds {found}; exactly {', '.join(names)} is accepted.")


def _only(elements: list[etree._Element], tag: str, what: str) -> etree._Element:
    found = [el for el in elements if el.tag == tag]
    if len(found) != 1:
        raise _invalid(f"The signature has {len(found)} {what} elements where exactly one is required.")
    return found[0]


def _base64(element: etree._Element, what: str) -> bytes:
    # Text only: a comment inside would hide part of the value from ``.text``.
    if len(element):
        raise _invalid(f"The signature's {what} holds markup; only base64 text is accepted.")
    try:
        return _unbase64(element.text or "")
    except (ValueError, binascii.Error):
        raise _invalid(f"The signature's {what} is not valid base64.") from None


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


def _prefix_list(method: etree._Element, where: str) -> list[str] | None:
    """The ``ec:InclusiveNamespaces PrefixList`` under an exc-c14n method or transform, if any."""
    children = _elements(method)
    if not children:
        return None
    inclusive = children[0]
    if len(children) != 1 or inclusive.tag != _INCLUSIVE_NAMESPACES or len(inclusive) or set(inclusive.attrib) != {"PrefixList"}:
        raise _invalid(f"The {where} may hold one ec:InclusiveNamespaces with a PrefixList, and nothing else.")
    value = inclusive.get("PrefixList")
    prefixes = value.split(" ")
    # One space between prefixes, as the standard writes it: implementations differ on what
    # an empty token means, and a signature must mean one thing.
    if value and not all(_PREFIX.fullmatch(p) for p in prefixes):
        raise _invalid(f"The {where}'s PrefixList {value!r} is not a space-separated list of namespace prefixes.")
    return prefixes if value else None


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
    following = next(signature.itersiblings(tag=etree.Element), None)
    if following is not None:
        raise EpixError(
            ErrorCode.SIGNATURE_WRAPPED,
            f"The signature is followed by {following.tag}; it must be the document root's last element.",
        )
    return signature


def _common_profile(signature: etree._Element) -> _Profile | None:
    """The profile read straight off the shape our Signer, xmlsec1 and signxml write; None otherwise.

    A subset of ``_check_profile`` (no comments, no PrefixList, KeyInfo present), without the
    bookkeeping that names what is wrong: anything unusual is left to ``_check_profile``, which
    either explains the refusal or reads the same profile the long way.
    """
    parts = signature[:]
    if len(parts) != 3:
        return None
    signed_info, value, key_info = parts
    items = signed_info[:]
    if signed_info.tag != _SIGNED_INFO or value.tag != _SIGNATURE_VALUE or key_info.tag != _KEY_INFO or len(items) != 3:
        return None
    c14n, method, reference = items
    signature_method = method.get("Algorithm")
    if (
        c14n.tag != _CANONICALIZATION_METHOD
        or c14n.get("Algorithm") != EXC_C14N
        or len(c14n)
        or method.tag != _SIGNATURE_METHOD
        or signature_method not in _SIGNATURE_METHODS
        or len(method)
        or reference.tag != _REFERENCE
        or reference.get("URI") != ""
    ):
        return None
    reference_items = reference[:]
    if len(reference_items) != 3:
        return None
    transforms, digest, digest_value = reference_items
    digest_method = digest.get("Algorithm")
    if (
        transforms.tag != _TRANSFORMS
        or digest.tag != _DIGEST_METHOD
        or digest_method not in _DIGEST_METHODS
        or len(digest)
        or digest_value.tag != _DIGEST_VALUE
        or len(digest_value)
        or len(value)
    ):
        return None
    steps = transforms[:]
    if len(steps) != 2:
        return None
    enveloped, exclusive = steps
    if (
        enveloped.tag != _TRANSFORM
        or enveloped.get("Algorithm") != ENVELOPED
        or len(enveloped)
        or exclusive.tag != _TRANSFORM
        or exclusive.get("Algorithm") != EXC_C14N
        or len(exclusive)
    ):
        return None
    try:
        expected_digest = _unbase64(digest_value.text or "")
        signature_value = _unbase64(value.text or "")
    except (ValueError, binascii.Error):
        return None
    if len(expected_digest) != _DIGEST_SIZES[digest_method]:
        return None
    return _Profile(
        signed_info=signed_info,
        signed_info_prefixes=None,
        signature_method=signature_method,
        signature_value=signature_value,
        digest_method=digest_method,
        digest_value=expected_digest,
        reference_prefixes=None,
        key_info=key_info,
    )


def _check_profile(signature: etree._Element) -> _Profile:
    """The signature policy, checked on the parsed tree before any cryptography."""
    parts = _elements(signature)
    signed_info = _only(parts, _SIGNED_INFO, "SignedInfo")
    items = _elements(signed_info)
    c14n_method = _only(items, _CANONICALIZATION_METHOD, "CanonicalizationMethod")
    signature_method = _only(items, _SIGNATURE_METHOD, "SignatureMethod").get("Algorithm")
    _refuse_weak(signature_method, "signature method", ACCEPTED_SIGNATURE_METHODS)
    c14n = c14n_method.get("Algorithm")
    if c14n != EXC_C14N:
        raise _invalid(
            f"The signature's canonicalization {c14n!r} is not accepted; only exclusive C14N without comments is.",
            algorithm=c14n,
        )
    references = [el for el in items if el.tag == _REFERENCE]
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
    reference_items = _elements(reference)
    for method in reference_items:
        if method.tag == _DIGEST_METHOD:
            _refuse_weak(method.get("Algorithm"), "digest method", ACCEPTED_DIGEST_METHODS)
    holders = [el for el in reference_items if el.tag == _TRANSFORMS]
    transforms = _elements(holders[0]) if len(holders) == 1 else []
    algorithms = tuple(t.get("Algorithm") if t.tag == _TRANSFORM else _name(t.tag) for t in transforms)
    if algorithms != REQUIRED_TRANSFORMS or len(holders) != 1:
        raise EpixError(
            ErrorCode.SIGNATURE_WRAPPED,
            f"The reference's transforms {list(algorithms)} are not exactly enveloped-signature then exclusive "
            "C14N; any other transform could narrow what is signed.",
            transforms=list(algorithms),
        )
    # Only now is the shape itself held to the profile: the checks above give the specific codes.
    _expect(parts[:2], ("SignedInfo", "SignatureValue"), "Signature")
    if [el.tag for el in parts[2:]] not in ([], [_KEY_INFO]):
        raise _invalid(
            f"The ds:Signature also holds {', '.join(_name(el.tag) for el in parts[2:])}; "
            "only SignedInfo, SignatureValue and KeyInfo are accepted."
        )
    _expect(items, ("CanonicalizationMethod", "SignatureMethod", "Reference"), "SignedInfo")
    _expect(reference_items, ("Transforms", "DigestMethod", "DigestValue"), "Reference")
    if _elements(items[1]):
        raise _invalid("The signature's SignatureMethod carries parameters; none are accepted.")
    if _elements(transforms[0]):
        raise _invalid("The enveloped-signature transform carries parameters; none are accepted.")
    if _elements(reference_items[1]):
        raise _invalid("The signature's DigestMethod carries parameters; none are accepted.")
    digest_method = reference_items[1].get("Algorithm")
    digest_value = _base64(reference_items[2], "DigestValue")
    if len(digest_value) != _DIGEST_SIZES[digest_method]:
        raise _invalid(f"The signature's DigestValue is {len(digest_value)} bytes, not a {digest_method} digest.")
    return _Profile(
        signed_info=signed_info,
        signed_info_prefixes=_prefix_list(c14n_method, "CanonicalizationMethod"),
        signature_method=signature_method,
        signature_value=_base64(parts[1], "SignatureValue"),
        digest_method=digest_method,
        digest_value=digest_value,
        reference_prefixes=_prefix_list(transforms[1], "exclusive C14N transform"),
        key_info=parts[2] if len(parts) == 3 else None,
    )


def _signer_certificates(key_info: etree._Element | None) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """(leaf, intermediates) from KeyInfo/X509Data; the leaf issues no other certificate there."""
    texts = []
    if key_info is not None:
        for data in key_info.iterchildren(_X509_DATA):
            texts += [el.text or "" for el in data.iterchildren(_X509_CERTIFICATE)]
    if not texts:
        raise EpixError(ErrorCode.CERT_INVALID, "The signature carries no X509Certificate in its KeyInfo.")
    certs = []
    for text in texts:
        try:
            certs.append(_certificate_from_text(text))
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


def _check_signature_value(certificate: x509.Certificate, method: str, value: bytes, signed_info: bytes) -> None:
    key_type, _ = _SIGNATURE_METHODS[method]
    public = _public_key(certificate)
    if public.kind is not key_type:
        raise _invalid(f"The signature method {method} does not fit the signing certificate's {type(public.key).__name__}.")
    try:
        if key_type is rsa.RSAPublicKey:
            public.key.verify(value, signed_info, _PKCS1, _HASHES[method])
            return
        # XML-DSig carries ECDSA as raw r||s, each the curve's size (RFC 4050); cryptography wants DER.
        size = public.coordinate_bytes
        if len(value) != 2 * size:
            raise _invalid(f"The ECDSA signature value is {len(value)} bytes; {public.key.curve.name} needs r||s of {2 * size}.")
        r, s = int.from_bytes(value[:size], "big"), int.from_bytes(value[size:], "big")
        public.key.verify(encode_dss_signature(r, s), signed_info, _ECDSA[method])
    except InvalidSignature:
        raise _invalid("The signature value does not verify with the signing certificate.") from None


class _CanonicalSink:
    """Takes libxml2's C14N output chunk by chunk: hashes it, keeps it, refuses it past a bound."""

    __slots__ = ("parts", "size", "limit", "hash")

    def __init__(self, limit: int, hash_object) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.hash = hash_object

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise EpixError(
                ErrorCode.XML_TOO_LARGE,
                f"The signed content's canonical form exceeds {self.limit} bytes; it is refused.",
                limit=self.limit,
            )
        self.parts.append(chunk)
        self.hash.update(chunk)


def _detach(signature: etree._Element) -> None:
    """The enveloped-signature transform: remove the Signature element, and only the element.

    lxml's ``remove`` takes the element's tail text with it; that text is the document's, and signed.
    """
    parent = signature.getparent()
    tail = signature.tail
    if tail:
        previous = signature.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(signature)


class Verifier:
    """Verifies enveloped permit signatures against a trust store. Create once, call ``verify`` many times."""

    def __init__(
        self,
        trust: TrustStore | Iterable[x509.Certificate],
        *,
        anchors: Iterable[x509.Certificate] = (),
        limits: XmlLimits = DEFAULT_LIMITS,
    ) -> None:
        if isinstance(trust, TrustStore):
            self.trust = trust
            for anchor in anchors:
                trust.add_anchor(anchor)
        else:
            self.trust = TrustStore(anchors)
            for cert in trust:
                self.trust.add(party_of(cert) or cert.subject.rfc4514_string(), cert)
        self.limits = limits
        self._signed_limits = XmlLimits(max_bytes=CANONICAL_GROWTH * limits.max_bytes, max_depth=limits.max_depth)

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

    def verify(
        self,
        data: bytes,
        expected_signer: str | None = None,
        *,
        at: datetime | None = None,
        parsed: etree._ElementTree | None = None,
    ) -> Verified:
        """Check ``data``'s signature and return only what was signed, or raise a specific ``EpixError``.

        ``expected_signer`` pins the party whose certificate must have signed (the issuing MA of
        the permit, the partner at the other end of a hop); ``at`` is the verification time.
        ``data`` is only read: the tree worked on is this call's own parse of it, or ``parsed``.

        ``parsed`` spares a caller that already had to parse ``data`` (to read who claims to have
        sent it) a second parse: it must be the hardened parser's tree of exactly these bytes
        (``parse_xml``, with a depth limit no looser than this verifier's), made for this call alone,
        because verifying detaches the signature from it. Only bytes within this verifier's size
        limit are taken that way; larger ones are parsed here and refused as before. Nothing is
        read from ``parsed`` after the call: what was signed comes back in ``Verified``.
        """
        at = at or datetime.now(timezone.utc)
        if parsed is not None and len(data) <= self.limits.max_bytes:
            tree = parsed
        else:
            tree = parse_xml(data, limits=self.limits, what="signed document")
        signature = _find_signature(tree.getroot())
        profile = _common_profile(signature) or _check_profile(signature)
        certificate, intermediates = _signer_certificates(profile.key_info)
        party = self.trust.check(certificate, expected_party=expected_signer, intermediates=intermediates, at=at)
        try:
            # SignedInfo in its document context: exclusive C14N renders the namespaces it uses
            # (and any named in its PrefixList) from wherever they are declared above it.
            signed_info = etree.tostring(
                profile.signed_info,
                method="c14n",
                exclusive=True,
                with_comments=False,
                inclusive_ns_prefixes=profile.signed_info_prefixes,
            )
            _check_signature_value(certificate, profile.signature_method, profile.signature_value, signed_info)
            _detach(signature)
            sink = _CanonicalSink(self._signed_limits.max_bytes, _DIGEST_METHODS[profile.digest_method]())
            tree.write_c14n(sink, exclusive=True, with_comments=False, inclusive_ns_prefixes=profile.reference_prefixes)
            if not hmac.compare_digest(sink.hash.digest(), profile.digest_value):
                raise EpixError(ErrorCode.DIGEST_MISMATCH, "The document was changed after it was signed (digest mismatch).")
        except etree.C14NError as exc:
            # libxml2 refuses to canonicalise some well-formed documents (a relative namespace
            # URI, for one); what cannot be canonicalised cannot have been signed as it is.
            raise EpixError(
                ErrorCode.XML_MALFORMED,
                f"The signed document cannot be canonicalised ({exc}), so its signature cannot hold.",
                signer=party,
                certificate=describe(certificate),
            ) from None
        except EpixError as error:
            error.context.update(signer=party, certificate=describe(certificate))
            raise
        signed_bytes = b"".join(sink.parts)
        if b"<!--" in data:
            # Comments are not signed (exclusive C14N drops them) but the tree still has them,
            # and one inside a text splits what a reader sees ("12<!---->3" reads as "12"): read
            # only from the digested bytes.
            signed_root = parse_xml(signed_bytes, limits=self._signed_limits, what="signed content").getroot()
        else:
            # Without comments (DTDs, entities and processing instructions were refused when it
            # was parsed) the tree without its Signature holds exactly what was digested: the
            # elements, attributes and text c14n wrote. Only namespace declarations nobody uses
            # and what lies outside the root may differ, and neither can be read as content.
            signed_root = tree.getroot()
        return Verified(signed_root=signed_root, signed_bytes=signed_bytes, signer=party, certificate=certificate)
