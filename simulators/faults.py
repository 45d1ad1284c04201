"""A fault-injecting HTTP proxy to put between gateways (``epix simulate proxy``).

It forwards every request to one target and, while faults are queued, spoils the next requests
one fault each, in order:

* ``drop``      — close the connection without forwarding or answering;
* ``delay``     — wait ``delay_s`` before forwarding (longer than the sender's timeout: a lost answer);
* ``5xx``       — answer 503 without forwarding;
* ``truncate``  — forward, then return only the first half of the answer (the effect happened, the
  receipt is unreadable);
* ``duplicate`` — forward the same request twice and return the second answer;
* ``reorder``   — hold the request until the next one has been forwarded (or ``delay_s`` passed).

Faults are queued with ``inject(mode, times)`` in-process or ``POST /_proxy/faults`` with
``{"mode": "drop", "times": 2}``; ``GET /_proxy/stats`` counts what was done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from yarl import URL

MODES = ("drop", "delay", "5xx", "truncate", "duplicate", "reorder")
CONTROL = "/_proxy/"
_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@dataclass
class _Held:
    released: asyncio.Event


class FaultProxy:
    def __init__(self, target: str, *, host: str = "127.0.0.1", port: int = 0, delay_s: float = 2.0) -> None:
        self.target = target.rstrip("/")
        self.host = host
        self.port = port
        self.delay_s = delay_s
        self.faults: deque[str] = deque()
        self.stats: Counter[str] = Counter()
        self._held: list[_Held] = []
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def inject(self, mode: str, times: int = 1) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown fault {mode!r}; faults are {', '.join(MODES)}")
        self.faults.extend([mode] * times)

    def clear(self) -> None:
        self.faults.clear()

    async def start(self) -> "FaultProxy":
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(CONTROL + "faults", self._control)
        app.router.add_get(CONTROL + "stats", self._stats)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # the OS picked it
        return self

    async def stop(self) -> None:
        for held in self._held:
            held.released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _control(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            self.inject(str(body["mode"]), int(body.get("times", 1)))
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc), "modes": list(MODES)}, status=400)
        return web.json_response({"queued": list(self.faults)})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"done": dict(self.stats), "queued": list(self.faults)})

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        # The path and query exactly as they came: the decoded ones would turn a permit number's
        # %2F into a new path segment and a "+" in the query into a space.
        url = URL(self.target + request.rel_url.raw_path_qs, encoded=True)
        async with self._http.request(request.method, url, data=body, headers=headers) as resp:
            answer = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS}
            return resp.status, answer, out

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self.faults.popleft() if self.faults else None
        self.stats[fault or "passed"] += 1
        # Whatever arrives releases a request held back for reordering: it now goes after this one.
        waiting, self._held = self._held, []
        try:
            if fault == "drop":
                request.transport.close() if request.transport else None
                raise asyncio.CancelledError  # aiohttp drops the half-open exchange quietly
            if fault == "5xx":
                return web.Response(status=503, text="fault proxy: injected 503")
            if fault == "delay":
                await asyncio.sleep(self.delay_s)
            if fault == "reorder":
                held = _Held(asyncio.Event())
                self._held.append(held)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(held.released.wait(), self.delay_s)
            try:
                status, answer, headers = await self._forward(request, body)
                if fault == "duplicate":
                    status, answer, headers = await self._forward(request, body)
            except (aiohttp.ClientError, OSError):
                return web.Response(status=502, text="fault proxy: target unreachable")
            if fault == "truncate":
                answer = answer[: len(answer) // 2]
            return web.Response(status=status, body=answer, headers=headers)
        finally:
            for held in waiting:
                held.released.set()


async def serve(target: str, *, host: str, port: int, faults: list[tuple[str, int]], delay_s: float) -> None:
    """``epix simulate proxy``: run until interrupted."""
    proxy = FaultProxy(target, host=host, port=port, delay_s=delay_s)
    for mode, times in faults:
        proxy.inject(mode, times)
    await proxy.start()
    print(f"fault proxy {proxy.url} -> {proxy.target}; queued: {list(proxy.faults) or 'none'}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.stop()
