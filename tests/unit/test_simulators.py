"""The counterpart simulators and the fault proxy, each against a tiny real server on 127.0.0.1."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from simulators.counterparts import CustomsStub, PartnerMA
from simulators.faults import FaultProxy


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


async def test_partner_ma_accepts_refuses_a_share_and_goes_down_on_command(http):
    ma = await PartnerMA(reject_share=0.5, seed=7).start()
    try:
        statuses = []
        for i in range(40):
            async with http.post(ma.url + "/permits", data=b"<x/>") as resp:
                statuses.append(resp.status)
        assert set(statuses) == {200, 422}
        assert len(ma.accepted) + len(ma.refused) == 40 and 8 < len(ma.refused) < 32
        async with http.post(ma.url + "/_sim/down") as resp:
            assert resp.status == 200
        async with http.post(ma.url + "/permits", data=b"<x/>") as resp:
            assert resp.status == 503
        ma.up()
        ma.reject_share = 0.0
        async with http.post(ma.url + "/permits", data=b"<x/>") as resp:
            assert resp.status == 200
        assert ma.down_count == 1
    finally:
        await ma.stop()


async def test_customs_stub_consumes_each_delivered_message_once(http):
    inbox = {"m1": {"message_id": "m1"}, "m2": {"message_id": "m2"}}
    acked: list[str] = []

    async def list_inbox(request):
        assert request.headers["Authorization"] == "Bearer secret"
        return web.json_response({"messages": list(inbox.values())})

    async def ack(request):
        acked.append(request.match_info["mid"])
        inbox.pop(request.match_info["mid"], None)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v1/inbox", list_inbox)
    app.router.add_post("/v1/inbox/{mid}/ack", ack)
    runner, url = await _serve(app)
    try:
        stub = CustomsStub(url, "secret")
        assert await stub.consume_once(http) == 2
        assert await stub.consume_once(http) == 0
        assert sorted(acked) == ["m1", "m2"] and len(stub.consumed) == 2
    finally:
        await runner.cleanup()


async def test_fault_proxy_spoils_exactly_the_queued_requests(http):
    seen: list[bytes] = []

    async def echo(request):
        body = await request.read()
        seen.append(body)
        return web.Response(body=b"answer:" + body)

    app = web.Application()
    app.router.add_post("/x", echo)
    runner, url = await _serve(app)
    proxy = await FaultProxy(url).start()
    try:
        for mode in ("5xx", "truncate", "duplicate"):
            proxy.inject(mode)
        with pytest.raises(ValueError):
            proxy.inject("melt")
        async with http.post(proxy.url + "/x", data=b"one") as resp:
            assert resp.status == 503
        async with http.post(proxy.url + "/x", data=b"two") as resp:
            assert await resp.read() == b"answe"  # the first half of b"answer:two"
        async with http.post(proxy.url + "/x", data=b"three") as resp:
            assert await resp.read() == b"answer:three"
        async with http.post(proxy.url + "/x", data=b"four") as resp:
            assert await resp.read() == b"answer:four"
        assert seen == [b"two", b"three", b"three", b"four"]
        proxy.inject("drop")
        with pytest.raises(aiohttp.ClientError):
            async with http.post(proxy.url + "/x", data=b"five") as resp:
                await resp.read()
        assert b"five" not in seen
    finally:
        await proxy.stop()
        await runner.cleanup()


async def test_fault_proxy_forwards_the_path_and_query_as_they_came(http):
    async def echo(request):
        return web.json_response({"raw": request.raw_path, "number": request.match_info["number"], "q": request.query["q"]})

    app = web.Application()
    app.router.add_get("/v1/permits/{issuer}/{number}", echo)
    runner, url = await _serve(app)
    proxy = await FaultProxy(url).start()
    try:
        async with http.get(proxy.url + "/v1/permits/KE/KWS%2FCITES%2F2026%20%239?q=a%2Bb+c") as resp:
            assert await resp.json() == {
                "raw": "/v1/permits/KE/KWS%2FCITES%2F2026%20%239?q=a%2Bb+c", "number": "KWS/CITES/2026 #9", "q": "a+b c",
            }  # fmt: skip
    finally:
        await proxy.stop()
        await runner.cleanup()


def test_simulate_proxy_command_refuses_an_unknown_fault(capsys):
    from gateway.cli import main

    assert main(["simulate", "proxy", "--target", "http://127.0.0.1:1", "--port", "1", "--fault", "melt:2"]) != 0
    assert "unknown fault 'melt'" in capsys.readouterr().err


def test_free_ports_are_below_the_ephemeral_range_and_not_handed_out_twice():
    """A server started after its clients began calling (a gateway restarted, a feed coming up
    later) must not find its port taken by a client's own source port (see free_port)."""
    from simulators.network import _ephemeral_low, free_port

    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(p < _ephemeral_low() for p in ports)
