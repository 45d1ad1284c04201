"""Review of the customs single window, end to end: defects found, each shown by a test that
failed first."""

from __future__ import annotations

from gateway.store.base import MessageFilter
from tests.e2e.conftest import FINAL, customs_permit
from tests.e2e.test_customs import _declaration


async def test_the_issuers_customs_cannot_reverse_or_extend_a_partners_endorsement(customs):
    # FR's customs write off a CH permit; the endorsement is CH's record of what crossed FR's
    # border. CH's own customs may not give it back (it is evidence, and FR's gateway would never
    # hear of it) nor add lines under FR's declaration (FR's reversal would then take them too).
    permit = customs_permit("CH26-300001")
    await customs.deliver(permit)
    status, w = await customs.write_off("FR", "CH", permit.number, _declaration("FR-DEC-E", {"A": "2"}))
    assert status == 201, w
    await customs.wait_status("FR", w["feedback_message_id"], FINAL)
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
