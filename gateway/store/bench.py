"""Throughput of the store on its own: ``python -m gateway.store.bench [--pg DSN] [-n N]``.

Measures accept_outbound (one permit + one message + its event per call), claim_due (one
message per call, and batches of 50) and the ACKNOWLEDGED transition, each with 1 and with 16
concurrent tasks, on SQLite (FULL and NORMAL) and, if reachable, on PostgreSQL in a throwaway
schema. Numbers are operations per second of wall time; run on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from domain.messages import Action, Direction, MessageStatus

from .base import MessageRecord, PermitRecord, Store

XML = b"<CITESEPermit>" + b"x" * 6000 + b"</CITESEPermit>"  # about the size of a signed permit


def _permit(i: int) -> tuple[PermitRecord, MessageRecord]:
    now = datetime.now(UTC)
    number = f"CH-{i:08}-{uuid.uuid4().hex[:6]}"
    xml = XML + number.encode()
    p = PermitRecord("CH", number, 1, Direction.OUTBOUND, "VALID", b"{}" * 500, xml,
                     hashlib.sha256(xml).hexdigest(), None, None, None, now)  # fmt: skip
    m = MessageRecord(f"m-{uuid.uuid4()}", f"c-{number}", Direction.OUTBOUND, "CH", "FR", "CITESEPermit",
                      Action.ISSUE, "CH", number, 1, MessageStatus.SEND_ENQUEUED, 0, None, None, None, None,
                      None, None, p.digest, now, now)  # fmt: skip
    return p, m


async def _rate(total: int, tasks: int, op: Callable[[int], Awaitable[int]]) -> float:
    """Run ``op`` from ``tasks`` workers until ``total`` units are done or ``op`` returns 0
    (nothing left); units per second."""
    counter = iter(range(10**9))
    done = 0

    async def worker() -> None:
        nonlocal done
        while done < total:
            units = await op(next(counter))
            if units == 0:
                return
            done += units

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return done / (time.perf_counter() - start)


async def bench(store: Store, n: int) -> dict[str, float]:
    results: dict[str, float] = {}
    for tasks in (1, 16):

        async def accept(i: int) -> int:
            p, m = _permit(i)
            await store.accept_outbound(p, [m], actor="bench")
            return 1

        results[f"accept_outbound/s, {tasks} task(s)"] = await _rate(n, tasks, accept)
    far = datetime.now(UTC) + timedelta(days=1)
    claimed: list[str] = []
    for tasks in (1, 16):

        async def claim_one(_: int) -> int:
            batch = await store.claim_due(limit=1, lease_s=300, now=far, actor="bench")
            claimed.extend(m.message_id for m in batch)
            return len(batch)

        results[f"claims/s (limit=1), {tasks} task(s)"] = await _rate(n // 2, tasks, claim_one)
    for tasks in (1, 16):

        async def acknowledge(_: int) -> int:
            if not claimed:
                return 0
            await store.transition(claimed.pop(), MessageStatus.ACKNOWLEDGED, actor="bench", receipt=b"<R/>" * 100)
            return 1

        results[f"transition ACKNOWLEDGED/s, {tasks} task(s)"] = await _rate(n // 2, tasks, acknowledge)
    for i in range(n):  # refill for the batch claim
        p, m = _permit(n + i)
        await store.accept_outbound(p, [m], actor="bench")

    async def claim_batch(_: int) -> int:
        batch = await store.claim_due(limit=50, lease_s=300, now=far, actor="bench")
        return len(batch)

    results["messages claimed/s (limit=50), 4 tasks"] = await _rate(n, 4, claim_batch)
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pg", default=os.environ.get("EPIX_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("-n", type=int, default=4000)
    args = parser.parse_args()
    from .postgres import PostgresStore
    from .sqlite import SqliteStore

    for sync in ("FULL", "NORMAL"):
        with tempfile.TemporaryDirectory() as tmp:
            store = SqliteStore(Path(tmp) / "bench.sqlite3", synchronous=sync)
            await store.open()
            try:
                _print(f"SQLite synchronous={sync}", await bench(store, args.n))
            finally:
                await store.close()
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(args.pg, schema=schema, max_size=16)
    try:
        await store.open()
    except Exception as e:  # noqa: BLE001 -- a benchmark without PostgreSQL still reports SQLite
        print(f"PostgreSQL skipped: {e}")
        return
    try:
        _print("PostgreSQL", await bench(store, args.n))
    finally:
        await store.close()
        conn = await asyncpg.connect(args.pg)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


def _print(title: str, results: dict[str, float]) -> None:
    print(title)
    for name, rate in results.items():
        print(f"  {name:<45} {rate:>9.0f}")


if __name__ == "__main__":
    asyncio.run(main())
