"""The local API's authorisation, seen from the principals it must keep apart: a token reaches
nothing outside its role and country scope, through any route."""

from __future__ import annotations

import random

from domain.messages import MessageStatus
from simulators.network import build_network
from simulators.samples import make_permit
from tests.e2e.conftest import Cluster
from tests.hostile.http import send
from tests.hostile.test_local_api_inputs import CUSTOMS, OFFICE, TOKENS


async def test_customs_tokens_cannot_read_permits_through_the_ma_permit_view(tmp_path):
    """FR received CH's replacement because it received the original, but the replacement goes to
    KE: FR customs' verification says NOT_ADDRESSED_TO_YOU and nothing about it (and audits the
    question). The MA view of the same permit, with its content, deliveries and signed XML, must
    not answer the same token either: customs reads permits through the verification only."""
    parties = ("CH", "FR", "KE")
    net = build_network(tmp_path / "net", parties, extra_for={"FR": TOKENS})
    async with Cluster(net).running(parties) as c:
        rng = random.Random(11)
        original = make_permit(rng, issuer="CH", importer_country="FR", number="CH26-000801")
        status, body = await c.submit(original)
        assert status == 202, body
        await c.wait_status("CH", body["messages"][0]["message_id"], {MessageStatus.ACKNOWLEDGED})
        replacement = make_permit(rng, issuer="CH", importer_country="KE", number="CH26-000802", replaces="CH26-000801")
        status, body = await c.submit(replacement)
        assert status == 202, body
        assert {m["receiver"] for m in body["messages"]} == {"FR", "KE"}
        for m in body["messages"]:
            await c.wait_status("CH", m["message_id"], {MessageStatus.ACKNOWLEDGED})
        assert await c.store("FR").get_permit_versions("CH", "CH26-000802")

        status, verdict = await send(c.url("FR"), "GET", "/v1/verifications/CH/CH26-000802", headers=CUSTOMS)
        assert status == 200 and verdict["verdict"] == "NOT_ADDRESSED_TO_YOU" and verdict["permit"] is None

        for headers in (CUSTOMS, OFFICE):
            for target in ("/v1/permits/CH/CH26-000802", "/v1/permits/CH/CH26-000802/xml", "/v1/permits/CH/CH26-000801"):
                status, answer = await send(c.url("FR"), "GET", target, headers=headers)
                assert status == 403 and isinstance(answer, dict), (target, status, answer)
                assert answer["code"] == "FORBIDDEN" and "needs ma or operator" in answer["message"], (target, answer)
        # The MA and the operator still read it.
        for operator in (False, True):
            status, view = await send(c.url("FR"), "GET", "/v1/permits/CH/CH26-000802", headers=c.headers("FR", operator=operator))
            assert status == 200 and view["permit"]["number"] == "CH26-000802"
