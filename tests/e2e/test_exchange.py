"""Point-to-point exchange over real sockets on 127.0.0.1: the happy path and every refusal."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from adapters.exchange_xml import build_envelope, read_error, read_receipt
from domain.messages import Action, Direction, EnvelopeHeader, MessageStatus
from gateway.outbound import conversation_id
from gateway.security import Security
from keys.pki import make_test_ca
from keys.store import KeyStore, TrustStore
from keys.xmldsig import Signer
from simulators.samples import make_permit
from gateway import appkeys
from tests.conftest import eventually
from tests.e2e.conftest import send_as_issuer

FINAL = {MessageStatus.ACKNOWLEDGED, MessageStatus.REJECTED, MessageStatus.SEND_FAILURE}


async def _deliver(cluster, permit):
    status, body = await cluster.submit(permit)
    assert status == 202, body
    [msg] = body["messages"]
    return await cluster.wait_status("CH", msg["message_id"], FINAL)


async def test_delivery_with_signed_receipt(cluster, permit_ch_fr):
    sent = await _deliver(cluster, permit_ch_fr)
    assert sent.status is MessageStatus.ACKNOWLEDGED
    # The receipt is FR's, names our message and our payload digest, and verifies independently.
    verified = cluster.security("CH").verify(sent.receipt, "FR")
    receipt = read_receipt(verified.signed_root)
    assert receipt.message_id == sent.message_id and receipt.payload_digest == sent.payload_digest
    # FR has the permit, with CH's signature intact, in its inbox.
    status, inbox = await cluster.get("FR", "/v1/inbox")
    assert status == 200
    [item] = inbox["messages"]
    assert item["issuer"] == "CH" and item["number"] == "CH26-000042"
    assert item["permit"]["number"] == "CH26-000042"
    status, view = await cluster.get("FR", "/v1/permits/CH/CH26-000042")
    assert status == 200 and view["direction"] == "inbound" and view["status"] == "VALID"
    async with cluster.http.get(f"{cluster.url('FR')}/v1/permits/CH/CH26-000042/xml", headers=cluster.headers("FR")) as resp:
        signed = await resp.read()
    assert cluster.security("FR").verify(signed, "CH").signer == "CH"
    # Status history on the sender shows who did what, when.
    status, message = await cluster.get("CH", f"/v1/messages/{sent.message_id}")
    assert [e["status"] for e in message["events"]] == ["SEND_ENQUEUED", "SENDING", "ACKNOWLEDGED"]
    # Acknowledging the inbox item moves it to DELIVERED, and again changes nothing.
    for _ in range(2):
        status, acked = await cluster.post_json("FR", item["ack_url"])
        assert status == 200 and acked["status"] == "DELIVERED"
    status, inbox = await cluster.get("FR", "/v1/inbox")
    assert inbox["messages"] == []


async def _envelope(cluster, *, sender="CH", receiver="FR", permit=None, sent_at=None, security=None, mutate=None, message_id=None):
    """A hop envelope as CH's gateway would send it, optionally tampered with."""
    permit = permit or make_permit(random.Random(7), issuer="CH", importer_country="FR", number="CH26-777777")
    from adapters.cites_write import permit_to_xml

    issuer_security = cluster.security("CH")
    payload = issuer_security.sign(permit_to_xml(permit))
    header = EnvelopeHeader(
        message_id=message_id or str(uuid.uuid4()),
        conversation_id=conversation_id("CH", permit.number),
        sender=sender,
        receiver=receiver,
        document_type="CITESEPermit",
        document_number=permit.number,
        document_issuer="CH",
        document_version=1,
        action=Action.ISSUE,
        created_at=datetime.now(timezone.utc),
    )
    if mutate == "payload":
        payload = payload.replace(b"</ram:ScientificName>", b" var. fake</ram:ScientificName>", 1)
    element = build_envelope(header, payload, sent_at=sent_at or datetime.now(timezone.utc))
    # With mutate="payload" the envelope's digest matches the tampered payload: only the issuer's
    # signature over the permit can catch it.
    signed = (security or issuer_security).sign(element)
    if mutate == "envelope":
        signed = signed.replace(b"<ex:DocumentNumber>CH26-777777<", b"<ex:DocumentNumber>CH26-777778<", 1)
        assert b"CH26-777778" in signed
    return header, signed


