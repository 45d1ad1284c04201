"""A hub forwards what it accepts at once: the relay wakes the hub's delivery worker instead of
leaving the envelope for its next poll."""

from __future__ import annotations

import random

import aiohttp

from domain.messages import MessageStatus
from simulators.network import build_network
from simulators.samples import make_permit
from tests.e2e.conftest import Cluster

SLOW_POLL = "\n[delivery]\npoll_s = 60.0\n"  # far beyond the waits below: only a wake-up can be in time


async def test_the_hub_pushes_a_relayed_envelope_without_waiting_for_its_poll(tmp_path):
    net = build_network(tmp_path / "net", ("CH", "FR"), hub="HUB", via={"FR": "HUB"}, extra=SLOW_POLL)
    c = Cluster(net)
    for party in ("FR", "HUB", "CH"):
        await c.start(party)
    c.http = aiohttp.ClientSession()
    try:
        for n in range(3):  # every one, not just the first after start-up
            permit = make_permit(random.Random(n), issuer="CH", importer_country="FR", number=f"CH26-W{n:04d}")
            status, body = await c.submit(permit)
            assert status == 202, body
            message_id = body["messages"][0]["message_id"]
            relayed = await c.wait_status("HUB", message_id, {MessageStatus.ACKNOWLEDGED}, timeout=20.0)
            assert relayed.receiver == "FR" and relayed.attempts == 1
            received = await c.store("FR").get_message(message_id)
            assert received is not None and received.status is MessageStatus.RECEIVED
    finally:
        await c.http.close()
        for party in list(c.gateways):
            await c.stop(party)
