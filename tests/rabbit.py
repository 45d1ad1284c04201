"""RabbitMQ for tests: the real broker (fail when CI=true and it is missing), a unique name prefix per
test so tests never see each other's queues (guest cannot create vhosts), and a TCP proxy whose
connections a test can cut, as a network failure or a dead process would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid

import aio_pika
import pytest

from tests.conftest import IN_CI

AMQP_URL = os.environ.get("EPIX_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def rabbit_unreachable_reason(url: str = AMQP_URL) -> str | None:
    try:
        connection = await aio_pika.connect(url, timeout=3)
    except (OSError, asyncio.TimeoutError, aio_pika.exceptions.AMQPError) as e:
        return f"RabbitMQ at {url} is not reachable ({type(e).__name__}: {e})"
    await connection.close()
    return None


async def require_rabbit() -> None:
    reason = await rabbit_unreachable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason + " and CI=true requires it")
        pytest.skip(reason)


def unique_prefix() -> str:
    return f"epixtest-{uuid.uuid4().hex[:12]}"


async def delete_everything(prefix: str, url: str = AMQP_URL) -> None:
    """Delete the queues and exchanges whose names start with ``prefix``: the test's own."""
    connection = await aio_pika.connect(url, timeout=5)
    try:
        for name in await _names_with(prefix):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
        channel = await connection.channel()
        for party in ("CH", "FR", "KE", "HUB"):
            with contextlib.suppress(Exception):
                await channel.exchange_delete(f"{prefix}.{party}")
    finally:
        await connection.close()


async def _names_with(prefix: str) -> list[str]:
    """Queue names from rabbitmqctl when it is at hand; otherwise the ones tests register."""
    if not os.path.exists("/usr/sbin/rabbitmqctl"):
        return sorted(_REGISTERED.get(prefix, ()))
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_queues", "name", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    names = {line.strip() for line in out.decode().splitlines() if line.strip().startswith(prefix)}
    return sorted(names | _REGISTERED.get(prefix, set()))


_REGISTERED: dict[str, set[str]] = {}


def register(prefix: str, names: list[str]) -> None:
    _REGISTERED.setdefault(prefix, set()).update(names)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the broker. ``cut()`` drops every connection at once (the
    broker sees the client vanish); ``stop()`` also stops listening until ``start()``."""

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5672, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    def url(self, base: str = AMQP_URL) -> str:
        scheme, rest = base.split("://", 1)
        creds, _, path = rest.partition("@")
        _, _, vhost = path.partition("/")
        return f"{scheme}://{creds}@127.0.0.1:{self.port}/{vhost}"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        pumps = [asyncio.create_task(_pump(reader, up_writer)), asyncio.create_task(_pump(up_reader, writer))]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
            self._tasks.discard(task)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    def cut(self) -> int:
        """Drop every open connection; how many there were."""
        writers = list(self._writers)
        for w in writers:
            if w.transport is not None:
                w.transport.abort()
        self._writers.clear()
        return len(writers) // 2

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.cut()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