async def _post_envelope(cluster, party, body):
    async with cluster.http.post(
        f"{cluster.url(party)}/exchange/v1/messages", data=body, headers={"Content-Type": "application/xml"}
    ) as resp:
        return resp.status, await resp.read()


def _error_code(cluster, party_answering, body) -> str:
    verified = cluster.security("CH").verify(body, party_answering)
    return read_error(verified.signed_root).code


async def test_duplicate_send_gets_the_same_receipt_and_no_second_effect(cluster):
    header, body = await _envelope(cluster)
    status1, receipt1 = await _post_envelope(cluster, "FR", body)
    status2, receipt2 = await _post_envelope(cluster, "FR", body)
    assert status1 == status2 == 200
    assert receipt1 == receipt2
    inbound = [m for m in await cluster.store("FR").messages_for_permit("CH", "CH26-777777") if m.direction is Direction.INBOUND]
    assert len(inbound) == 1
    assert len(await cluster.store("FR").get_permit_versions("CH", "CH26-777777")) == 1


@pytest.mark.parametrize(
    "case, expected_status, expected_code",
    [
        ("tampered_envelope", 422, "DIGEST_MISMATCH"),
        ("tampered_permit", 422, "DIGEST_MISMATCH"),
        ("misaddressed", 422, "MISADDRESSED"),
        ("posing_as_other_party", 403, "SENDER_MISMATCH"),
        ("unknown_certificate", 422, "SIGNER_UNTRUSTED"),
        ("replayed_old_message", 409, "REPLAY_REJECTED"),
        ("unknown_sender", 403, "UNKNOWN_PARTNER"),
    ],
)
async def test_hostile_envelopes_are_refused_with_their_code(cluster, case, expected_status, expected_code, tmp_path):
    kwargs = {}
    if case == "tampered_envelope":
        kwargs["mutate"] = "envelope"
    elif case == "tampered_permit":
        kwargs["mutate"] = "payload"
    elif case == "misaddressed":
        kwargs["receiver"] = "KE"
    elif case == "posing_as_other_party":
        kwargs["security"] = cluster.security("KE")  # KE signs an envelope that says From=CH
    elif case == "unknown_certificate":
        ca = make_test_ca("Rogue CA")
        store = KeyStore(tmp_path / "rogue")
        store.init_party("CH", "rsa2048", ca=ca)
        identity = store.load_signing_identity("CH")
        kwargs["security"] = Security.from_parts(party="CH", signer=Signer(identity), trust=TrustStore(), certificate_pem=identity.cert_pem)
    elif case == "replayed_old_message":
        kwargs["sent_at"] = datetime.now(timezone.utc) - timedelta(hours=2)
    elif case == "unknown_sender":
        kwargs["sender"] = "BR"
    _, body = await _envelope(cluster, **kwargs)
    status, answer = await _post_envelope(cluster, "FR", body)
    assert status == expected_status, answer
    assert _error_code(cluster, "FR", answer) == expected_code
    # Nothing was stored on the receiver.
    assert await cluster.store("FR").messages_for_permit("CH", "CH26-777777") == []
    assert await cluster.store("FR").messages_for_permit("CH", "CH26-777778") == []


async def test_malformed_and_hostile_bodies_get_signed_errors(cluster):
    for body, code in [
        (b"", "XML_MALFORMED"),
        (b"<not-closed>", "XML_MALFORMED"),
        (b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY a "aaaa">]><ex:Envelope xmlns:ex="urn:epix-gateway:exchange:1"/>', "XML_FORBIDDEN_CONSTRUCT"),
        (b'<ex:Envelope xmlns:ex="urn:epix-gateway:exchange:1"><ex:Header/></ex:Envelope>', "ENVELOPE_INVALID"),
    ]:
        status, answer = await _post_envelope(cluster, "FR", body)
        assert 400 <= status < 500
        assert _error_code(cluster, "FR", answer) == code


