"""Review of the customs single window, end to end: defects found, each shown by a test that
failed first."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

from adapters.exchange_xml import EndorsementNotice, build_endorsement, build_envelope
from domain.messages import Action, EnvelopeHeader
from domain.model import EndorsedLine, Endorsement
from gateway.outbound import conversation_id
from gateway.store.base import MessageFilter
from tests.e2e.conftest import FINAL, customs_permit
from tests.e2e.test_customs import _declaration


async def _written_off_at_fr(customs, number: str, declaration: str, quantity: str):
    """CH's permit delivered to FR, line A written off by FR's customs, the endorsement at CH."""
    permit = customs_permit(number)
    await customs.deliver(permit)
    status, w = await customs.write_off("FR", "CH", permit.number, _declaration(declaration, {"A": quantity}))
    assert status == 201, w
    await customs.wait_status("FR", w["feedback_message_id"], FINAL)
    return permit


async def test_the_issuers_customs_cannot_reverse_or_extend_a_partners_endorsement(customs):
    # FR's customs write off a CH permit; the endorsement is CH's record of what crossed FR's
    # border. CH's own customs may not give it back (it is evidence, and FR's gateway would never
    # hear of it) nor add lines under FR's declaration (FR's reversal would then take them too).
    permit = await _written_off_at_fr(customs, "CH26-300001", "FR-DEC-E", "2")
    path = f"/v1/permits/CH/{permit.number}"
    _, before = await customs.call("CH", "GET", path + "/quantities", token="ch-customs")
    assert before["lines"][0]["actual"] == "2" and before["write_offs"][0]["origin"] == "endorsement"
    messages = [m.message_id for m in await customs.store("CH").list_messages(MessageFilter())]

    status, err = await customs.call("CH", "POST", path + "/write-offs/FR-DEC-E/reversal", token="ch-customs", body={"reason": "x"})
    assert status == 409 and err["code"] == "CONFLICT" and "endorsement" in err["message"], err
    status, err = await customs.write_off("CH", "CH", permit.number, _declaration("FR-DEC-E", {"B": "1"}), token="ch-customs")
    assert status == 409 and err["code"] == "CONFLICT" and "endorsement" in err["message"], err

    assert (await customs.call("CH", "GET", path + "/quantities", token="ch-customs"))[1] == before
    assert [m.message_id for m in await customs.store("CH").list_messages(MessageFilter())] == messages


async def test_a_soap_lookup_of_a_number_no_permit_can_have_is_refused_and_not_audited(customs):
    # As on /v1/verifications: a number or issuer no permit can have is NOT_FOUND with the reason,
    # and is not appended to the audit history (which is kept forever and never changed).
    from adapters.ns import SOAP11
    from adapters.xmlparse import parse_xml
    from tests.e2e.test_soap import _get, _post

    for issuer, number, words in (("CH", "X" * 100_000, "at most 64"), ("ZZZ", "CH26-1", "ISO 3166-1")):
        status, xml = await _post(customs, _get("GetNonFinalCitesCertificate", number, issuer))
        fault = parse_xml(xml).getroot().find(f".//{{{SOAP11}}}Fault")
        assert status == 500 and fault.findtext("detail/code") == "NOT_FOUND", xml[:500]
        assert words in fault.findtext("faultstring") and len(xml) < 2000, xml[:500]
        assert await customs.store("FR").list_verifications(issuer, number) == []


async def _endorse_as(customs, party: str, permit, declaration: str, *, lines=(), reversal: bool = False):
    """An endorsement of CH's ``permit`` made and signed by ``party``'s gateway, sent to CH."""
    security, now = customs.security(party), datetime.now(timezone.utc)
    notice = EndorsementNotice(
        issuer="CH", number=permit.number, version=1, endorsed_by=party, declaration=declaration, office="XX1",
        reversal=reversal, endorsement=Endorsement(date=now, port="Mombasa", lines=tuple(lines)),
    )  # fmt: skip
    header = EnvelopeHeader(
        message_id=str(uuid.uuid4()), conversation_id=conversation_id("CH", permit.number), sender=party, receiver="CH",
        document_type="CITESEPermit", document_number=permit.number, document_issuer="CH", document_version=1,
        action=Action.ENDORSE, created_at=now,
    )  # fmt: skip
    body = security.sign(build_envelope(header, security.sign(build_endorsement(notice)), sent_at=now))
    url, headers = f"{customs.url('CH')}/exchange/v1/messages", {"Content-Type": "application/xml"}
    async with customs.http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.read()


async def test_only_the_exporting_or_importing_country_endorses_a_permit(customs):
    # CH's permit goes to FR. KE's gateway is a pinned partner of CH, but KE's customs never saw
    # the goods: its endorsement would write actual quantities on CH's record, and its reversal
    # would give back what FR's customs reported under FR's declaration reference.
    permit = await _written_off_at_fr(customs, "CH26-300003", "FR-DEC-K", "3")
    path = f"/v1/permits/CH/{permit.number}/quantities"
    _, before = await customs.call("CH", "GET", path, token="ch-customs")
    assert before["lines"][0]["actual"] == "3"

    status, answer = await _endorse_as(customs, "KE", permit, "KE-DEC-1", lines=[EndorsedLine("B", Decimal(5), "NAR")])
    assert status == 403 and b"FORBIDDEN" in answer, answer
    status, answer = await _endorse_as(customs, "KE", permit, "FR-DEC-K", reversal=True)
    assert status == 403 and b"FORBIDDEN" in answer, answer
    assert (await customs.call("CH", "GET", path, token="ch-customs"))[1] == before


async def test_the_audit_history_of_a_permit_for_another_border_is_refused(customs):
    # KE's customs verifying a CH->FR permit learn nothing about it (NOT_ADDRESSED_TO_YOU); its
    # audit history would tell them its verdicts (cancelled, used up...), reasons and FR's offices.
    permit = customs_permit("CH26-300004")
    await customs.deliver(permit)
    await customs.verify("FR", "CH", permit.number, token="fr-cdg")
    path = f"/v1/verifications/CH/{permit.number}/history"
    status, err = await customs.call("FR", "GET", path, token="ke-customs")
    assert status == 403 and err["code"] == "FORBIDDEN" and err["message"], err
    status, h = await customs.call("FR", "GET", path, token="fr-customs")
    assert status == 200 and [v["office"] for v in h["verifications"]] == ["FRCDG"]
