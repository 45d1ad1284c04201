"""Gateways as real ``epix serve`` processes (the crash and worker tests)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

from adapters.permit_json import permit_to_json
from simulators.network import Network, Node
from simulators.samples import make_permit

EPIX = str(Path(sys.executable).with_name("epix"))


class Gateway:
    """One ``epix serve`` process (with ``workers`` > 1: the supervisor of that many)."""

    def __init__(self, node: Node, *, workers: int = 1) -> None:
        self.node = node
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def command(self) -> list[str]:
        command = [EPIX, "serve", "--config", str(self.node.config_path), "--log-level", "WARNING"]
        return command + (["--workers", str(self.workers)] if self.workers > 1 else [])

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.starts += 1
        with open(self.node.dir / f"serve-{self.starts}.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.node.party} exited: {self.log_tail()}"
            try:
                async with http.get(f"{self.node.url}/readyz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{self.node.party} did not become ready: {self.log_tail()}")
        if self.workers > 1:
            await self.worker_pids(deadline)

    async def worker_pids(self, deadline: float | None = None) -> dict[int, int]:
        """Each worker's pid by its index, asked over new connections until every one answered."""
        deadline = deadline or time.monotonic() + 30
        seen: dict[int, int] = {}
        while len(seen) < self.workers:
            assert time.monotonic() < deadline, f"only workers {sorted(seen)} answered: {self.log_tail()}"
            try:
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
                    async with fresh.get(f"{self.node.url}/healthz") as resp:
                        body = await resp.json()
                        seen[body["worker"]] = body["pid"]
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        return seen

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self) -> str:
        logs = sorted(self.node.dir.glob("serve-*.log"))
        return logs[-1].read_text(errors="replace")[-3000:] if logs else ""


class Run:
    """CH sending to FR, both ``epix serve`` processes (``workers`` each), and what CH accepted."""

    def __init__(self, net: Network, http: aiohttp.ClientSession, *, workers: int = 1) -> None:
        self.net = net
        self.http = http
        self.gateways = {party: Gateway(net[party], workers=workers) for party in ("CH", "FR")}
        self.accepted: list[str] = []  # permit numbers CH accepted (201/202)

    def auth(self, party: str, *, operator: bool = False) -> dict[str, str]:
        node = self.net[party]
        return {"Authorization": f"Bearer {node.operator_token if operator else node.ma_token}"}

    async def submit(self, numbers: list[str]) -> None:
        async def one(number: str) -> None:
            permit = make_permit(random.Random(number), issuer="CH", importer_country="FR", number=number)
            headers = {**self.auth("CH"), "Content-Type": "application/json", "Idempotency-Key": number}
            for _ in range(50):  # as a client would: a connection a killed process held is tried again
                try:
                    async with self.http.post(f"{self.net['CH'].url}/v1/permits", data=permit_to_json(permit), headers=headers) as r:
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

    async def acknowledged(self) -> int:
        return len(await self.messages("CH", status="ACKNOWLEDGED", direction="outbound"))

    async def wait_all_acknowledged(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while (done := await self.acknowledged()) < len(self.accepted):
            assert time.monotonic() < deadline, (
                f"{done} of {len(self.accepted)} acknowledged; CH log: {self.gateways['CH'].log_tail()}"
            )
            await asyncio.sleep(0.2)

    async def wait_some_acknowledged(self, at_least: int = 5) -> int:
        deadline = time.monotonic() + 30
        while (done := await self.acknowledged()) < at_least:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        return done

    async def received_at_fr(self) -> Counter:
        inbound = await self.messages("FR", direction="inbound")
        return Counter(m["number"] for m in inbound)


def numbers(start: int, count: int) -> list[str]:
    return [f"CH26-{i:06d}" for i in range(start, start + count)]


async def assert_exactly_once(run: Run) -> None:
    await run.wait_all_acknowledged()
    received = await run.received_at_fr()
    assert sorted(received) == sorted(run.accepted), "lost or unexpected permits at the receiver"
    assert {n: c for n, c in received.items() if c != 1} == {}, "permits stored twice at the receiver"
