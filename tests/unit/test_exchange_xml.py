"""The hop envelope and the receipt: the template writers, the reader's checks, and the
verifier taking the tree the inbound pipeline already parsed.

The writers that every exchange uses (``envelope_xml``, ``receipt_xml``) are held to the bytes
lxml writes for ``build_envelope`` / ``build_receipt`` and to the schema; ``read_envelope`` checks
the payload's base64 itself instead of through ``xs:base64Binary`` and must never accept what the
full schema refuses.
"""

from __future__ import annotations

import base64
import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from adapters.exchange_xml import (
    canonical_form,
    ErrorSignal,
    Receipt,
    SignalProblem,
    build_envelope,
    build_error,
    build_receipt,
    envelope_xml,
    exchange_schema,
    read_envelope,
    read_error,
    read_receipt,
    receipt_xml,
    signal_problems,
)
from adapters.ns import EXCHANGE
from adapters.xmlparse import parse_xml
from domain.errors import EpixError, ErrorCode
from domain.messages import Action, EnvelopeHeader
from keys.pki import make_test_ca
from keys.store import KeyStore
from keys.xmldsig import Signer, Verifier

Q = f"{{{EXCHANGE}}}"
NOW = datetime(2026, 3, 1, 10, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1)))

# Any text XML 1.0 can hold, markup characters and carriage returns included.
xml_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00").filter(
        lambda c: c in "\t\n\r" or ord(c) >= 0x20 and c not in "\ufffe\uffff"
    ),
    min_size=1,
    max_size=40,
)
party = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{1,10}", fullmatch=True)
token = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9/._-]{0,40}", fullmatch=True)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-5, minutes=-30))])
)


def _header(**changes) -> EnvelopeHeader:
    values = dict(
        message_id=str(uuid.uuid4()),
        conversation_id=str(uuid.uuid4()),
        sender="CH",
        receiver="FR",
        document_type="CITESEPermit",
        document_issuer="CH",
        document_number="CH26-000001",
        document_version=1,
        action=Action.ISSUE,
        created_at=NOW,
    )
    values.update(changes)
    return EnvelopeHeader(**values)


def _lxml_bytes(element: etree._Element) -> bytes:
    # What the signer serialises when it is given the element.
    return etree.tostring(element, xml_declaration=True, encoding="UTF-8")


# --------------------------------------------------------------------------- the template writers


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.tuples(xml_text, xml_text, xml_text, xml_text, xml_text, xml_text, xml_text),
    version=st.integers(min_value=0, max_value=10**12),
    action=st.sampled_from(list(Action)),
    created=moments,
    sent=moments,
    payload=st.binary(max_size=300),
    relayed_by=st.none() | xml_text,
)
def test_envelope_template_writes_exactly_what_lxml_writes(texts, version, action, created, sent, payload, relayed_by):
    message_id, conversation, sender, receiver, doc_type, issuer, number = texts
    header = _header(
        message_id=message_id, conversation_id=conversation, sender=sender, receiver=receiver, document_type=doc_type,
        document_issuer=issuer, document_number=number, document_version=version, action=action, created_at=created,
    )  # fmt: skip
    expected = _lxml_bytes(build_envelope(header, payload, sent_at=sent, relayed_by=relayed_by))
    assert envelope_xml(header, payload, sent_at=sent, relayed_by=relayed_by) == expected


@settings(max_examples=200, deadline=None)
@given(texts=st.tuples(xml_text, xml_text, xml_text, xml_text, xml_text), at=moments)
def test_receipt_template_writes_exactly_what_lxml_writes(texts, at):
    receipt = Receipt(texts[0], texts[1], texts[2], at, texts[3], texts[4])
    assert receipt_xml(receipt) == _lxml_bytes(build_receipt(receipt))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.tuples(xml_text, xml_text, xml_text, xml_text, xml_text, xml_text, xml_text),
    payload=st.binary(max_size=300),
    relayed_by=st.none() | xml_text,
    at=moments,
)
def test_the_canonical_form_of_a_template_document_is_what_c14n_makes_of_it(texts, payload, relayed_by, at):
    message_id, conversation, sender, receiver, doc_type, issuer, number = texts
    header = _header(
        message_id=message_id, conversation_id=conversation, sender=sender, receiver=receiver, document_type=doc_type,
        document_issuer=issuer, document_number=number, created_at=at,
    )  # fmt: skip
    receipt = Receipt(texts[0], texts[1], texts[2], at, texts[3], texts[4])
    for document in (envelope_xml(header, payload, sent_at=at, relayed_by=relayed_by), receipt_xml(receipt)):
        canonical = canonical_form(document)
        expected = etree.tostring(parse_xml(document), method="c14n", exclusive=True)
        if canonical is None:  # only a carriage return, which the templates escape as lxml does
            assert b"&#13;" in document
        else:
            assert canonical == expected


