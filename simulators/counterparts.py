"""Counterpart parties for the demo and the tests (``epix simulate ma|customs``).

* ``PartnerMA`` — a Management Authority's permit system as an HTTP endpoint the gateway pushes
  to (webhook): it accepts, refuses a share of what it gets (422), answers slowly when told to,
  and goes down and comes back on command (in-process or ``POST /_sim/down`` / ``/_sim/up``).
* ``CustomsStub`` — a customs single window that consumes what is delivered to its country: it
  reads the gateway's inbox with its bearer token and acknowledges each message once.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web


@dataclass
class PartnerMA:
    host: str = "127.0.0.1"
    port: int = 0
    reject_share: float = 0.0  # fraction of deliveries refused with 422
    delay_s: float = 0.0  # answer this slowly
    seed: int = 0
    accepted: list[bytes] = field(default_factory=list)
    refused: list[bytes] = field(default_factory=list)
    down_count: int = 0  # requests that found it down (503)
    _down: bool = False
    _rng: random.Random = field(init=False)
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def down(self) -> None:
        self._down = True

    def up(self) -> None:
        self._down = False

    async def start(self) -> "PartnerMA":
        app = web.Application()
        app.router.add_post("/_sim/down", self._cmd_down)
        app.router.add_post("/_sim/up", self._cmd_up)
        app.router.add_get("/_sim/stats", self._stats)
        app.router.add_post("/{tail:.*}", self._receive)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self._down:
            # A system that is down answers like a gateway in front of it would: try again later.
            self.down_count += 1
            return web.Response(status=503, text="partner MA simulator: down")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self._rng.random() < self.reject_share:
            self.refused.append(body)
            return web.json_response({"accepted": False, "reason": "refused by the simulated MA"}, status=422)
        self.accepted.append(body)
        return web.json_response({"accepted": True})

    async def _cmd_down(self, request: web.Request) -> web.Response:
        self.down()
        return web.json_response({"down": True})

    async def _cmd_up(self, request: web.Request) -> web.Response:
        self.up()
        return web.json_response({"down": False})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"accepted": len(self.accepted), "refused": len(self.refused), "down": self._down, "found_down": self.down_count}
        )


@dataclass
class CustomsStub:
    gateway_url: str
    token: str
    consumed: list[dict] = field(default_factory=list)

    async def consume_once(self, http: aiohttp.ClientSession) -> int:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with http.get(f"{self.gateway_url}/v1/inbox", headers=headers) as resp:
            resp.raise_for_status()
            items = (await resp.json())["messages"]
        for item in items:
            async with http.post(f"{self.gateway_url}/v1/inbox/{item['message_id']}/ack", headers=headers) as resp:
                resp.raise_for_status()
            self.consumed.append(item)
        return len(items)

    async def run(self, http: aiohttp.ClientSession, *, interval_s: float = 0.5) -> None:
        while True:
            try:
                await self.consume_once(http)
            except (aiohttp.ClientError, OSError):
                pass  # the gateway is away; the messages wait in its inbox
            await asyncio.sleep(interval_s)
