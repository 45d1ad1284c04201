"""Received permits pushed to the MA system's webhook: signed, retried, then acknowledged."""

from __future__ import annotations

import asyncio
import json
import random
import time

import aiohttp
from aiohttp import web

from adapters.permit_json import permit_to_json
from domain.messages import MessageStatus
from gateway import appkeys
from gateway.webhook import SIGNATURE_HEADER, signature
from simulators.network import GatewayProcess, build_network, free_port
from simulators.samples import make_permit


async def test_webhook_retries_then_delivers_and_acknowledges(tmp_path, monkeypatch):
    monkeypatch.setenv("FR_WEBHOOK_SECRET", "s3cret")
    hook_port = free_port()
    received: list[tuple[dict, str | None, bytes]] = []
    failures_left = 2

    async def hook(request: web.Request) -> web.Response:
        nonlocal failures_left
        body = await request.read()
        if failures_left:
            failures_left -= 1
            return web.Response(status=503)
        received.append((json.loads(body), request.headers.get(SIGNATURE_HEADER), body))
        return web.Response(status=204)

    hook_app = web.Application()
    hook_app.router.add_post("/permits", hook)
    runner = web.AppRunner(hook_app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    net = build_network(tmp_path / "net", ("CH", "FR"), retry={"max_attempts": 3, "first_delay_s": 0.1})
    with net["FR"].config_path.open("a") as f:
        f.write(f'\n[webhook]\nurl = "http://127.0.0.1:{hook_port}/permits"\nmax_attempts = 5\nsecret_env = "FR_WEBHOOK_SECRET"\n')
    gateways = [await GatewayProcess(net[p].config()).start() for p in ("CH", "FR")]
    try:
        permit = make_permit(random.Random(1), issuer="CH", importer_country="FR", number="CH26-HOOK1")
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{net['CH'].url}/v1/permits",
                data=permit_to_json(permit),
                headers={"Authorization": f"Bearer {net['CH'].ma_token}", "Content-Type": "application/json"},
            ) as resp:
                assert resp.status == 202
                message_id = (await resp.json())["messages"][0]["message_id"]
        deadline = time.monotonic() + 20
        store = gateways[1].app[appkeys.STORE]
        while time.monotonic() < deadline:
            m = await store.get_message(message_id)
            if m is not None and m.status is MessageStatus.DELIVERED:
                break
            await asyncio.sleep(0.1)
        assert m is not None and m.status is MessageStatus.DELIVERED
        [(item, sig, raw)] = received
        assert item["message_id"] == message_id and item["permit"]["number"] == "CH26-HOOK1"
        assert sig == signature("s3cret", raw)
        events = await store.message_events(message_id)
        assert [e.status for e in events] == [MessageStatus.RECEIVED, MessageStatus.DELIVERED]
        assert events[-1].actor == "webhook"
        assert await store.inbox("FR") == []
    finally:
        for gw in gateways:
            await gw.stop()
        await runner.cleanup()
