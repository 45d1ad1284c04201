"""``epix serve --workers N``: several processes behind one port, on one store, as real processes
on 127.0.0.1 (gateway/workers.py)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter

import aiohttp
import pytest
from aiohttp import web

from simulators.network import build_network, free_port
from tests.e2e.conftest import STORES, party_stores
from tests.e2e.processes import Gateway, Run, assert_exactly_once, numbers

pytestmark = pytest.mark.slow
RETRY = {"max_attempts": 20, "first_delay_s": 0.1, "factor": 2.0, "max_delay_s": 1.0}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _wait_gone(pids, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if _alive(p)]}"
        await asyncio.sleep(0.1)


async def metric(net, party: str, name: str) -> float:
    """``name`` summed over its labels, from whichever worker takes a new connection."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        async with fresh.get(f"{net[party].url}/metrics") as r:
            text = await r.text()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


class Webhook:
    """FR's MA system: counts the permits pushed to it, by message id."""

    def __init__(self) -> None:
        self.port = free_port()
        self.pushed: Counter = Counter()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            self.pushed[request.headers["X-Epix-Message-Id"]] += 1
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture(params=STORES)
async def pair(request, tmp_path):
    hook = Webhook()
    await hook.start()
    async with party_stores(request.param, ("CH", "FR"), "workers") as store_urls:
        net = build_network(
            tmp_path / "net", ("CH", "FR"), store_urls=store_urls, retry=RETRY, extra="\n[delivery]\nlease_s = 5.0\n",
            extra_for={"FR": f'\n[webhook]\nurl = "http://127.0.0.1:{hook.port}/hook"\n'},
        )  # fmt: skip
        http = aiohttp.ClientSession()
        pair = Run(net, http, workers=2)
        pair.webhook = hook
        try:
            for gateway in pair.gateways.values():
                await gateway.start(http)
            yield pair
        finally:
            for gateway in pair.gateways.values():
                gateway.stop()
            await http.close()
            await hook.stop()


async def test_two_workers_deliver_every_permit_once_also_when_one_is_killed(pair):
    ch = pair.gateways["CH"]
    before = await ch.worker_pids()
    assert sorted(before) == [0, 1] and len(set(before.values())) == 2

    await pair.submit(numbers(0, 60))
    await pair.wait_some_acknowledged()
    os.kill(before[0], signal.SIGKILL)  # mid-run; its supervisor starts it again
    await pair.submit(numbers(60, 20))
    await assert_exactly_once(pair)
    after = await ch.worker_pids()
    assert after[0] != before[0] and after[1] == before[1], (before, after)
    # Whichever worker answers, /metrics counts what every worker did, the killed one included.
    for _ in range(4):
        assert await metric(pair.net, "CH", "epix_permits_submitted_total") == len(pair.accepted)
    # FR's MA system hears of each permit once, not once per worker (only worker 0 pushes).
    inbound = {m["message_id"] for m in await pair.messages("FR", direction="inbound")}
    deadline = time.monotonic() + 30
    while set(pair.webhook.pushed) != inbound:
        assert time.monotonic() < deadline, f"{len(pair.webhook.pushed)} of {len(inbound)} pushed"
        await asyncio.sleep(0.1)
    assert set(pair.webhook.pushed.values()) == {1}


async def test_supervisor_stops_its_workers_on_sigterm_and_they_stop_without_it(pair):
    ch = pair.gateways["CH"]
    pids = list((await ch.worker_pids()).values())
    ch.proc.terminate()
    assert ch.proc.wait(30) == 0
    await _wait_gone(pids)

    fr = pair.gateways["FR"]
    pids = list((await fr.worker_pids()).values())
    fr.kill()  # SIGKILL: nobody tells the workers; they notice their supervisor is gone
    await _wait_gone(pids)
    await fr.start(pair.http)  # and the port is free for the next one
    assert len(await fr.worker_pids()) == 2


def test_port_in_use_is_refused_with_its_reason(tmp_path):
    net = build_network(tmp_path / "net", ("CH", "FR"))
    node = net["CH"]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", node.port))
        holder.listen()
        done = subprocess.run(
            Gateway(node, workers=2).command(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"CONFIG_INVALID: cannot listen on 127.0.0.1:{node.port}" in done.stderr
    assert "in use" in done.stderr
