"""How the sender reads a partner's signed answers (gateway/delivery.py, gateway/hub.py tracking): error signals, receipts signed before a certificate ended, and its own ended certificate."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from adapters.exchange_xml import ErrorSignal, build_error
from domain.messages import Action, Direction, MessageStatus
from gateway.delivery import DeliveryWorker
from gateway.metrics import Metrics
from gateway.security import Security
from gateway.store.base import MessageRecord
from simulators.network import build_network

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def parties(tmp_path_factory):
    net = build_network(tmp_path_factory.mktemp("net"), ("CH", "FR"))
    load = lambda p: Security.load(party=p, keys_dir=net[p].dir, passphrase=None, agreements=net[p].config().agreements)  # noqa: E731
    return net, load("CH"), load("FR")


def _message(message_id: str) -> MessageRecord:
    return MessageRecord(
        message_id=message_id, conversation_id="c-1", direction=Direction.OUTBOUND, sender="CH", receiver="FR",
        document_type="CITESEPermit", action=Action.ISSUE, issuer="CH", number="CH26-0000001", version=1,
        status=MessageStatus.SENDING, attempts=0, next_attempt_at=None, lease_until=None, payload=b"<x/>",
        payload_digest="d", created_at=NOW, updated_at=NOW, last_error_code=None, last_error_detail=None, via=None,
        receipt=None,
    )  # fmt: skip


def _signal(fr: Security, about: str | None) -> bytes:
    return fr.sign(build_error(ErrorSignal(about, "FR", "CH", "PERMIT_INVALID", "expired", retryable=False, at=NOW)))


def test_a_signed_refusal_of_this_message_rejects_it_for_good(parties):
    net, ch, fr = parties
    worker = DeliveryWorker(net["CH"].config(), None, ch, None, Metrics("CH"))
    outcome = worker._rejection(_message("m-1"), _signal(fr, "m-1"), 422, "FR")
    assert (outcome.code, outcome.retryable) == ("PERMIT_INVALID", False)


def test_a_signed_refusal_of_another_message_is_not_taken_for_this_one(parties):
    net, ch, fr = parties
    worker = DeliveryWorker(net["CH"].config(), None, ch, None, Metrics("CH"))
    outcome = worker._rejection(_message("m-1"), _signal(fr, "m-other"), 422, "FR")
    assert (outcome.code, outcome.retryable) == ("RECEIPT_INVALID", True)
    assert "m-other" in outcome.detail


def test_a_refusal_that_could_not_name_the_message_is_taken(parties):
    """A partner that could not read our message id (an unreadable envelope) names none."""
    net, ch, fr = parties
    worker = DeliveryWorker(net["CH"].config(), None, ch, None, Metrics("CH"))
    outcome = worker._rejection(_message("m-1"), _signal(fr, None), 400, "FR")
    assert outcome.code == "PERMIT_INVALID" and not outcome.retryable


async def test_with_its_own_certificate_ended_the_sender_sends_nothing_and_says_why(parties, monkeypatch):
    # The partner would answer CERT_EXPIRED, which is final: a message rejected for good for a
    # certificate the operator renews tomorrow. Not sent instead, retryable, and the reason is ours.
    # (http=None: any attempt to send would fail this test.)
    from domain.errors import EpixError, ErrorCode
    from gateway.delivery import _Outcome

    net, ch, _ = parties
    monkeypatch.setattr(ch, "unusable", lambda now: EpixError(ErrorCode.CERT_EXPIRED, "The signing certificate expired on 2026-12-01."))
    worker = DeliveryWorker(net["CH"].config(), None, ch, None, Metrics("CH"))
    with pytest.raises(_Outcome) as caught:
        await worker._send(_message("m-1"))
    assert (caught.value.code, caught.value.retryable) == ("SIGNING_CERT_UNUSABLE", True)
    assert caught.value.detail.startswith("not sent:") and "expired on 2026-12-01" in caught.value.detail


def _receipt(fr: Security, message: MessageRecord, received_at: datetime) -> bytes:
    from adapters.exchange_xml import Receipt, receipt_xml

    return fr.sign_template(receipt_xml(Receipt(message.message_id, "FR", "CH", received_at, message.payload_digest, "RECEIVED")))


def test_a_receipt_signed_while_the_partners_certificate_was_valid_is_taken_after_it_ended(parties):
    # A retry after a lost answer brings back the receipt FR stored then; its certificate has
    # ended since. Judged at the time it was signed, within the message's life, it holds.
    from dataclasses import replace

    from gateway.delivery import _Outcome

    net, ch, fr = parties
    worker = DeliveryWorker(net["CH"].config(), None, ch, None, Metrics("CH"))
    sent_at = datetime.now(timezone.utc)
    message = replace(_message("m-1"), created_at=sent_at, payload_digest="sha256:" + "0" * 64)
    after_end = fr.certificate.not_valid_after_utc + timedelta(days=1)
    body = _receipt(fr, message, sent_at + timedelta(seconds=1))
    assert worker._check_receipt(message, body, "FR", now=after_end) == body

    # Not for a receipt claiming a time before the message existed, nor one claiming a time
    # after the certificate ended (signed with an ended certificate).
    for claimed in (sent_at - timedelta(days=1), fr.certificate.not_valid_after_utc + timedelta(hours=1)):
        with pytest.raises(_Outcome) as caught:
            worker._check_receipt(message, _receipt(fr, message, claimed), "FR", now=after_end)
        assert caught.value.code == "RECEIPT_INVALID" and "CERT_EXPIRED" in caught.value.detail


def test_a_hubs_report_of_a_receipt_signed_before_the_receivers_certificate_ended_counts(parties):
    from dataclasses import replace

    from adapters.exchange_xml import DeliveryReport
    from gateway.hub import DELIVERED, PENDING, TrackingPoller

    net, ch, fr = parties
    poller = TrackingPoller(net["CH"].config(), None, ch, None)
    sent_at = datetime.now(timezone.utc)
    message = replace(_message("m-1"), created_at=sent_at, payload_digest="sha256:" + "0" * 64, via="HUB")
    after_end = fr.certificate.not_valid_after_utc + timedelta(days=1)

    def report(received_at: datetime) -> DeliveryReport:
        return DeliveryReport("m-1", "HUB", "CH", "FR", DELIVERED, sent_at, receiver_answer=_receipt(fr, message, received_at))

    status, detail = poller._checked(message, report(sent_at + timedelta(seconds=1)), now=after_end)
    assert status == DELIVERED and "signed receipt from FR verified" in detail
    status, detail = poller._checked(message, report(sent_at - timedelta(days=1)), now=after_end)
    assert status == PENDING and "CERT_EXPIRED" in detail
