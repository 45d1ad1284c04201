"""Gateways as real ``epix serve`` processes (the crash and worker tests)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from simulators.network import Node

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
