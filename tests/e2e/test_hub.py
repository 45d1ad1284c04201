"""A regional hub beside national gateways, over real sockets on 127.0.0.1.

CH and FR talk directly; KE is reached only through HUB (pushed to); TZ accepts no connection and
pulls from HUB. Every gateway is configured the way an operator would write it."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from adapters.cites_write import permit_to_xml
from adapters.exchange_xml import (
    HubRequest,
    build_envelope,
    build_hub_request,
    read_delivery_report,
    read_error,
    read_pull_list,
    read_receipt,
)
from adapters.xmlparse import parse_xml
from domain.messages import Action, Direction, EnvelopeHeader, MessageStatus
from gateway import appkeys
from gateway.hub import ACK_PATH, PULL_PATH, TRACK_PATH
from gateway.outbound import conversation_id
from gateway.security import Security
from keys.pki import Algorithm, make_test_ca
from keys.store import KeyStore
from gateway.store import MessageFilter
from simulators.network import build_network
from simulators.samples import make_permit
from tests.e2e.conftest import Cluster

NATIONALS = ("CH", "FR", "KE", "TZ")


@pytest.fixture
async def hubnet(tmp_path):
    net = build_network(
        tmp_path / "net",
        NATIONALS,
        hub="HUB",
        via={"KE": "HUB", "TZ": "HUB"},
        pull={"TZ"},
        retry={"max_attempts": 3, "first_delay_s": 0.1, "factor": 2.0, "max_delay_s": 0.3},
    )
    async with Cluster(net).running((*NATIONALS, "HUB")) as c:
        yield c


def _permit(importer: str, n: int = 1):
    return make_permit(random.Random(n), issuer="CH", importer_country=importer, number=f"CH26-{importer}{n:04d}")


async def _wait(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def _report(c: Cluster, message_id: str, statuses: set[str]):
    async def reported():
        r = await c.store("CH").delivery_report(message_id)
        return r if r is not None and r.status in statuses else None

    return await _wait(reported)


def _envelope(security: Security, *, sender: str, receiver: str, payload: bytes, number: str, relayed_by=None) -> bytes:
    header = EnvelopeHeader(
        message_id=str(uuid.uuid4()),
        conversation_id=conversation_id("CH", number),
        sender=sender,
        receiver=receiver,
        document_type="CITESEPermit",
        document_number=number,
        document_issuer="CH",
        document_version=1,
        action=Action.ISSUE,
        created_at=datetime.now(timezone.utc),
    )
    element = build_envelope(header, payload, sent_at=datetime.now(timezone.utc), relayed_by=relayed_by)
    return security.sign(element)


async def _post(c: Cluster, party: str, path: str, body: bytes):
    async with c.http.post(c.url(party) + path, data=body, headers={"Content-Type": "application/xml"}) as resp:
        return resp.status, await resp.read()


async def test_direct_and_via_hub_in_one_network(hubnet):
    c = hubnet
    status, direct = await c.submit(_permit("FR"))
    assert status == 202, direct
    status, relayed = await c.submit(_permit("KE"))
    assert status == 202, relayed
    to_fr, to_ke = direct["messages"][0]["message_id"], relayed["messages"][0]["message_id"]

    m_fr = await c.wait_status("CH", to_fr, {MessageStatus.ACKNOWLEDGED})
    m_ke = await c.wait_status("CH", to_ke, {MessageStatus.ACKNOWLEDGED})
    assert m_fr.via is None and m_ke.via == "HUB"
    # CH's acknowledgement for KE is the hub's receipt: accepted, pending delivery.
    assert read_receipt(parse_xml(m_ke.receipt).getroot()).status == "PendingDelivery"

    # The same message id arrives at KE from CH, relayed, with CH's permit signature intact.
    at_ke = await _wait(lambda: c.store("KE").get_message(to_ke))
    assert (at_ke.direction, at_ke.sender, at_ke.status) == (Direction.INBOUND, "CH", MessageStatus.RECEIVED)
    assert at_ke.payload == m_ke.payload
    at_hub = await c.wait_status("HUB", to_ke, {MessageStatus.ACKNOWLEDGED})
    assert read_receipt(parse_xml(at_hub.receipt).getroot()).sender == "KE"
    assert await c.store("FR").get_message(to_ke) is None and await c.store("HUB").get_message(to_fr) is None

    # The sender learns of the final delivery, with KE's own receipt checked, through its own API.
    report = await _report(c, to_ke, {"Delivered"})
    assert "signed receipt from KE verified" in report.detail
    status, view = await c.get("CH", f"/v1/messages/{to_ke}")
    assert status == 200
    assert any("HUB reports Delivered" in (e["detail"] or "") for e in view["events"])
    acked = next(e for e in view["events"] if e["status"] == "ACKNOWLEDGED")
    assert acked["detail"].startswith("signed receipt from HUB"), acked  # the hub's, not yet KE's
    assert view["via"] == "HUB" and view["delivery"]["status"] == "Delivered" and view["delivery"]["reported_by"] == "HUB"


async def test_pull_with_acknowledgement_end_to_end(hubnet):
    c = hubnet
    status, body = await c.submit(_permit("TZ"))
    assert status == 202, body
    message_id = body["messages"][0]["message_id"]
    await c.wait_status("CH", message_id, {MessageStatus.ACKNOWLEDGED})
    at_tz = await _wait(lambda: c.store("TZ").get_message(message_id))
    assert at_tz.sender == "CH" and at_tz.status is MessageStatus.RECEIVED
    at_hub = await c.wait_status("HUB", message_id, {MessageStatus.ACKNOWLEDGED})
    assert read_receipt(parse_xml(at_hub.receipt).getroot()).sender == "TZ"
    events = [e.detail or "" for e in await c.store("HUB").message_events(message_id)]
    assert any("held for TZ to pull" in d for d in events) and any("fetched by TZ" in d for d in events)
    report = await _report(c, message_id, {"Delivered"})
    assert report.reporter == "HUB"


async def test_nothing_is_deleted_before_the_acknowledgement(hubnet):
    c = hubnet
    await c.stop("TZ")  # act as TZ by hand, with TZ's own keys
    tz = Security.load(party="TZ", keys_dir=c.net["TZ"].dir, passphrase=None, agreements=c.net["TZ"].config().agreements)
    hub_party = "HUB"

    def request(op, mid=None, who=tz, sender="TZ"):
        return who.sign(build_hub_request(HubRequest(sender, hub_party, op, mid, datetime.now(timezone.utc))))

    status, body = await c.submit(_permit("TZ", 2))
    message_id = body["messages"][0]["message_id"]
    await c.wait_status("CH", message_id, {MessageStatus.ACKNOWLEDGED})
    # Held for pull: the hub's pusher never takes it.
    assert (await c.store("HUB").get_message(message_id)).status is MessageStatus.SEND_ENQUEUED

    status, answer = await _post(c, "HUB", PULL_PATH, request("list"))
    assert status == 200
    listing = read_pull_list(tz.verify(answer, "HUB").signed_root)
    assert [w.message_id for w in listing.waiting] == [message_id]

    # Two fetches at once (a puller and its own retry): both are served, one moves it to SENDING.
    (status, envelope), (again_status, _) = await asyncio.gather(
        _post(c, "HUB", PULL_PATH, request("fetch", message_id)), _post(c, "HUB", PULL_PATH, request("fetch", message_id))
    )
    assert (status, again_status) == (200, 200)
    fetches = [e.detail for e in await c.store("HUB").message_events(message_id) if "fetched" in (e.detail or "")]
    assert sorted(fetches) == ["fetched again by TZ", "fetched by TZ"]
    # Fetched but not acknowledged: still listed, still fetchable.
    status, answer = await _post(c, "HUB", PULL_PATH, request("list"))
    assert [w.message_id for w in read_pull_list(tz.verify(answer, "HUB").signed_root).waiting] == [message_id]

    # Another member can neither list it nor fetch it, nor pose as TZ.
    fr = c.security("FR")
    status, answer = await _post(c, "HUB", PULL_PATH, request("fetch", message_id, who=fr, sender="FR"))
    assert status == 404
    status, answer = await _post(c, "HUB", PULL_PATH, request("fetch", message_id, who=fr, sender="TZ"))
    assert (status, read_error(parse_xml(answer).getroot()).code) == (403, "SENDER_MISMATCH")

    # TZ's gateway processes the envelope (as its PullClient does) and acknowledges with its receipt.
    tz_gateway = await c.start("TZ")

    answer = await tz_gateway.app[appkeys.INBOUND].receive(envelope)
    assert answer.status == 200
    # The same receipt twice at once (and TZ's own puller may be a third): whoever loses the race
    # hears 204 as well, and the history says acknowledged once.
    acks = await asyncio.gather(_post(c, "HUB", ACK_PATH, answer.body), _post(c, "HUB", ACK_PATH, answer.body))
    assert [status for status, _ in acks] == [204, 204]
    assert (await c.store("HUB").get_message(message_id)).status is MessageStatus.ACKNOWLEDGED
    history = await c.store("HUB").message_events(message_id)
    # One move to ACKNOWLEDGED. TZ's own puller may have fetched it meanwhile: its "fetched again"
    # note then lands after the acknowledgement and carries the status of that moment (a note, not
    # a move), as every event records the status the message had when it was written.
    statuses = [e.status for e in history]
    moves = [now for before, now in zip([None, *statuses], statuses) if now is not before]
    assert moves.count(MessageStatus.ACKNOWLEDGED) == 1
    assert [e.detail for e in history].count("pulled; signed receipt from TZ") == 1
    assert all(e.detail == "fetched again by TZ" for e in history[statuses.index(MessageStatus.ACKNOWLEDGED) + 1 :])
    status, answer = await _post(c, "HUB", PULL_PATH, request("list"))
    assert read_pull_list(tz.verify(answer, "HUB").signed_root).waiting == ()
    # Acknowledging again (TZ's duplicate answer is the very same receipt) changes nothing.
    again = await tz_gateway.app[appkeys.INBOUND].receive(envelope)
    assert again.duplicate and (await _post(c, "HUB", ACK_PATH, again.body))[0] == 204
    assert (await c.store("HUB").get_message(message_id)).status is MessageStatus.ACKNOWLEDGED


async def test_a_hub_that_alters_the_permit_is_caught_by_the_receiver(hubnet):
    c = hubnet
    permit = _permit("KE", 3)
    signed = c.security("CH").sign(permit_to_xml(permit))
    altered = signed.replace(permit.number.encode(), permit.number.encode()[:-1] + b"9", 1)
    assert altered != signed
    # The hub's own hop signature is perfect; only the issuer's signature on the payload can tell.
    envelope = _envelope(c.security("HUB"), sender="CH", receiver="KE", payload=altered, number=permit.number, relayed_by="HUB")
    status, answer = await _post(c, "KE", "/exchange/v1/messages", envelope)
    code = read_error(c.security("CH").verify(answer, "KE").signed_root).code
    assert status == 422 and code in {"DIGEST_MISMATCH", "SIGNATURE_INVALID"}
    assert await c.store("KE").list_messages(MessageFilter()) == []

    # The untouched permit through the same forged hop is accepted: the check is the signature, not luck.
    envelope = _envelope(c.security("HUB"), sender="CH", receiver="KE", payload=signed, number=permit.number, relayed_by="HUB")
    status, _ = await _post(c, "KE", "/exchange/v1/messages", envelope)
    assert status == 200


async def test_a_member_posing_as_another_is_refused_by_the_hub(hubnet):
    c = hubnet
    permit = _permit("KE", 4)
    signed = c.security("CH").sign(permit_to_xml(permit))
    # FR signs an envelope that claims to come from CH.
    envelope = _envelope(c.security("FR"), sender="CH", receiver="KE", payload=signed, number=permit.number)
    status, answer = await _post(c, "HUB", "/exchange/v1/messages", envelope)
    assert (status, read_error(parse_xml(answer).getroot()).code) == (403, "SENDER_MISMATCH")
    # FR claiming to be a hub relaying for CH is refused by the receiver.
    envelope = _envelope(c.security("FR"), sender="CH", receiver="KE", payload=signed, number=permit.number, relayed_by="FR")
    status, answer = await _post(c, "KE", "/exchange/v1/messages", envelope)
    assert (status, read_error(parse_xml(answer).getroot()).code) == (403, "SENDER_MISMATCH")
    # A hub forwards only to its members.
    envelope = _envelope(c.security("CH"), sender="CH", receiver="ZZ", payload=signed, number=permit.number)
    status, answer = await _post(c, "HUB", "/exchange/v1/messages", envelope)
    assert read_error(parse_xml(answer).getroot()).code == "MISADDRESSED"


async def test_only_the_hub_of_the_agreement_relays_for_a_partner(tmp_path):
    # KE knows a second hub; its agreement with CH says CH comes via HUB.
    hub2 = KeyStore(tmp_path / "HUB2").init_party("HUB2", Algorithm.RSA2048, ca=make_test_ca("second hub CA"))
    second_hub = f'[[partner]]\nparty = "HUB2"\nrole = "hub"\nendpoint = "http://127.0.0.1:9"\ncertificates = ["{hub2.cert}"]\n'
    net = build_network(tmp_path / "net", ("CH", "FR", "KE"), hub="HUB", via={"KE": "HUB"}, extra_for={"KE": second_hub})
    async with Cluster(net).running(("CH", "FR", "KE", "HUB")) as c:
        permit = _permit("KE", 6)
        signed = c.security("CH").sign(permit_to_xml(permit))
        as_hub2 = Security.load(party="HUB2", keys_dir=tmp_path / "HUB2", passphrase=None, agreements=net["KE"].config().agreements)
        envelope = _envelope(as_hub2, sender="CH", receiver="KE", payload=signed, number=permit.number, relayed_by="HUB2")
        status, answer = await _post(c, "KE", "/exchange/v1/messages", envelope)
        error = read_error(parse_xml(answer).getroot())
        assert (status, error.code) == (403, "SENDER_MISMATCH")
        assert "through HUB, not HUB2" in error.message
        assert await c.store("KE").get_message(str(parse_xml(envelope).getroot().findtext(".//{*}MessageId"))) is None
        # The hub of the agreement still relays.
        envelope = _envelope(c.security("HUB"), sender="CH", receiver="KE", payload=signed, number=permit.number, relayed_by="HUB")
        status, _ = await _post(c, "KE", "/exchange/v1/messages", envelope)
        assert status == 200


async def test_only_the_original_sender_may_track_a_message(hubnet):
    c = hubnet
    status, body = await c.submit(_permit("KE", 5))
    message_id = body["messages"][0]["message_id"]
    await c.wait_status("HUB", message_id, {MessageStatus.ACKNOWLEDGED})

    def track(who: str):
        return c.security(who).sign(build_hub_request(HubRequest(who, "HUB", "track", message_id, datetime.now(timezone.utc))))

    status, answer = await _post(c, "HUB", TRACK_PATH, track("FR"))
    assert status == 404
    status, answer = await _post(c, "HUB", TRACK_PATH, track("CH"))
    report = read_delivery_report(c.security("CH").verify(answer, "HUB").signed_root)
    assert (report.status, report.final_receiver) == ("Delivered", "KE")
    assert read_receipt(c.security("CH").verify(report.receiver_answer, "KE").signed_root).message_id == message_id


async def test_unreachable_member_ends_as_failed_delivery_for_the_sender(hubnet):
    c = hubnet
    await c.stop("KE")
    status, body = await c.submit(_permit("KE", 6))
    message_id = body["messages"][0]["message_id"]
    await c.wait_status("CH", message_id, {MessageStatus.ACKNOWLEDGED})
    parked = await c.wait_status("HUB", message_id, {MessageStatus.SEND_FAILURE})
    assert parked.attempts == 3
    report = await _report(c, message_id, {"FailedDelivery"})
    assert "parked" in report.detail


async def test_a_hub_whose_certificate_ended_takes_nothing_and_signs_nothing(hubnet, tmp_path):
    # Its receipts, hop signatures and desk answers would be refused by every member: it answers
    # 503 SIGNING_CERT_UNUSABLE and holds nothing; the sender keeps the message, parked with the
    # hub's answer, for its operator to send again once the hub is renewed.
    c = hubnet
    ends = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=4)
    short = KeyStore(tmp_path / "short").init_party("HUB", Algorithm.RSA2048, ca=make_test_ca("short hub CA"), not_after=ends)
    await c.install_certificate("HUB", short)
    await asyncio.sleep(max(0.0, (ends - datetime.now(timezone.utc)).total_seconds()) + 1.1)

    status, body = await c.submit(_permit("KE", 7))
    assert status == 202, body
    message_id = body["messages"][0]["message_id"]
    parked = await c.wait_status("CH", message_id, {MessageStatus.SEND_FAILURE, MessageStatus.ACKNOWLEDGED})
    assert parked.status is MessageStatus.SEND_FAILURE and "HTTP 503" in parked.last_error_detail, parked
    assert await c.store("HUB").get_message(message_id) is None and await c.store("KE").get_message(message_id) is None

    request = c.security("TZ").sign(build_hub_request(HubRequest("TZ", "HUB", "list", None, datetime.now(timezone.utc))))
    status, answer = await _post(c, "HUB", PULL_PATH, request)
    assert status == 503 and read_error(parse_xml(answer).getroot()).code == "SIGNING_CERT_UNUSABLE", answer

    renewed = KeyStore(tmp_path / "renewed").init_party("HUB", Algorithm.RSA2048, ca=make_test_ca("renewed hub CA"))
    await c.install_certificate("HUB", renewed)
    status, body = await c.post_json("CH", f"/v1/messages/{message_id}/retry", operator=True)
    assert status == 202, body
    assert (await c.wait_status("CH", message_id, {MessageStatus.ACKNOWLEDGED})).via == "HUB"
    await _wait(lambda: c.store("KE").get_message(message_id))
