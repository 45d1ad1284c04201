"""Every fault of the proxy between two gateways ends in delivery (exactly once at the receiver)
or in a visible parked message an operator can retry. Real sockets on 127.0.0.1."""

from __future__ import annotations

import random

import pytest

from domain.messages import Direction, MessageStatus
from gateway.store import MessageFilter
from simulators.faults import MODES, FaultProxy
from simulators.network import build_network, free_port
from simulators.samples import make_permit
from tests.e2e.conftest import Cluster


@pytest.fixture
async def faulty(tmp_path):
    """CH reaches FR only through a fault proxy."""
    proxy_port = free_port()
    net = build_network(
        tmp_path / "net",
        ("CH", "FR"),
        retry={"max_attempts": 4, "first_delay_s": 0.05, "factor": 2.0, "max_delay_s": 0.3},
        endpoints={"FR": f"http://127.0.0.1:{proxy_port}"},
    )
    c = Cluster(net)
    c.proxy = await FaultProxy(net["FR"].url, port=proxy_port, delay_s=0.4).start()
    try:
        async with c.running(("CH", "FR")):
            yield c
    finally:
        await c.proxy.stop()


async def _send(c: Cluster, n: int) -> str:
    permit = make_permit(random.Random(n), issuer="CH", importer_country="FR", number=f"CH26-F{n:05d}")
    status, body = await c.submit(permit)
    assert status == 202, body
    return body["messages"][0]["message_id"]


async def _held_once_at_fr(c: Cluster, message_id: str) -> None:
    inbound = await c.store("FR").list_messages(MessageFilter(direction=Direction.INBOUND))
    assert [m.message_id for m in inbound].count(message_id) == 1
    sent = await c.store("CH").get_message(message_id)
    assert len([m for m in inbound if m.number == sent.number]) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_each_fault_ends_in_delivery_exactly_once(faulty, mode):
    c = faulty
    c.proxy.inject(mode, times=2)
    first = await _send(c, 1)
    second = await _send(c, 2)  # a second message, so that reordering has something to swap
    for message_id in (first, second):
        done = await c.wait_status("CH", message_id, {MessageStatus.ACKNOWLEDGED}, timeout=20)
        await _held_once_at_fr(c, message_id)
        assert done.receipt is not None
    assert c.proxy.stats[mode] == 2
    attempts = [(await c.store("CH").get_message(m)).attempts for m in (first, second)]
    if mode in ("drop", "5xx", "truncate"):
        assert sum(attempts) >= 3  # at least one message was retried after the fault


async def test_a_fault_that_outlasts_the_retries_parks_the_message_visibly(faulty):
    c = faulty
    c.proxy.inject("5xx", times=100)
    message_id = await _send(c, 3)
    parked = await c.wait_status("CH", message_id, {MessageStatus.SEND_FAILURE}, timeout=20)
    assert parked.attempts == 4 and parked.last_error_code == "PARTNER_UNAVAILABLE"
    status, view = await c.get("CH", f"/v1/messages/{message_id}")
    assert status == 200 and view["status"] == "SEND_FAILURE"
    assert await c.store("FR").get_message(message_id) is None

    c.proxy.clear()
    status, _ = await c.post_json("CH", f"/v1/messages/{message_id}/retry", operator=True)
    assert status in (200, 202)
    await c.wait_status("CH", message_id, {MessageStatus.ACKNOWLEDGED})
    await _held_once_at_fr(c, message_id)


async def test_the_proxy_takes_faults_over_http(faulty):
    c = faulty
    async with c.http.post(c.proxy.url + "/_proxy/faults", json={"mode": "nonsense"}) as resp:
        assert resp.status == 400
    async with c.http.post(c.proxy.url + "/_proxy/faults", json={"mode": "5xx", "times": 1}) as resp:
        assert (await resp.json())["queued"] == ["5xx"]
    message_id = await _send(c, 4)
    done = await c.wait_status("CH", message_id, {MessageStatus.ACKNOWLEDGED})
    assert done.attempts == 2
    async with c.http.get(c.proxy.url + "/_proxy/stats") as resp:
        assert (await resp.json())["done"]["5xx"] == 1
