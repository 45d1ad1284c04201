"""``epix serve --workers N``: several processes behind one port, on one store, as real processes
on 127.0.0.1 (gateway/workers.py)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import time
from collections import Counter

import aiohttp
import pytest
from aiohttp import web

from adapters.permit_json import permit_to_json
from simulators.network import build_network, free_port
from simulators.samples import make_permit
from tests.e2e.conftest import STORES, party_stores
from tests.e2e.processes import Gateway

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


class Pair:
    def __init__(self, net, http: aiohttp.ClientSession, workers: int) -> None:
        self.net, self.http = net, http
        self.gateways = {p: Gateway(net[p], workers=workers) for p in ("CH", "FR")}
        self.accepted: list[str] = []

    def auth(self, party: str, *, operator: bool = False) -> dict[str, str]:
        node = self.net[party]
        return {"Authorization": f"Bearer {node.operator_token if operator else node.ma_token}"}

    async def submit(self, numbers: list[str]) -> None:
        async def one(number: str) -> None:
            permit = make_permit(random.Random(number), issuer="CH", importer_country="FR", number=number)
            headers = {**self.auth("CH"), "Content-Type": "application/json", "Idempotency-Key": number}
            for _ in range(50):  # a connection the killed worker held is refused; the client tries again
                try:
                    async with aiohttp.ClientSession() as fresh:  # a new connection: either worker may take it
                        async with fresh.post(f"{self.net['CH'].url}/v1/permits", data=permit_to_json(permit), headers=headers) as r:
                            assert r.status in (201, 202), await r.text()
                            self.accepted.append(number)
                            return
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            raise AssertionError(f"{number} was never accepted")

        await asyncio.gather(*(one(n) for n in numbers))

    async def messages(self, party: str, **query) -> list[dict]:
        params = {"limit": "1000", **query}
        async with self.http.get(f"{self.net[party].url}/v1/messages", params=params, headers=self.auth(party, operator=True)) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["messages"]

    async def wait_acknowledged(self, at_least: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(await self.messages("CH", status="ACKNOWLEDGED", direction="outbound")) < at_least:
            assert time.monotonic() < deadline, f"not {at_least} acknowledged; CH log: {self.gateways['CH'].log_tail()}"
            await asyncio.sleep(0.1)

    async def metric(self, party: str, name: str) -> float:
        """``name`` summed over its labels, from a worker taken by a new connection."""
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
            async with fresh.get(f"{self.net[party].url}/metrics") as r:
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
        pair = Pair(net, http, workers=2)
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

    await pair.submit([f"CH26-{i:06d}" for i in range(60)])
    await pair.wait_acknowledged(5)
    os.kill(before[0], signal.SIGKILL)  # mid-run; its supervisor starts it again
    await pair.submit([f"CH26-{i:06d}" for i in range(60, 80)])
    await pair.wait_acknowledged(len(pair.accepted))

    received = Counter(m["number"] for m in await pair.messages("FR", direction="inbound"))
    assert sorted(received) == sorted(pair.accepted), "lost or unexpected permits at the receiver"
    assert {n: c for n, c in received.items() if c != 1} == {}, "permits stored twice at the receiver"
    after = await ch.worker_pids()
    assert after[0] != before[0] and after[1] == before[1], (before, after)
    # Whichever worker answers, /metrics counts what every worker did, the killed one included.
    for _ in range(4):
        assert await pair.metric("CH", "epix_permits_submitted_total") == len(pair.accepted)
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
