"""The hostile-input corpus: every case is refused with its own code, through every entry point.

Static cases live in ``corpus/`` as ``<case>.<ERROR_CODE>.xml`` (the expected code is in the
name); generated cases (sizes, depths, random bytes, signature attacks) are built below. Each is
fed to ``parse_xml``, to ``Verifier.verify`` and to ``Signer.sign``, which must all refuse it with
the same specific code, leak nothing, reach no network and write nothing.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest
from lxml import etree

from adapters.xmlparse import DEFAULT_LIMITS, parse_xml
from domain.errors import EpixError, ErrorCode
from keys.pki import generate_key, issue_party_certificate
from keys.store import SigningIdentity, TrustStore
from keys.xmldsig import Signer, Verifier
from tests.hostile import attacks
from tests.hostile.documents import sample_permit_xml

CORPUS = Path(__file__).parent / "corpus"
PERMIT_OPEN = b'<rsm:CITESEPermit xmlns:rsm="urn:un:unece:uncefact:data:standard:CITESEPermit:2">'
PERMIT_CLOSE = b"</rsm:CITESEPermit>"


def _corpus_cases():
    for path in sorted(CORPUS.glob("*.xml")):
        case, code, _ = path.name.split(".")
        yield pytest.param(path.read_bytes(), ErrorCode[code], id=case)


def _nested(depth: int) -> bytes:
    return PERMIT_OPEN + b"<rsm:N>" * (depth - 1) + b"</rsm:N>" * (depth - 1) + PERMIT_CLOSE


def _generated_cases():
    limit = DEFAULT_LIMITS.max_bytes
    filler = b"<rsm:Pad>" + b"x" * 1000 + b"</rsm:Pad>"
    oversize = PERMIT_OPEN + filler * (limit // len(filler) + 1) + PERMIT_CLOSE
    yield pytest.param(oversize, ErrorCode.XML_TOO_LARGE, id="oversize")
    yield pytest.param(_nested(DEFAULT_LIMITS.max_depth + 1), ErrorCode.XML_TOO_DEEP, id="deep-just-over-limit")
    yield pytest.param(_nested(300), ErrorCode.XML_TOO_DEEP, id="deep-past-libxml2-limit")
    yield pytest.param(_nested(100_000), ErrorCode.XML_TOO_DEEP, id="deep-100000")
    yield pytest.param(b"", ErrorCode.XML_MALFORMED, id="empty-body")
    yield pytest.param(b" \r\n\t ", ErrorCode.XML_MALFORMED, id="whitespace-only")
    yield pytest.param(random.Random(7).randbytes(4096), ErrorCode.XML_ENCODING, id="random-bytes")
    yield pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, ErrorCode.XML_ENCODING, id="png-header")
    yield pytest.param(b"%PDF-1.7 garbage { } < >", ErrorCode.XML_MALFORMED, id="ascii-garbage")
    yield pytest.param(b'{"permit": "json, not xml"}', ErrorCode.XML_MALFORMED, id="json")
    yield pytest.param("<a/>".encode("utf-32"), ErrorCode.XML_ENCODING, id="utf32-bom")
    yield pytest.param(
        b'<?xml version="1.0"' + b" " * 500 + b'encoding="ISO-8859-1"?>' + PERMIT_OPEN + PERMIT_CLOSE,
        ErrorCode.XML_ENCODING,
        id="encoding-declared-far-into-the-declaration",
    )
    yield pytest.param(
        b'\xef\xbb\xbf<?xml version="1.0" encoding="windows-1252"?><a/>', ErrorCode.XML_ENCODING, id="bom-then-cp1252"
    )
    yield pytest.param(PERMIT_OPEN + b"a\x00b" + PERMIT_CLOSE, ErrorCode.XML_MALFORMED, id="nul-character")
    yield pytest.param(PERMIT_OPEN + PERMIT_CLOSE + PERMIT_OPEN + PERMIT_CLOSE, ErrorCode.XML_MALFORMED, id="two-roots")


INPUT_CASES = [*_corpus_cases(), *_generated_cases()]


@pytest.fixture(scope="module")
def party():
    key = generate_key("p256")
    cert = issue_party_certificate("CH", key)
    return Signer(SigningIdentity.of(key, cert)), Verifier(TrustStore.of({"CH": [cert]})), key, cert


def _entry_points(party):
    signer, verifier, _, _ = party
    return {
        "parse_xml": lambda data: parse_xml(data),
        "verify": lambda data: verifier.verify(data, "CH"),
        "sign": lambda data: signer.sign(data),
    }


@pytest.fixture
def quiet_cwd(tmp_path, monkeypatch):
    """Run in an empty directory and check afterwards that nothing was written to it."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("entry", ["parse_xml", "verify", "sign"])