async def test_partner_down_then_back_is_delivered_once(patient_cluster, permit_ch_fr):
    # A patient sender: with the usual 4 attempts in 0.7 s, FR's start-up (0.5 s on PostgreSQL
    # under load) could outlast them and the message would be parked before FR is back.
    cluster = patient_cluster
    await cluster.stop("FR")
    status, body = await cluster.submit(permit_ch_fr)
    assert status == 202
    message_id = body["messages"][0]["message_id"]
    waiting = await cluster.wait_status("CH", message_id, {MessageStatus.WAITING_FOR_RETRY})
    assert waiting.last_error_code == "PARTNER_UNAVAILABLE"
    await cluster.start("FR")
    done = await cluster.wait_status("CH", message_id, {MessageStatus.ACKNOWLEDGED})
    assert done.attempts >= 2
    inbound = [m for m in await cluster.store("FR").messages_for_permit("CH", permit_ch_fr.number) if m.direction is Direction.INBOUND]
    assert len(inbound) == 1


async def test_partner_down_too_long_is_parked_then_operator_retry_keeps_the_id(cluster, permit_ch_fr):
    await cluster.stop("FR")
    status, body = await cluster.submit(permit_ch_fr)
    message_id = body["messages"][0]["message_id"]
    parked = await cluster.wait_status("CH", message_id, {MessageStatus.SEND_FAILURE})
    assert parked.attempts == 4
    status, view = await cluster.get("CH", f"/v1/messages/{message_id}")
    assert "parked" in view["events"][-1]["detail"]
    # An MA token may not retry; an operator may, and the message keeps its id.
    status, err = await cluster.post_json("CH", f"/v1/messages/{message_id}/retry")
    assert status == 403 and err["code"] == "FORBIDDEN"
    await cluster.start("FR")
    status, retried = await cluster.post_json("CH", f"/v1/messages/{message_id}/retry", operator=True)
    assert status == 202 and retried["message_id"] == message_id
    await cluster.wait_status("CH", message_id, {MessageStatus.ACKNOWLEDGED})
    inbound = await cluster.store("FR").get_message(message_id)
    assert inbound is not None and inbound.direction is Direction.INBOUND


async def test_cancel_and_replace_reach_everyone_who_received_the_original(cluster):
    rng = random.Random(5)
    original = make_permit(rng, issuer="CH", importer_country="FR", number="CH26-100001")
    await _deliver(cluster, original)
    status, body = await cluster.post_json("CH", "/v1/permits/CH/CH26-100001/cancel", {"reason": "Issued in error"})
    assert status == 202 and body["messages"][0]["action"] == "cancel"
    await cluster.wait_status("CH", body["messages"][0]["message_id"], {MessageStatus.ACKNOWLEDGED})
    [version] = await cluster.store("FR").get_permit_versions("CH", "CH26-100001")
    assert version.status == "CANCELLED"
    # Cancelling twice is idempotent; replacing a cancelled permit is refused.
    status, again = await cluster.post_json("CH", "/v1/permits/CH/CH26-100001/cancel", {"reason": "again"})
    assert status == 202 and again["replayed"] is True

    second = make_permit(rng, issuer="CH", importer_country="FR", number="CH26-100002")
    await _deliver(cluster, second)
    replacement = make_permit(rng, issuer="CH", importer_country="FR", number="CH26-100003", replaces="CH26-100002")
    status, body = await cluster.submit(replacement)
    assert status == 202 and body["messages"][0]["action"] == "replace"
    await cluster.wait_status("CH", body["messages"][0]["message_id"], {MessageStatus.ACKNOWLEDGED})
    [old] = await cluster.store("FR").get_permit_versions("CH", "CH26-100002")
    assert old.status == "REPLACED" and old.replaced_by == "CH26-100003"
    status, view = await cluster.get("CH", "/v1/permits/CH/CH26-100002")
    assert view["status"] == "REPLACED"