def test_signing_a_template_from_its_canonical_form_signs_the_same_bytes(ch):
    signer, verifier = ch
    document = envelope_xml(_header(document_number="A&B <1>"), os.urandom(300), sent_at=NOW)
    # RSA PKCS#1 v1.5 is deterministic: the same digest gives the same signature, byte for byte.
    assert signer.sign(document, canonical=canonical_form(document)) == signer.sign(document)
    assert verifier.verify(signer.sign(document, canonical=canonical_form(document)), "CH").signer == "CH"


@settings(max_examples=100, deadline=None)
@given(message_id=token, sender=party, receiver=party, number=token, version=st.integers(1, 10**6), payload=st.binary(min_size=1, max_size=200), relayed_by=st.none() | party, at=moments)
def test_template_documents_validate_against_the_exchange_schema(message_id, sender, receiver, number, version, payload, relayed_by, at):
    header = _header(message_id=message_id, sender=sender, receiver=receiver, document_number=number, document_version=version, created_at=at)
    envelope = parse_xml(envelope_xml(header, payload, sent_at=at, relayed_by=relayed_by)).getroot()
    assert exchange_schema().validate(envelope), exchange_schema().error_log
    read = read_envelope(envelope)
    assert (read.header, read.payload, read.sent_at, read.relayed_by) == (header, payload, at, relayed_by)
    digest = "sha256:" + "ab" * 32
    receipt = parse_xml(receipt_xml(Receipt(message_id, receiver, sender, at, digest, "RECEIVED"))).getroot()
    assert exchange_schema().validate(receipt), exchange_schema().error_log
    assert read_receipt(receipt) == Receipt(message_id, receiver, sender, at, digest, "RECEIVED")


@pytest.mark.parametrize("bad", ["a\x00b", "bell\x07", "\ufffe", "lone \ud800 surrogate"])
def test_templates_refuse_what_xml_cannot_hold_as_lxml_does(bad):
    with pytest.raises(ValueError):
        build_receipt(Receipt(bad, "FR", "CH", NOW, "sha256:00", "RECEIVED"))
    with pytest.raises(ValueError):
        receipt_xml(Receipt(bad, "FR", "CH", NOW, "sha256:00", "RECEIVED"))
    with pytest.raises(ValueError):
        envelope_xml(_header(document_number=bad), b"x", sent_at=NOW)
    with pytest.raises(ValueError):
        envelope_xml(_header(), b"x", sent_at=NOW, relayed_by=bad)


# --------------------------------------------------------------------------- reading an envelope


def _envelope_with_payload_text(text: str) -> etree._Element:
    envelope = parse_xml(envelope_xml(_header(), b"permit", sent_at=NOW)).getroot()
    envelope.find(Q + "Payload").text = text
    return envelope


@pytest.mark.parametrize(
    "text",
    [
        "QR==",  # unused bits not zero: base64Binary refuses it
        "QUF=",
        "QUFB====",  # too much padding
        "QUFBQ",  # not a whole group
        "QU=B",  # padding inside
        "QU FB",  # whitespace inside: base64Binary takes it, the payload reader never did
        "QU\nFB",
        "QUFB*",  # not base64 at all
        "QUFBé",
    ],
)
def test_a_payload_that_is_not_canonical_base64_is_refused(text):
    with pytest.raises(EpixError) as err:
        read_envelope(_envelope_with_payload_text(text))
    assert err.value.code is ErrorCode.ENVELOPE_INVALID


def test_a_payload_with_whitespace_around_it_is_read_as_before():
    payload = os.urandom(40)
    envelope = parse_xml(envelope_xml(_header(), payload, sent_at=NOW)).getroot()
    text = envelope.find(Q + "Payload").text
    envelope.find(Q + "Payload").text = f"\n  {text}\n"
    assert read_envelope(envelope).payload == payload


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet="ABCDQRSTUVWXabc019+/= \n", min_size=1, max_size=16))
def test_read_envelope_never_accepts_a_payload_the_full_schema_refuses(text):
    envelope = _envelope_with_payload_text(text)
    schema_ok = exchange_schema().validate(envelope)
    try:
        read = read_envelope(envelope)
    except EpixError as exc:
        if exc.code is ErrorCode.ENVELOPE_INVALID:
            return  # refused as base64
        # The digest is checked after the base64: this payload passed as base64.
        assert exc.code is ErrorCode.DIGEST_MISMATCH
        read = None
    assert schema_ok, f"read_envelope took {text!r} as base64, which xs:base64Binary refuses"
    if read is not None:
        assert read.payload == base64.b64decode(text.strip(), validate=True)


@pytest.mark.parametrize(
    "field, value",
    [
        ("From", "C"),  # PartyId needs two characters
        ("To", "F R"),
        ("DocumentVersion", "0"),  # positiveInteger
        ("Action", "delete"),
        ("CreatedAt", "yesterday"),
        ("MessageId", "x" * 65),  # Token64
        ("PayloadDigest", "md5:00"),
    ],
)
def test_the_header_is_still_held_to_the_schema(field, value):
    envelope = parse_xml(envelope_xml(_header(), b"permit", sent_at=NOW)).getroot()
    envelope.find(f"{Q}Header/{Q}{field}").text = value
    with pytest.raises(EpixError) as err:
        read_envelope(envelope)
    assert err.value.code is ErrorCode.ENVELOPE_INVALID


