"""The partner-facing exchange held to docs/PROTOCOL.md where a partner implementing it from the
document, or one that misbehaves, would otherwise be misled: messages arriving out of order, the
same content under a new message id, a message id another party used."""

from __future__ import annotations

import hashlib
import io
import random
import uuid
from datetime import datetime, timezone

import pytest

from adapters.cites_write import permit_to_xml
from adapters.exchange_xml import (
    Cancellation,
    EndorsementNotice,
    build_cancellation,
    build_endorsement,
    build_envelope,
    read_error,
    read_receipt,
)
from domain.messages import Action, Direction, EnvelopeHeader, MessageStatus
from domain.model import EndorsedLine, Endorsement
from gateway.outbound import conversation_id
from simulators.samples import make_permit
from tests.e2e.conftest import STORES, running_cluster


@pytest.fixture(params=STORES)
async def cluster(request, tmp_path):
    async with running_cluster(request.param, tmp_path) as c:
        yield c


def _envelope(c, payload: bytes, *, number: str, action: Action = Action.ISSUE, sender: str = "CH", message_id=None):
    header = EnvelopeHeader(
        message_id=message_id or str(uuid.uuid4()),
        conversation_id=conversation_id("CH", number),
        sender=sender,
        receiver="FR",
        document_type="CITESEPermit",
        document_number=number,
        document_issuer="CH",
        document_version=1,
        action=action,
        created_at=datetime.now(timezone.utc),
    )
    return header, c.security(sender).sign(build_envelope(header, payload, sent_at=datetime.now(timezone.utc)))


async def _post(c, body: bytes):
    async with c.http.post(
        f"{c.url('FR')}/exchange/v1/messages", data=body, headers={"Content-Type": "application/xml"}
    ) as resp:
        return resp.status, await resp.read()


def _permit(n: int, **kw):
    return make_permit(random.Random(n), issuer="CH", importer_country="FR", number=f"CH26-9{n:05d}", **kw)


async def _status(c, number: str) -> str:
    [version] = [v for v in await c.store("FR").get_permit_versions("CH", number) if v.direction is Direction.INBOUND]
    return version.status


async def test_a_cancellation_that_overtakes_its_permit_still_cancels_it(cluster):
    # The issue waited for a retry while the cancellation went through first (each message has
    # its own retry clock): the receiver must not end up holding the cancelled permit as VALID.
    c = cluster
    permit = _permit(1)
    notice = c.security("CH").sign(
        build_cancellation(Cancellation("CH", permit.number, 1, "issued in error", datetime.now(timezone.utc)))
    )
    _, cancel = _envelope(c, notice, number=permit.number, action=Action.CANCEL)
    assert (await _post(c, cancel))[0] == 200
    _, issue = _envelope(c, c.security("CH").sign(permit_to_xml(permit)), number=permit.number)
    assert (await _post(c, issue))[0] == 200
    assert await _status(c, permit.number) == "CANCELLED"


async def test_a_replacement_that_overtakes_the_permit_it_replaces_still_replaces_it(cluster):
    c = cluster
    original = _permit(2)
    replacement = _permit(3, replaces=original.number)
    _, new = _envelope(c, c.security("CH").sign(permit_to_xml(replacement)), number=replacement.number, action=Action.REPLACE)
    assert (await _post(c, new))[0] == 200
    _, old = _envelope(c, c.security("CH").sign(permit_to_xml(original)), number=original.number)
    assert (await _post(c, old))[0] == 200
    assert await _status(c, original.number) == "REPLACED"
    [held] = [v for v in await c.store("FR").get_permit_versions("CH", original.number) if v.direction is Direction.INBOUND]
    assert held.replaced_by == replacement.number


def _receipt(c, body: bytes):
    return read_receipt(c.security("CH").verify(body, "FR").signed_root)