async def test_a_permit_naming_itself_as_the_one_it_replaces_is_refused_and_nothing_is_stored_or_sent(cluster):
    from dataclasses import replace

    rng = random.Random(6)
    original = make_permit(rng, issuer="CH", importer_country="FR", number="CH26-100101")
    await _deliver(cluster, original)
    before = {p: sorted(m.message_id for m in await cluster.store(p).messages_for_permit("CH", original.number)) for p in ("CH", "FR")}
    fresh = make_permit(rng, issuer="CH", importer_country="FR", number="CH26-100102")
    for selfish in (replace(original, replaces=original.number), replace(fresh, replaces=fresh.number)):
        status, body = await cluster.submit(selfish)
        assert status == 422 and body["code"] == "PERMIT_INVALID", body
        [problem] = body["context"]["problems"]
        assert (problem["code"], problem["path"], problem["severity"]) == ("REPLACES_ITSELF", "replaces", "error")
        assert selfish.number in problem["message"] and "its own number" in problem["message"]
    # The original is still the one valid permit on both sides; nothing new is queued or received.
    for party in ("CH", "FR"):
        [version] = await cluster.store(party).get_permit_versions("CH", original.number)
        assert version.status == "VALID" and version.replaces is None and version.replaced_by is None
        assert sorted(m.message_id for m in await cluster.store(party).messages_for_permit("CH", original.number)) == before[party]
        assert await cluster.store(party).get_permit_versions("CH", fresh.number) == []
    assert sum((await cluster.store("CH").counts_by_status()).values()) == 1


async def test_idempotency_key_returns_the_same_messages(cluster, permit_ch_fr):
    s1, b1 = await cluster.submit(permit_ch_fr, key="abc-1")
    s2, b2 = await cluster.submit(permit_ch_fr, key="abc-1")
    assert s1 == s2 == 202
    assert [m["message_id"] for m in b1["messages"]] == [m["message_id"] for m in b2["messages"]]
    assert b2["replayed"] is True
    other = make_permit(random.Random(99), issuer="CH", importer_country="FR", number="CH26-999999")
    s3, b3 = await cluster.submit(other, key="abc-1")
    assert s3 == 409 and b3["code"] == "IDEMPOTENCY_CONFLICT"


async def test_local_api_refusals_are_specific_and_change_nothing(cluster, permit_ch_fr):
    url = f"{cluster.url('CH')}/v1/permits"
    async with cluster.http.post(url, json={}) as resp:
        assert resp.status == 401 and (await resp.json())["code"] == "UNAUTHENTICATED"
    async with cluster.http.post(url, data=b"{oops", headers={**cluster.headers("CH"), "Content-Type": "application/json"}) as resp:
        assert resp.status == 400 and (await resp.json())["code"] == "JSON_MALFORMED"
    async with cluster.http.post(url, data=b"hello", headers={**cluster.headers("CH"), "Content-Type": "text/plain"}) as resp:
        assert resp.status == 415 and (await resp.json())["code"] == "UNSUPPORTED_MEDIA_TYPE"
    # A CH token cannot issue a French permit.
    french = make_permit(random.Random(3), issuer="FR", importer_country="CH", number="FR26-1")
    status, body = await cluster.submit(french, party="CH")
    assert status == 403 and body["code"] == "FORBIDDEN"
    # Every rule problem at once.
    from dataclasses import replace

    bad = replace(permit_ch_fr, valid_until=permit_ch_fr.issue_date + timedelta(days=400), purpose="?")
    status, body = await cluster.submit(bad)
    assert status == 422 and body["code"] == "PERMIT_INVALID"
    codes = {p["code"] for p in body["context"]["problems"]}
    assert len(codes) >= 2
    # An operator reading another gateway's message that does not exist.
    status, body = await cluster.get("CH", f"/v1/messages/{uuid.uuid4()}")
    assert status == 404 and body["code"] == "NOT_FOUND"
    assert (await cluster.store("CH").counts_by_status()) == {} or sum((await cluster.store("CH").counts_by_status()).values()) == 0


async def _nothing_held(cluster, number: str) -> None:
    for party in ("CH", "FR"):
        assert await cluster.store(party).get_permit_versions("CH", number) == []
        assert await cluster.store(party).messages_for_permit("CH", number) == []


