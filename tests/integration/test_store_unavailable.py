"""A database that drops the connection or cannot be written is "unavailable" (503, try again),
not a fault of the gateway (500): told apart on real errors from the real servers."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import pytest

from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from tests.conftest import eventually
from tests.pg import PG_DSN, PgSchema


async def _running(admin: asyncpg.Connection, pid: int) -> bool:
    return await admin.fetchval("SELECT state = 'active' FROM pg_stat_activity WHERE pid = $1", pid) is True


@pytest.mark.postgres
async def test_a_connection_the_server_terminated_is_unavailable_and_the_pool_recovers():
    pg = PgSchema()
    await pg.create()
    store = PostgresStore(PG_DSN, schema=pg.name, max_size=2)
    await store.open()
    admin = await asyncpg.connect(PG_DSN)
    try:
        async with store.pool.acquire() as conn:
            # The server ends the connection in the middle of a query (a restart, an operator).
            query = asyncio.create_task(conn.fetchval("SELECT pg_sleep(30)"))
            await eventually(lambda: _running(admin, conn.get_server_pid()), True)
            await admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
            with pytest.raises(asyncpg.PostgresError) as mid_query:
                await query
        assert store.unavailable(mid_query.value), repr(mid_query.value)
        assert not store.unavailable(asyncpg.UniqueViolationError("duplicate key")) and not store.unavailable(ValueError("bug"))
        await store.ping()  # the pool replaced the connection
        assert await store.counts_by_status() == {}
    finally:
        await admin.close()
        await store.close()
        await pg.drop()


async def test_a_database_file_locked_by_another_process_is_unavailable(tmp_path):
    store = SqliteStore(tmp_path / "epix.sqlite3")
    await store.open()
    holder = sqlite3.connect(store.path, isolation_level=None)
    other = sqlite3.connect(store.path, timeout=0, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError) as raised:
            other.execute("BEGIN IMMEDIATE")
        assert store.unavailable(raised.value), raised.value
        with pytest.raises(sqlite3.IntegrityError) as constraint:
            holder.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, 'again', 'x')")
        assert not store.unavailable(constraint.value) and not store.unavailable(ValueError("bug"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        other.close()
        await store.close()
