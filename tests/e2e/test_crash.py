"""Crash tests with real processes: ``epix serve`` gateways built by ``build_network``.

CH sends permits to FR. Mid-run, CH is killed with SIGKILL (no clean-up of any kind) and started
again; with RabbitMQ, separately, CH's broker connection is cut mid-run; on PostgreSQL, every
connection of both gateways to the database is terminated mid-run. Afterwards every permit
accepted by CH must be held by FR exactly once, and every message must be ACKNOWLEDGED at CH.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import aiohttp
import pytest

from adapters.permit_json import permit_to_json
from simulators.network import build_network
from simulators.samples import make_permit
from tests.e2e.processes import Run, assert_exactly_once, numbers
from tests.rabbit import AMQP_URL, TcpProxy, delete_everything, require_rabbit, unique_prefix

N = 120  # enough that a kill lands while messages are still in flight


@pytest.fixture(params=["embedded", "rabbit"])
async def run(request, tmp_path):
    prefix = unique_prefix()
    proxy = None
    queue_urls = None
    if request.param == "rabbit":
        await require_rabbit()
        proxy = await TcpProxy().start()  # CH reaches the broker through it, so a test can cut it
        queue_urls = {"CH": proxy.url(), "FR": AMQP_URL}
    net = build_network(
        tmp_path / "net",
        ("CH", "FR"),
        retry={"max_attempts": 20, "first_delay_s": 0.1, "factor": 2.0, "max_delay_s": 1.0},
        queue_urls=queue_urls,
        queue_prefix=prefix,
        # A short lease: on the embedded queue, what the killed process held waits for it.
        extra="\n[delivery]\nlease_s = 5.0\n",
    )
    http = aiohttp.ClientSession()
    r = Run(net, http)
    r.kind, r.proxy = request.param, proxy
    try:
        for gateway in r.gateways.values():
            await gateway.start(http)
        yield r
    finally:
        for gateway in r.gateways.values():
            gateway.stop()
        await http.close()
        if proxy is not None:
            await proxy.stop()
            await delete_everything(prefix)


async def test_sigkill_mid_run_loses_nothing_and_doubles_nothing(run):
    await run.submit(numbers(0, N))
    done_before_kill = await run.wait_some_acknowledged()

    run.gateways["CH"].kill()
    assert done_before_kill < N, "the run finished before the kill; raise N"
    await run.gateways["CH"].start(run.http)
    await run.submit(numbers(N, 20))  # and it keeps working after the restart

    await assert_exactly_once(run)


@pytest.mark.parametrize("run", ["rabbit"], indirect=True)  # only RabbitMQ has a connection to cut
async def test_broker_connection_cut_mid_run_loses_nothing(run):
    await run.submit(numbers(0, N))
    await run.wait_some_acknowledged()

    assert run.proxy.cut() >= 1
    await run.submit(numbers(N, 20))  # accepted while the connection is being restored
    await asyncio.sleep(0.5)
    run.proxy.cut()  # and once more, mid-recovery

    await assert_exactly_once(run)


@pytest.mark.postgres
async def test_database_connections_terminated_mid_run_lose_nothing_and_double_nothing(tmp_path):
    """Both gateways on PostgreSQL; mid-run every connection to the database is terminated, twice
    (as a server restart or a failover does). A request caught in it is 503 and the MA system tries
    again with its Idempotency-Key; deliveries caught in it are tried again; loops that fail start again."""
    import asyncpg

    from tests.e2e.conftest import party_stores
    from tests.pg import PG_DSN

    async with party_stores("postgres", ("CH", "FR"), "crashpg") as store_urls:
        net = build_network(
            tmp_path / "net", ("CH", "FR"), store_urls=store_urls,
            retry={"max_attempts": 20, "first_delay_s": 0.1, "factor": 2.0, "max_delay_s": 1.0},
            extra="\n[delivery]\nlease_s = 5.0\n",
        )  # fmt: skip
        http = aiohttp.ClientSession()
        run = Run(net, http)
        refused: Counter = Counter()

        async def submit(number: str) -> None:
            permit = make_permit(random.Random(number), issuer="CH", importer_country="FR", number=number)
            headers = {**run.auth("CH"), "Content-Type": "application/json", "Idempotency-Key": number}
            for _ in range(100):
                async with http.post(f"{net['CH'].url}/v1/permits", data=permit_to_json(permit), headers=headers) as r:
                    if r.status == 503:
                        refused[(await r.json())["code"]] += 1
                        await asyncio.sleep(0.1)
                        continue
                    assert r.status in (201, 202), await r.text()
                    run.accepted.append(number)
                    return
            raise AssertionError(f"{number} was never accepted")

        # Only these two gateways' connections (PostgresStore names them by schema), not those of
        # anything else that shares the server.
        names = [f"epix-gateway {url.rsplit('schema=', 1)[1]}" for url in store_urls.values()]

        async def terminate_every_connection() -> None:
            await run.wait_some_acknowledged()
            admin = await asyncpg.connect(PG_DSN)
            try:
                for _ in range(2):
                    ended = await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = ANY($1::text[])",
                        names,
                    )
                    assert ended >= 2, f"terminated {ended} connections of {names}"
                    await asyncio.sleep(0.3)
            finally:
                await admin.close()

        try:
            for gateway in run.gateways.values():
                await gateway.start(http)
            await asyncio.gather(terminate_every_connection(), *(submit(n) for n in numbers(0, N)))
            await asyncio.gather(*(submit(n) for n in numbers(N, 20)))  # and both keep working
            await assert_exactly_once(run)
            assert set(refused) <= {"STORE_UNAVAILABLE"}, refused
        finally:
            for gateway in run.gateways.values():
                gateway.stop()
            await http.close()