@pytest.mark.parametrize("action", [Action.ISSUE, Action.CANCEL])
async def test_the_same_content_under_a_new_message_id_gets_a_receipt_for_that_id(cluster, action):
    # A partner resends what it sent before under a new message id (PROTOCOL.md §2 step 7 has it
    # issue again "under a new message"). The receiver takes nothing in twice, but the receipt
    # must name the message it answers: a sender accepts only a receipt naming its MessageId and
    # PayloadDigest, and a receipt for the earlier message would have it retry until parked.
    c = cluster
    permit = _permit(4)
    if action is Action.CANCEL:
        _, issue = _envelope(c, c.security("CH").sign(permit_to_xml(permit)), number=permit.number)
        assert (await _post(c, issue))[0] == 200
        payload = c.security("CH").sign(
            build_cancellation(Cancellation("CH", permit.number, 1, "issued in error", datetime.now(timezone.utc)))
        )
    else:
        payload = c.security("CH").sign(permit_to_xml(permit))
    first, body1 = _envelope(c, payload, number=permit.number, action=action)
    second, body2 = _envelope(c, payload, number=permit.number, action=action)
    status1, answer1 = await _post(c, body1)
    status2, answer2 = await _post(c, body2)
    assert status1 == status2 == 200
    assert _receipt(c, answer1).message_id == first.message_id
    receipt = _receipt(c, answer2)
    assert (receipt.message_id, receipt.payload_digest) == (second.message_id, "sha256:" + hashlib.sha256(payload).hexdigest())
    # Still one effect.
    assert len(await c.store("FR").get_permit_versions("CH", permit.number)) == 1
    inbound = [m for m in await c.store("FR").messages_for_permit("CH", permit.number) if m.action is action]
    assert [m.message_id for m in inbound] == [first.message_id]
    # The new id keeps its receipt: sent again, or tracked, it answers with the very same bytes.
    assert await _post(c, body2) == (200, answer2)
    async with c.http.get(f"{c.url('FR')}/exchange/v1/messages/{second.message_id}") as resp:
        assert (resp.status, await resp.read()) == (200, answer2)
    # Other content under that id is refused, and changes nothing.
    other = _permit(5)
    _, body3 = _envelope(c, c.security("CH").sign(permit_to_xml(other)), number=other.number, message_id=second.message_id)
    status3, answer3 = await _post(c, body3)
    assert (status3, _error(c, "FR", answer3).code) == (409, "CONFLICT")
    assert await c.store("FR").get_permit_versions("CH", other.number) == []
    assert await _post(c, body2) == (200, answer2)


def _error(c, party: str, body: bytes, *, reader: str = "CH"):
    return read_error(c.security(reader).verify(body, party).signed_root)


async def test_a_cancellation_for_another_version_than_its_envelope_names_is_refused(cluster):
    c = cluster
    permit = _permit(7)
    _, issue = _envelope(c, c.security("CH").sign(permit_to_xml(permit)), number=permit.number)
    assert (await _post(c, issue))[0] == 200
    notice = c.security("CH").sign(build_cancellation(Cancellation("CH", permit.number, 2, "in error", datetime.now(timezone.utc))))
    _, body = _envelope(c, notice, number=permit.number, action=Action.CANCEL)  # the envelope says version 1
    status, answer = await _post(c, body)
    error = _error(c, "FR", answer)
    assert (status, error.code) == (422, "ENVELOPE_INVALID") and "version 1" in error.message and "version 2" in error.message
    assert await _status(c, permit.number) == "VALID"


async def test_a_message_id_another_sender_used_is_a_conflict_not_its_receipt(cluster):
    # KE copies CH's message (same id, same issuer-signed payload) under its own hop signature:
    # that is not CH's message again, and KE must not be handed CH's receipt as if its own
    # message had been stored.
    c = cluster
    payload = c.security("CH").sign(permit_to_xml(_permit(5)))
    first, body = _envelope(c, payload, number=_permit(5).number)
    assert (await _post(c, body))[0] == 200
    _, copy = _envelope(c, payload, number=first.document_number, sender="KE", message_id=first.message_id)
    status, answer = await _post(c, copy)
    assert (status, _error(c, "FR", answer).code) == (409, "CONFLICT")
    [held] = [m for m in await c.store("FR").messages_for_permit("CH", first.document_number)]
    assert (held.message_id, held.sender) == (first.message_id, "CH")