@pytest.mark.parametrize(
    ("case", "code", "path", "words"),
    [
        ("expired 20 days ago", "PERMIT_EXPIRED", "valid_until", "the permit has expired: its last day of validity was"),
        ("from year 1", "PERMIT_EXPIRED", "valid_until", "its last day of validity was 0001-03-01"),
        ("issued tomorrow", "ISSUED_IN_FUTURE", "issue_date", "a permit cannot be issued on a day that has not begun"),
    ],
)
async def test_a_permit_expired_or_dated_tomorrow_is_refused_on_submission(cluster, permit_ch_fr, case, code, path, words):
    from dataclasses import replace

    now = datetime.now(timezone.utc).replace(microsecond=0)
    if case == "expired 20 days ago":
        start = now - timedelta(days=100)
        bad = replace(permit_ch_fr, issue_date=start, valid_from=start, valid_until=now - timedelta(days=20))
    elif case == "from year 1":
        start = datetime(1, 1, 1, tzinfo=timezone.utc)
        bad = replace(permit_ch_fr, issue_date=start, valid_from=start, valid_until=datetime(1, 3, 1, tzinfo=timezone.utc))
    else:
        start = now + timedelta(days=1, hours=1)
        bad = replace(permit_ch_fr, issue_date=start, valid_from=start, valid_until=start + timedelta(days=90))
    status, body = await cluster.submit(bad)
    assert status == 422 and body["code"] == "PERMIT_INVALID", body
    [problem] = [p for p in body["context"]["problems"] if p["severity"] == "error"]
    assert (problem["code"], problem["path"]) == (code, path) and words in problem["message"], problem
    await _nothing_held(cluster, bad.number)


async def test_a_permit_that_expired_in_transit_is_received_but_one_sent_expired_is_refused(cluster, permit_ch_fr):
    """The receiver judges the dates at the message's CreatedAt, the moment the issuer's gateway
    accepted it: a permit valid then is stored however late it arrives (its verdict at the border
    is EXPIRED); one already expired then should never have been sent."""
    from dataclasses import replace

    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = now - timedelta(days=100)
    lapsed = replace(permit_ch_fr, issue_date=start, valid_from=start, valid_until=now - timedelta(days=20))
    status, answer = await send_as_issuer(cluster, lapsed, receiver="FR", created_at=now - timedelta(days=21))
    assert status == 200, answer
    status, view = await cluster.get("FR", f"/v1/permits/CH/{lapsed.number}")
    assert status == 200 and view["direction"] == "inbound" and view["status"] == "VALID"

    # Sent expired, and with a line of no quantity: the signed error names both problems.
    late = replace(lapsed, number="CH26-LATE01", items=(replace(lapsed.items[0], quantity=Decimal(0)), *lapsed.items[1:]))
    status, answer = await send_as_issuer(cluster, late, receiver="FR", created_at=now - timedelta(days=19))
    error = read_error(cluster.security("CH").verify(answer, "FR").signed_root)
    assert status == 422 and error.code == "PERMIT_INVALID" and "the permit has expired" in error.message, error
    assert {(p.code, p.path) for p in error.problems} == {("PERMIT_EXPIRED", "valid_until"), ("QUANTITY_NOT_POSITIVE", "items[0].quantity")}
    assert "QUANTITY_NOT_POSITIVE at items[0].quantity" in error.describe("FR")
    await _nothing_held(cluster, late.number)


async def test_ops_endpoints(cluster, permit_ch_fr):
    await _deliver(cluster, permit_ch_fr)
    async with cluster.http.get(f"{cluster.url('CH')}/healthz") as resp:
        assert resp.status == 200
    async with cluster.http.get(f"{cluster.url('CH')}/readyz") as resp:
        ready = await resp.json()
        assert resp.status == 200 and ready["status"] == "ready", ready
    cert = cluster.security("CH").certificate
    assert (ready["store"], ready["queue"], ready["certificate"]["status"]) == ("ok", "ok", "ok"), ready
    assert ready["certificate"]["not_after"] == cert.not_valid_after_utc.isoformat() and ready["certificate"]["days_left"] > 300
    async with cluster.http.get(f"{cluster.url('CH')}/metrics") as resp:
        text = await resp.text()
    assert 'epix_delivery_attempts_total{outcome="acknowledged"} 1.0' in text
    assert 'epix_messages{status="ACKNOWLEDGED"} 1' in text
    # When each certificate ends: CH's own, and the partners' it pins.
    for use, party, cert in (("signing", "CH", cluster.security("CH").certificate), ("pinned", "FR", cluster.security("FR").certificate)):
        line = f'epix_certificate_not_after_seconds{{use="{use}",party="{party}",serial="{cert.serial_number:x}"}}'
        assert f"{line} {cert.not_valid_after_utc.timestamp():.0f}" in text, text
    async with cluster.http.get(f"{cluster.url('CH')}/v1/openapi.json") as resp:
        spec = await resp.json()
    assert "/v1/permits" in spec["paths"]
    async with cluster.http.get(f"{cluster.url('FR')}/exchange/v1/directory") as resp:
        directory = await resp.json()
    assert directory["party"] == "FR" and "BEGIN CERTIFICATE" in directory["certificate_pem"]