@pytest.mark.parametrize("data, code", INPUT_CASES)
def test_hostile_input_is_refused_with_its_code(party, quiet_cwd, entry, data, code):
    with pytest.raises(EpixError) as info:
        _entry_points(party)[entry](data)
    assert info.value.code is code, info.value.detail
    assert info.value.detail and info.value.detail != "None"
    assert b"root:" not in str(info.value.to_dict()).encode()  # nothing of /etc/passwd leaks


def test_corpus_covers_the_classic_attacks():
    names = {p.name.split(".")[0] for p in CORPUS.glob("*.xml")}
    assert {"billion_laughs", "xxe_file", "parameter_entities", "processing_instruction", "truncated"} <= names
    assert {"latin1_bytes", "latin1_declared", "utf16_bom"} <= names


def test_external_dtd_is_refused_without_touching_the_network(party):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        data = (
            f'<?xml version="1.0"?><!DOCTYPE a SYSTEM "http://127.0.0.1:{port}/evil.dtd">'.encode()
            + PERMIT_OPEN
            + b"&ent;"
            + PERMIT_CLOSE
        )
        for entry in _entry_points(party).values():
            with pytest.raises(EpixError) as info:
                entry(data)
            assert info.value.code is ErrorCode.XML_FORBIDDEN_CONSTRUCT
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody called


def test_billion_laughs_is_refused_before_any_expansion():
    # Refused by the byte scan, before libxml2 sees it: the code says "forbidden", not "too large".
    data = (CORPUS / "billion_laughs.XML_FORBIDDEN_CONSTRUCT.xml").read_bytes()
    with pytest.raises(EpixError) as info:
        parse_xml(data)
    assert info.value.code is ErrorCode.XML_FORBIDDEN_CONSTRUCT
    assert "DOCTYPE" in info.value.detail


def test_xinclude_is_inert(party):
    # Not refused (it is just an element), but never processed: the file's content cannot appear.
    data = (
        PERMIT_OPEN
        + b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/>'
        + PERMIT_CLOSE
    )
    tree = parse_xml(data)
    assert b"root:" not in etree.tostring(tree)
    signer, verifier, _, _ = party
    verified = verifier.verify(signer.sign(data), "CH")
    assert b"root:" not in verified.signed_bytes


# --------------------------------------------------------------------------- signature attacks