async def test_a_message_id_of_one_of_our_own_messages_is_a_conflict_not_a_silent_200(cluster):
    # FR sends CH a message under the id of CH's own message to FR (a partner with its own id
    # scheme, or a hostile one). Answering 200 would tell FR its message was stored while nothing
    # was: the id is taken, which is CONFLICT.
    c = cluster
    status, submitted = await c.submit(_permit(6))
    assert status == 202, submitted
    [ours] = submitted["messages"]
    fr_permit = make_permit(random.Random(6), issuer="FR", importer_country="CH", number="FR26-000006")
    header = EnvelopeHeader(
        message_id=ours["message_id"], conversation_id=conversation_id("FR", fr_permit.number), sender="FR",
        receiver="CH", document_type="CITESEPermit", document_number=fr_permit.number, document_issuer="FR",
        document_version=1, action=Action.ISSUE, created_at=datetime.now(timezone.utc),
    )  # fmt: skip
    payload = c.security("FR").sign(permit_to_xml(fr_permit))
    body = c.security("FR").sign(build_envelope(header, payload, sent_at=datetime.now(timezone.utc)))
    async with c.http.post(f"{c.url('CH')}/exchange/v1/messages", data=body, headers={"Content-Type": "application/xml"}) as resp:
        status, answer = resp.status, await resp.read()
    assert status == 409, answer
    assert _error(c, "CH", answer, reader="FR").code == "CONFLICT"
    assert await c.store("CH").get_permit_versions("FR", fr_permit.number) == []
    assert (await c.store("CH").get_message(ours["message_id"])).direction is Direction.OUTBOUND


# --- through a hub ------------------------------------------------------------------------------

from tests.e2e.test_hub import _wait, hubnet  # noqa: E402,F401  (the hub network fixture)


async def test_a_hub_relays_an_endorsement_signed_by_its_endorser(hubnet):
    # PROTOCOL.md §2: an endorsement is signed by the endorsing country's gateway, not by the
    # issuer. A hub checking every payload against DocumentIssuer refused each one a member sent
    # back to an issuer through it.
    c = hubnet
    permit = make_permit(random.Random(8), issuer="CH", importer_country="KE", number="CH26-KE0008")
    status, submitted = await c.submit(permit)
    assert status == 202, submitted
    [sent] = submitted["messages"]
    await c.wait_status("CH", sent["message_id"], {MessageStatus.ACKNOWLEDGED})
    item = permit.items[0]
    notice = EndorsementNotice(
        issuer="CH", number=permit.number, version=1, endorsed_by="KE", declaration="KE-DEC-1",
        endorsement=Endorsement(datetime.now(timezone.utc), "KEMBA", (EndorsedLine(item.id, item.quantity, item.unit),)),
    )  # fmt: skip
    payload = c.security("KE").sign(build_endorsement(notice))
    header = EnvelopeHeader(
        message_id=str(uuid.uuid4()), conversation_id=conversation_id("CH", permit.number), sender="KE", receiver="CH",
        document_type="CITESEPermit", document_number=permit.number, document_issuer="CH", document_version=1,
        action=Action.ENDORSE, created_at=datetime.now(timezone.utc),
    )  # fmt: skip
    body = c.security("KE").sign(build_envelope(header, payload, sent_at=datetime.now(timezone.utc)))
    async with c.http.post(f"{c.url('HUB')}/exchange/v1/messages", data=body, headers={"Content-Type": "application/xml"}) as resp:
        status, answer = resp.status, await resp.read()
    assert status == 200, answer
    assert read_receipt(c.security("KE").verify(answer, "HUB").signed_root).status == "PendingDelivery"
    # Pushed on to CH, which records it as the issuer.
    relayed = await c.wait_status("HUB", header.message_id, {MessageStatus.ACKNOWLEDGED, MessageStatus.REJECTED})
    assert relayed.status is MessageStatus.ACKNOWLEDGED, relayed.last_error_detail
    held = await c.store("CH").get_message(header.message_id)
    assert held is not None and held.action is Action.ENDORSE


# --- oversized bodies -----------------------------------------------------------------------------


async def _chunks(size: int):
    chunk = b"<ex:Envelope xmlns:ex='urn:epix-gateway:exchange:1'>" + b" " * (64 * 1024)
    sent = 0
    while sent < size:
        yield chunk
        sent += len(chunk)


@pytest.mark.parametrize("path", ["/exchange/v1/messages", "/exchange/v1/hub/pull", "/exchange/v1/hub/ack"])
@pytest.mark.parametrize("chunked", [True, False])
async def test_an_oversized_body_gets_a_signed_xml_too_large_however_it_is_sent(cluster, path, chunked):
    # PROTOCOL.md §2 and §6: refusals are signed error signals (413 for too large), whether the
    # body announces its length or comes chunked without one.
    c = cluster
    size = 3 * 1024 * 1024  # over the default max_body_bytes (2 MiB)
    data = _chunks(size) if chunked else io.BytesIO(b" " * size)
    async with c.http.post(f"{c.url('FR')}{path}", data=data, headers={"Content-Type": "application/xml"}) as resp:
        status, answer = resp.status, await resp.read()
    assert status == 413, answer[:200]
    assert _error(c, "FR", answer).code == "XML_TOO_LARGE"