async def test_openapi_describes_every_route(cluster):
    """The published description stays true: every route the app serves is in it, and nothing else."""
    app = cluster.gateways["CH"].app
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
    }
    async with cluster.http.get(f"{cluster.url('CH')}/v1/openapi.json") as resp:
        spec = await resp.json()
    described = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert served == described


async def test_operator_replays_parked_messages_in_bulk_keeping_their_ids(cluster):
    await cluster.stop("FR")
    ids = []
    for i in range(3):
        permit = make_permit(random.Random(200 + i), issuer="CH", importer_country="FR", number=f"CH26-BULK{i}")
        status, body = await cluster.submit(permit)
        assert status == 202
        ids.append(body["messages"][0]["message_id"])
    for message_id in ids:
        await cluster.wait_status("CH", message_id, {MessageStatus.SEND_FAILURE})
    status, err = await cluster.post_json("CH", "/v1/messages/retry", {"status": "SEND_FAILURE"})
    assert status == 403 and err["code"] == "FORBIDDEN"
    status, err = await cluster.post_json("CH", "/v1/messages/retry", {"status": "ACKNOWLEDGED"}, operator=True)
    assert status == 400 and err["code"] == "JSON_MALFORMED"
    await cluster.start("FR")
    status, body = await cluster.post_json("CH", "/v1/messages/retry", {"receiver": "FR"}, operator=True)
    assert status == 202 and sorted(body["retried"]) == sorted(ids) and body["unparked"] == 0  # the store is the queue
    for message_id in ids:
        await cluster.wait_status("CH", message_id, {MessageStatus.ACKNOWLEDGED})
        assert (await cluster.store("FR").get_message(message_id)).direction is Direction.INBOUND


async def test_an_ended_signing_certificate_stops_new_work_and_readiness(cluster, tmp_path, permit_ch_fr):
    import asyncio

    from keys.pki import Algorithm

    ends = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=3)
    short = KeyStore(tmp_path / "short").init_party("CH", Algorithm.RSA2048, ca=make_test_ca("short CA"), not_after=ends)
    await cluster.install_certificate("CH", short)
    sent = await _deliver(cluster, permit_ch_fr)
    assert sent.status is MessageStatus.ACKNOWLEDGED
    await asyncio.sleep(max(0.0, (ends - datetime.now(timezone.utc)).total_seconds()) + 1.1)
    async with cluster.http.get(f"{cluster.url('CH')}/readyz") as resp:
        ready = await resp.json()
        assert resp.status == 503 and ready["status"] == "unavailable", ready
    assert ready["store"] == "ok" and ready["certificate"]["status"] == "unusable" and ready["certificate"]["days_left"] < 0
    assert "expired" in ready["certificate"]["detail"] and ready["certificate"]["not_after"] == ends.isoformat(), ready
    # A new permit, or a cancellation, would carry a signature every partner refuses: neither is
    # taken, and nothing is stored.
    late = make_permit(random.Random(7), issuer="CH", importer_country="FR", number="CH26-000043")
    status, body = await cluster.submit(late)
    assert (status, body["code"]) == (503, "SIGNING_CERT_UNUSABLE") and "renewed certificate" in body["message"], body
    assert (await cluster.get("CH", f"/v1/permits/CH/{late.number}"))[0] == 404
    status, body = await cluster.post_json("CH", f"/v1/permits/CH/{permit_ch_fr.number}/cancel", {"reason": "late"})
    assert (status, body["code"]) == (503, "SIGNING_CERT_UNUSABLE"), body
    status, held = await cluster.get("CH", f"/v1/permits/CH/{permit_ch_fr.number}")
    assert status == 200 and held["status"] == "VALID", held
    # Nor does CH sign receipts partners would refuse: FR's permit to CH is answered 503, stored
    # nowhere at CH, and FR keeps it (tried again, then parked for its operator).
    inbound = make_permit(random.Random(8), issuer="FR", importer_country="CH", number="FR26-000044")
    status, body = await cluster.submit(inbound)
    assert status == 202, body
    [message] = body["messages"]
    parked = await cluster.wait_status("FR", message["message_id"], {MessageStatus.SEND_FAILURE, MessageStatus.ACKNOWLEDGED})
    assert parked.status is MessageStatus.SEND_FAILURE and "HTTP 503" in parked.last_error_detail, parked
    assert await cluster.store("CH").get_message(message["message_id"]) is None
    # A renewed certificate: ready again, the cancellation goes through, and FR's operator
    # sends the parked permit again (same message id), which CH now takes with a valid receipt.
    renewed = KeyStore(tmp_path / "renewed").init_party("CH", Algorithm.RSA2048, ca=make_test_ca("renewed CA"))
    await cluster.install_certificate("CH", renewed)
    async with cluster.http.get(f"{cluster.url('CH')}/readyz") as resp:
        assert resp.status == 200
    status, body = await cluster.post_json("CH", f"/v1/permits/CH/{permit_ch_fr.number}/cancel", {"reason": "late"})
    assert status == 202, body
    status, body = await cluster.post_json("FR", f"/v1/messages/{message['message_id']}/retry", operator=True)
    assert status == 202, body
    sent = await cluster.wait_status("FR", message["message_id"], FINAL)
    assert sent.status is MessageStatus.ACKNOWLEDGED, sent


