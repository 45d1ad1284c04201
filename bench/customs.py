"""Customs verification under load: requests per second and latency with many permits stored,
against a bare aiohttp handler measured in the same run by the same client.

FR's gateway (SQLite, synchronous=FULL, every verification appended to the audit history) is
filled with N inbound CH permits, then a pool of concurrent clients asks
``GET /v1/verifications/CH/<random number>`` for a fixed time. The store is filled directly
(one signed template permit, its JSON per number), not through the exchange: signing a million
permits would take the run's whole budget and measures nothing new. The signature result is
therefore cached after the first request (it is keyed by the signed bytes, as in production,
where each permit's first verification pays one XML-DSig check: ``cold_signature_ms``).

Targets (issue 5): verification rps >= 50% of the bare handler's; p99 at the largest size
<= 1.5 x p99 at the smallest.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import aiohttp
from aiohttp import web

from adapters.cites_write import permit_to_xml
from adapters.permit_json import permit_to_json
from gateway.store import store_for
from gateway.store import schema as q
from simulators.network import GatewayProcess, build_network, free_port
from simulators.samples import make_permit

TOKEN = "bench-customs-token"


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...] = (10_000, 1_000_000)
    seconds: float = 5.0
    concurrency: int = 32

    @classmethod
    def quick(cls) -> "Settings":
        return cls(sizes=(1_000, 10_000), seconds=1.0, concurrency=16)


def _fill(db: Path, template, signed: bytes, start: int, end: int) -> None:
    """Insert permits number start..end-1 (inbound, from CH) in chunks, in single transactions."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")  # filling only; the gateway reopens with FULL
    json_template = permit_to_json(template)
    sql = q.for_sqlite(q.INSERT_PERMIT)
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    chunk = 20_000
    for lo in range(start, end, chunk):
        rows = []
        for i in range(lo, min(end, lo + chunk)):
            number = f"CH26-{i:07d}"
            body = json_template.replace(template.number.encode(), number.encode())
            rows.append(("CH", number, 1, "inbound", "VALID", body, signed, f"d{i}", "CH", None, None, now))
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    conn.close()


async def _load(url_for: Callable[[random.Random], str], headers: dict[str, str], seconds: float, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def client(seed: int) -> None:
            nonlocal errors
            rng = random.Random(seed)
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                async with http.get(url_for(rng)) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
    }


async def _bare(seconds: float, concurrency: int) -> dict[str, Any]:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"verdict": "VALID"})

    app = web.Application()
    app.router.add_get("/v1/verifications/{issuer}/{number}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        return await _load(lambda rng: f"http://127.0.0.1:{port}/v1/verifications/CH/x", {}, seconds, concurrency)
    finally:
        await runner.cleanup()


async def run(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    from bench.report import run_metadata

    with tempfile.TemporaryDirectory(prefix="epix-bench-customs-") as tmp:
        extra = f'\n[[token]]\nname = "bench-customs"\ntoken = "{TOKEN}"\nrole = "customs"\ncountries = ["FR"]\n'
        net = build_network(Path(tmp) / "net", ("CH", "FR"), extra=extra)
        fr = net["FR"]
        config = fr.config()
        # One real CH-signed permit as the template of every stored one.
        from gateway.security import Security

        ch_security = Security.load(party="CH", keys_dir=net["CH"].dir, passphrase=None, agreements=net["CH"].config().agreements)
        template = replace(make_permit(random.Random(1), issuer="CH", importer_country="FR", number="CH26-0000000", items=2))
        signed = ch_security.sign(permit_to_xml(template))
        store = store_for(config.store_url, config.data_dir)
        await store.open()
        await store.close()
        db = Path(store.path)
        result: dict[str, Any] = {"name": "customs", "settings": settings.__dict__, "meta": run_metadata(), "sizes": []}
        log(f"bare aiohttp handler, {settings.seconds} s x {settings.concurrency} clients ...")
        result["bare"] = await _bare(settings.seconds, settings.concurrency)
        filled = 0
        for size in settings.sizes:
            t0 = time.perf_counter()
            _fill(db, template, signed, filled, size)
            filled = size
            log(f"{size} permits stored ({time.perf_counter() - t0:.1f} s); verifying ...")
            gw = await GatewayProcess(config).start()
            try:
                service = gw.app[__import__("gateway.customs", fromlist=["CUSTOMS"]).CUSTOMS]
                record = (await gw.app[__import__("gateway.appkeys", fromlist=["STORE"]).STORE].get_permit_versions("CH", "CH26-0000001"))[-1]
                t1 = time.perf_counter()
                service._check_signature(record)
                cold_ms = (time.perf_counter() - t1) * 1000
                base = f"http://127.0.0.1:{config.port}/v1/verifications/CH/"
                measured = await _load(
                    lambda rng: base + f"CH26-{rng.randrange(size):07d}", {"Authorization": f"Bearer {TOKEN}"},
                    settings.seconds, settings.concurrency,
                )  # fmt: skip
            finally:
                await gw.stop()
            measured.update(permits=size, cold_signature_ms=round(cold_ms, 2), vs_bare=round(measured["rps"] / result["bare"]["rps"], 3))
            result["sizes"].append(measured)
        first, last = result["sizes"][0], result["sizes"][-1]
        result["p99_ratio_largest_vs_smallest"] = round(last["p99_ms"] / first["p99_ms"], 3)
        result["errors"] = sum(s["errors"] for s in result["sizes"])
        return result


def render(result: dict[str, Any]) -> str:
    bare = result["bare"]
    lines = [
        "customs verification (FR gateway, SQLite FULL, audited), same client for all rows",
        f"{'':>22} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs bare':>8} {'errors':>7}",
        f"{'bare aiohttp handler':>22} {bare['rps']:>9} {bare['p50_ms']:>8} {bare['p99_ms']:>8} {'1.0':>8} {bare['errors']:>7}",
    ]
    for s in result["sizes"]:
        lines.append(
            f"{s['permits']:>13,} permits {s['rps']:>9} {s['p50_ms']:>8} {s['p99_ms']:>8} {s['vs_bare']:>8} {s['errors']:>7}"
        )
    lines.append(
        f"p99 ratio largest/smallest: {result['p99_ratio_largest_vs_smallest']} (target <= 1.5); "
        f"verification/bare: {result['sizes'][-1]['vs_bare']} (target >= 0.5); "
        f"cold signature check: {result['sizes'][-1]['cold_signature_ms']} ms"
    )
    return "\n".join(lines)