def test_an_unexpected_element_in_the_header_is_refused():
    envelope = parse_xml(envelope_xml(_header(), b"permit", sent_at=NOW)).getroot()
    etree.SubElement(envelope.find(Q + "Header"), Q + "Extra").text = "x"
    with pytest.raises(EpixError) as err:
        read_envelope(envelope)
    assert err.value.code is ErrorCode.ENVELOPE_INVALID and "schema" in err.value.detail


# --------------------------------------------------------------------------- verifying a parsed tree


@pytest.fixture(scope="module")
def ch(tmp_path_factory):
    store = KeyStore(tmp_path_factory.mktemp("keys"))
    store.init_party("CH", "rsa2048", ca=make_test_ca("Test CA"))
    identity = store.load_signing_identity("CH")
    return Signer(identity), Verifier([identity.certificate])


def test_verifying_the_tree_already_parsed_gives_what_verifying_the_bytes_gives(ch):
    signer, verifier = ch
    signed = signer.sign(envelope_xml(_header(), os.urandom(500), sent_at=NOW))
    from_bytes = verifier.verify(signed, "CH")
    from_tree = verifier.verify(signed, "CH", parsed=parse_xml(signed))
    assert from_tree.signed_bytes == from_bytes.signed_bytes and from_tree.signer == "CH"
    assert read_envelope(from_tree.signed_root) == read_envelope(from_bytes.signed_root)


def test_a_tampered_document_is_refused_from_its_parsed_tree_too(ch):
    signer, verifier = ch
    signed = signer.sign(envelope_xml(_header(), b"permit", sent_at=NOW))
    tampered = signed.replace(b"CH26-000001", b"CH26-000002", 1)
    with pytest.raises(EpixError) as err:
        verifier.verify(tampered, "CH", parsed=parse_xml(tampered))
    assert err.value.code is ErrorCode.DIGEST_MISMATCH


def test_bytes_over_the_verifiers_limit_are_refused_whatever_tree_comes_with_them(ch):
    from adapters.xmlparse import XmlLimits

    signer, _ = ch
    small = Verifier([signer.identity.certificate], limits=XmlLimits(max_bytes=1000))
    signed = signer.sign(envelope_xml(_header(), os.urandom(2000), sent_at=NOW))
    with pytest.raises(EpixError) as err:
        small.verify(signed, "CH", parsed=parse_xml(signed))
    assert err.value.code is ErrorCode.XML_TOO_LARGE


# --- error signals ---------------------------------------------------------------------------------


def _signal(problems=()) -> ErrorSignal:
    return ErrorSignal(
        "m-1", "FR", "CH", "PERMIT_INVALID", "The permit breaks 2 rule(s): it expired.", False,
        datetime(2026, 11, 30, 12, tzinfo=timezone.utc), problems,
    )  # fmt: skip


def test_an_error_signal_carries_every_problem_and_reads_back_the_same():
    problems = signal_problems(
        [
            {"code": "PERMIT_EXPIRED", "path": "valid_until", "message": "Box 2: the permit has expired."},
            {"code": "QUANTITY_NOT_POSITIVE", "path": "items[0].quantity", "message": "Item A: no quantity."},
            {"code": "NO_PATH", "message": "A problem with no path."},
            "not a problem",
        ]
    )
    assert [p.code for p in problems] == ["PERMIT_EXPIRED", "QUANTITY_NOT_POSITIVE", "NO_PATH"]
    root = build_error(_signal(problems))
    exchange_schema().assertValid(root)
    back = read_error(parse_xml(etree.tostring(root)).getroot())
    assert back == _signal(problems)
    assert back.describe("FR") == (
        "FR refused it: PERMIT_INVALID: The permit breaks 2 rule(s): it expired. Problems: "
        "PERMIT_EXPIRED at valid_until: Box 2: the permit has expired.; "
        "QUANTITY_NOT_POSITIVE at items[0].quantity: Item A: no quantity.; NO_PATH: A problem with no path."
    )
    assert read_error(build_error(_signal())).describe("FR") == "FR refused it: PERMIT_INVALID: The permit breaks 2 rule(s): it expired."


def test_a_partner_cannot_make_us_record_more_than_the_schema_allows():
    many = tuple(SignalProblem("X", None, "again") for _ in range(200))
    assert len(build_error(_signal(many)).findall(f"{{{EXCHANGE}}}Problem")) == 64  # we never send more
    root = build_error(_signal(many[:64]))
    index = list(root).index(root.find(f"{{{EXCHANGE}}}Retryable"))
    for _ in range(10):  # a partner's own document with 74
        extra = etree.SubElement(root, f"{{{EXCHANGE}}}Problem", code="X")
        extra.text = "again"
        root.remove(extra)
        root.insert(index, extra)
    with pytest.raises(EpixError) as info:
        read_error(root)
    assert info.value.code is ErrorCode.RECEIPT_INVALID