async def test_the_delivery_loop_outlives_a_failing_store_call(cluster, permit_ch_fr, monkeypatch):
    # The database gone for a moment under CH's delivery loop (a PostgreSQL restart, a disk
    # error): the loop fails, says so, is counted, starts again, and delivers.
    store = cluster.store("CH")
    real, failed = store.claim_due, []

    async def claim_due(*args, **kwargs):
        if not failed:
            failed.append(True)
            raise ConnectionResetError("the database connection was reset")
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "claim_due", claim_due)
    cluster.gateways["CH"].app[appkeys.DELIVERY].queue.notify()

    async def crashes() -> str:
        async with cluster.http.get(f"{cluster.url('CH')}/metrics") as resp:
            text = await resp.text()
        return next((line for line in text.splitlines() if line.startswith("epix_background_task_crashes_total")), "")

    await eventually(crashes, 'epix_background_task_crashes_total{task="delivery-CH"} 1.0')
    sent = await _deliver(cluster, permit_ch_fr)
    assert sent.status is MessageStatus.ACKNOWLEDGED


@pytest.mark.postgres
async def test_a_database_connection_lost_mid_request_is_503_and_the_next_request_is_served(tmp_path, permit_ch_fr, monkeypatch):
    import asyncio

    import asyncpg

    from tests.e2e.conftest import running_cluster
    from tests.pg import PG_DSN

    async with running_cluster("postgres", tmp_path) as cluster:
        await _deliver(cluster, permit_ch_fr)
        store = cluster.store("CH")
        real = store.get_permit_versions
        held: list[int] = []

        async def get_permit_versions(*args, **kwargs):
            if not held:  # the first call waits in the database, long enough to lose its connection
                async with store.pool.acquire() as conn:
                    held.append(conn.get_server_pid())
                    await conn.fetchval("SELECT pg_sleep(30)")
            return await real(*args, **kwargs)

        monkeypatch.setattr(store, "get_permit_versions", get_permit_versions)
        request = asyncio.create_task(cluster.get("CH", f"/v1/permits/CH/{permit_ch_fr.number}"))
        admin = await asyncpg.connect(PG_DSN)
        try:
            async def waiting() -> bool:
                return bool(held) and await admin.fetchval("SELECT state = 'active' FROM pg_stat_activity WHERE pid = $1", held[0]) is True

            await eventually(waiting, True)
            await admin.execute("SELECT pg_terminate_backend($1)", held[0])  # as a server restart would
        finally:
            await admin.close()
        status, body = await request
        assert (status, body["code"]) == (503, "STORE_UNAVAILABLE") and "Try again" in body["message"], body
        status, body = await cluster.get("CH", f"/v1/permits/CH/{permit_ch_fr.number}")
        assert status == 200 and body["status"] == "VALID", body
