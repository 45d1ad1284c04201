"""Forged and mangled signed documents, for the signature tests.

``forge`` is a deliberately general enveloped signer (any algorithm URI, any reference, any
transforms, SHA-1 included) so that each attack is *cryptographically valid* and the only thing
wrong with it is the property under test. It is test code: the product signs with
``keys.xmldsig.Signer`` only.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from decimal import Decimal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from lxml.builder import ElementMaker

from adapters.ns import DS, RAM, RSM
from adapters.xmlparse import parse_xml

ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
XPATH_FILTER = "http://www.w3.org/TR/1999/REC-xpath-19991116"
C14N_10 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
MD5 = "http://www.w3.org/2001/04/xmldsig-more#md5"

_DS = ElementMaker(namespace=DS, nsmap={"ds": DS})
_NS = {"ds": DS, "rsm": RSM, "ram": RAM}
_HASHES = {SHA256: hashlib.sha256, SHA1: hashlib.sha1, MD5: hashlib.md5}


def _sign_bytes(key, method: str, data: bytes) -> bytes:
    digest = hashes.SHA1() if method.endswith("sha1") else hashes.SHA256()
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), digest)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def forge(
    document: bytes,
    key,
    cert,
    *,
    signature_method: str | None = None,
    digest_method: str = SHA256,
    uris: tuple[str, ...] = ("",),
    transforms: tuple[str, ...] = (ENVELOPED, EXC_C14N),
    parent_path: str | None = None,
) -> bytes:
    """Sign ``document`` (unsigned bytes) with whatever profile the attack needs."""
    signature_method = signature_method or (RSA_SHA256 if isinstance(key, rsa.RSAPrivateKey) else ECDSA_SHA256)
    root = parse_xml(document).getroot()
    references = []
    for uri in uris:
        if uri == "":
            target = root.getroottree()
        else:
            (target,) = root.xpath("//*[@Id=$id]", id=uri[1:])
        digest = _HASHES[digest_method](etree.tostring(target, method="c14n", exclusive=True, with_comments=False)).digest()
        references.append(
            _DS.Reference(
                _DS.Transforms(*[_DS.Transform(Algorithm=t) for t in transforms]),
                _DS.DigestMethod(Algorithm=digest_method),
                _DS.DigestValue(base64.b64encode(digest).decode()),
                URI=uri,
            )
        )
    signed_info = _DS.SignedInfo(
        _DS.CanonicalizationMethod(Algorithm=EXC_C14N), _DS.SignatureMethod(Algorithm=signature_method), *references
    )
    value = _DS.SignatureValue()
    signature = _DS.Signature(
        signed_info,
        value,
        _DS.KeyInfo(_DS.X509Data(_DS.X509Certificate(base64.b64encode(cert.public_bytes(Encoding.DER)).decode()))),
    )
    parent = root if parent_path is None else root.find(parent_path, _NS)
    parent.append(signature)
    value.text = base64.b64encode(
        _sign_bytes(key, signature_method, etree.tostring(signed_info, method="c14n", exclusive=True))
    ).decode()
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _root(signed: bytes) -> etree._Element:
    return parse_xml(signed).getroot()


def _out(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def change_first_quantity(signed: bytes, delta: Decimal = Decimal(1)) -> bytes:
    """Box 11 changed after signing: the classic tampering."""
    root = _root(signed)
    quantity = root.find(".//ram:ItemQuantity", _NS)
    quantity.text = str(Decimal(quantity.text) + delta)
    return _out(root)


def wrap_in_new_root(signed: bytes) -> bytes:
    """Signature wrapping: a tampered copy at the top, the signed original tucked away below it."""
    original = _root(signed)
    tampered = copy.deepcopy(original)
    tampered.remove(tampered.find("ds:Signature", _NS))
    quantity = tampered.find(".//ram:ItemQuantity", _NS)
    quantity.text = str(Decimal(quantity.text) * 100)
    holder = etree.SubElement(tampered, f"{{{RSM}}}Attachment")
    holder.append(original)
    return _out(tampered)


def move_signature_into(signed: bytes, path: str) -> bytes:
    root = _root(signed)
    signature = root.find("ds:Signature", _NS)
    root.remove(signature)
    root.find(path, _NS).append(signature)
    return _out(root)


def duplicate_signature(signed: bytes) -> bytes:
    root = _root(signed)
    root.insert(0, copy.deepcopy(root.find("ds:Signature", _NS)))
    return _out(root)


def strip_signature(signed: bytes) -> bytes:
    root = _root(signed)
    root.remove(root.find("ds:Signature", _NS))
    return _out(root)


def set_attribute(signed: bytes, path: str, name: str, value: str) -> bytes:
    root = _root(signed)
    root.find(path, _NS).set(name, value)
    return _out(root)


def set_text(signed: bytes, path: str, text: str) -> bytes:
    root = _root(signed)
    root.find(path, _NS).text = text
    return _out(root)


def add_id(document: bytes, path: str, value: str) -> bytes:
    root = parse_xml(document).getroot()
    root.find(path, _NS).set("Id", value)
    return _out(root)


# --------------------------------------------------------------------------- profile variants


def resign(signed: bytes, key, edit) -> bytes:
    """``edit(root, signature)`` the signed document, then sign its SignedInfo again with ``key``.

    The result is cryptographically valid for whatever SignedInfo the edit leaves (canonicalised
    as its own CanonicalizationMethod says), so a refusal can only come from the profile. When
    ``edit`` returns "exclusive" or "inclusive", the DigestValue is recomputed over that C14N of
    the document without its signature.
    """
    root = _root(signed)
    signature = root.find("ds:Signature", _NS)
    redigest = edit(root, signature)
    signature = next(root.iter(f"{{{DS}}}Signature"))
    signed_info = signature.find("ds:SignedInfo", _NS)
    if redigest is not None:
        copy_ = copy.deepcopy(root)
        for sig in list(copy_.iter(f"{{{DS}}}Signature")):
            # lxml's remove() takes the tail along; the enveloped transform leaves it.
            previous, parent = sig.getprevious(), sig.getparent()
            if previous is not None:
                previous.tail = (previous.tail or "") + (sig.tail or "")
            else:
                parent.text = (parent.text or "") + (sig.tail or "")
            parent.remove(sig)
        body = etree.tostring(copy_.getroottree(), method="c14n", exclusive=(redigest == "exclusive"), with_comments=False)
        signed_info.find("ds:Reference/ds:DigestValue", _NS).text = base64.b64encode(hashlib.sha256(body).digest()).decode()
    method = signed_info.find("ds:CanonicalizationMethod", _NS)
    algorithm = method.get("Algorithm")
    inclusive = method.find(f"{{{EXC_C14N}}}InclusiveNamespaces")
    canonical = etree.tostring(
        signed_info,
        method="c14n",
        exclusive=algorithm.startswith(EXC_C14N),
        with_comments=algorithm.endswith("#WithComments"),
        inclusive_ns_prefixes=inclusive.get("PrefixList").split() if inclusive is not None else None,
    )
    signature_method = signed_info.find("ds:SignatureMethod", _NS).get("Algorithm")
    signature.find("ds:SignatureValue", _NS).text = base64.b64encode(_sign_bytes(key, signature_method, canonical)).decode()
    return _out(root)


def undecodable_subject(cert) -> bytes:
    """``cert``'s DER with its subject's C=CH string untagged: it still loads (cryptography decodes
    names when first read) but its subject does not decode, as one changed byte of a KeyInfo's
    base64 can leave it."""
    der = cert.public_bytes(Encoding.DER)
    subject = der.rindex(cert.subject.public_bytes())  # self-signed: the issuer's name comes first
    country = der.index(b"\x13\x02CH", subject)  # its C=CH, a PrintableString
    return der[:country] + b"\x00" + der[country + 1 :]


def graft_signature(signed: bytes, document: bytes) -> bytes:
    """``signed``'s Signature, untouched, appended to another (unsigned) document: its value still verifies."""
    start = signed.index(b"<ds:Signature")
    end = signed.index(b"</ds:Signature>") + len(b"</ds:Signature>")
    close = document.rindex(b"</")
    return document[:close] + signed[start:end] + document[close:]


def c14n_amplifier(elements: int, uri_length: int) -> bytes:
    """A small document whose exclusive C14N is huge.

    Exclusive C14N declares a namespace again on every element that uses it below one that does
    not: one long namespace URI used by many sibling elements grows ``elements * uri_length``.
    """
    uri = "urn:x:" + "a" * uri_length
    return (
        f'<rsm:CITESEPermit xmlns:rsm="{RSM}" xmlns:p="{uri}">'.encode()
        + b"<p:e/>" * elements
        + b"</rsm:CITESEPermit>"
    )
