"""signxml as the independent reference verifier the tests hold ours against.

``keys.xmldsig.Verifier`` implements one narrow profile natively; signxml's ``XMLVerifier`` is
a general implementation of the same standard. Given the same pinned certificate and a
configuration as strict as signxml can express, the two must agree on what they accept and on
what was signed. The few shapes we refuse on purpose and signxml accepts are named in
``tests/unit/test_verifier_crosscheck.py``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from cryptography import x509
from lxml import etree
from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLVerifier
from signxml.exceptions import SignXMLException

from keys.xmldsig import ACCEPTED_DIGEST_METHODS, ACCEPTED_SIGNATURE_METHODS

STRICT_CONFIG = SignatureConfiguration(
    require_x509=True,
    location="./",  # a child of the root, nowhere else
    expect_references=1,
    signature_methods=frozenset(SignatureMethod(uri) for uri in ACCEPTED_SIGNATURE_METHODS),
    digest_algorithms=frozenset(DigestAlgorithm(uri) for uri in ACCEPTED_DIGEST_METHODS),
    ignore_ambiguous_key_info=False,
)

# signxml's own parser, as strict as ours about what it will load.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def signxml_signed_bytes(data: bytes, cert: x509.Certificate, *, at: datetime | None = None) -> bytes | None:
    """What signxml says ``data``'s signature covers (canonical bytes), or None when it refuses."""
    config = replace(STRICT_CONFIG, verification_time=at) if at else STRICT_CONFIG
    try:
        result = XMLVerifier().verify(data, x509_cert=cert, expect_config=config, parser=_PARSER)
    except (SignXMLException, etree.XMLSyntaxError, etree.DocumentInvalid, ValueError, TypeError):
        return None
    return result.signed_data