def _signature_cases(signed: bytes, key, cert):
    document = attacks.strip_signature(signed)
    body = signed[signed.index(b"<rsm:CITESEPermit") :]
    yield "missing", document, ErrorCode.SIGNATURE_MISSING
    yield "duplicated", attacks.duplicate_signature(signed), ErrorCode.SIGNATURE_DUPLICATED
    yield "wrapped-in-new-root", attacks.wrap_in_new_root(signed), ErrorCode.SIGNATURE_WRAPPED
    yield "moved-below-root", attacks.move_signature_into(signed, "rsm:HeaderExchangedDocument"), ErrorCode.SIGNATURE_WRAPPED
    yield "id-reference", attacks.forge(
        attacks.add_id(document, "rsm:HeaderExchangedDocument", "h"), key, cert, uris=("#h",)
    ), ErrorCode.SIGNATURE_WRAPPED
    yield "sha1", attacks.forge(document, key, cert, digest_method=attacks.SHA1), ErrorCode.WEAK_ALGORITHM
    yield "tampered", attacks.change_first_quantity(signed), ErrorCode.DIGEST_MISMATCH
    yield "doctype-added", b'<!DOCTYPE x [<!ENTITY e "e">]>' + body, ErrorCode.XML_FORBIDDEN_CONSTRUCT
    yield "truncated", signed[: len(signed) // 2], ErrorCode.XML_MALFORMED
    yield "trailing-garbage", signed + b"<extra/>", ErrorCode.XML_MALFORMED
    yield "padded-past-limit", signed.replace(
        PERMIT_CLOSE, b"<!--" + b"x" * DEFAULT_LIMITS.max_bytes + b"-->" + PERMIT_CLOSE
    ), ErrorCode.XML_TOO_LARGE
    # A valid signature grafted onto a 16 KB document whose canonical form is over 8 MB: the
    # signature value verifies, and the canonical form is refused while it is being built.
    amplifier = attacks.c14n_amplifier(elements=1100, uri_length=8000)
    yield "c14n-amplification", attacks.graft_signature(signed, amplifier), ErrorCode.XML_TOO_LARGE


@pytest.fixture(scope="module")
def signature_cases(party):
    signer, _, key, cert = party
    signed = signer.sign(sample_permit_xml(seed=3))
    return {name: (data, code) for name, data, code in _signature_cases(signed, key, cert)}


SIGNATURE_CASE_NAMES = [
    "missing",
    "duplicated",
    "wrapped-in-new-root",
    "moved-below-root",
    "id-reference",
    "sha1",
    "tampered",
    "doctype-added",
    "truncated",
    "trailing-garbage",
    "padded-past-limit",
    "c14n-amplification",
]


@pytest.mark.parametrize("name", SIGNATURE_CASE_NAMES)
def test_hostile_signatures_are_refused_with_their_code(party, signature_cases, quiet_cwd, name):
    _, verifier, _, _ = party
    data, code = signature_cases[name]
    with pytest.raises(EpixError) as info:
        verifier.verify(data, "CH")
    assert info.value.code is code, info.value.detail


def test_signature_case_list_is_complete(signature_cases):
    assert sorted(signature_cases) == sorted(SIGNATURE_CASE_NAMES)


def test_the_untouched_signed_document_passes(party):
    # Without this control, every refusal above could come from a broken signer.
    signer, verifier, _, _ = party
    assert verifier.verify(signer.sign(sample_permit_xml(seed=3)), "CH").signer == "CH"


# --------------------------------------------------------------------------- the parser's byte pre-checks


@pytest.mark.parametrize(
    "data",
    [
        b"<?xml-stylesheet href='x.xsl'?><a/>",  # a PI where a declaration could be
        b"<?xml version='1.0'?><?xml-stylesheet href='x.xsl'?><a/>",
        b"<?xml version='1.0'?>\n<a/><?after the root?>",
        b"<a>?<b/><?pi?></a>",
        b"<a><!-- <? --><?pi?></a>",  # a "<?" in a comment first, then a real one
        b"<?xml version='1.0' encoding='UTF-8'?><a>x</a><!-- ! --><?pi x?>",
    ],
)
def test_processing_instructions_are_found_wherever_they_are(data):
    with pytest.raises(EpixError) as info:
        parse_xml(data)
    assert info.value.code is ErrorCode.XML_FORBIDDEN_CONSTRUCT


@pytest.mark.parametrize(
    "data",
    [
        b"<?xml version='1.0' encoding='UTF-8'?><a>Why? Because!</a>",
        b"<a><!-- <?php not a PI ?> --><b><![CDATA[<?xml not one either?> and ! text]]></b></a>",
        b"<a title='?!'>&lt;?x?&gt;</a>",
    ],
)
def test_question_and_exclamation_marks_that_are_not_markup_are_fine(data):
    assert parse_xml(data).getroot().tag == "a"
