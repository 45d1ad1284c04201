"""Store fixtures: every store test runs once per backend, SQLite in a temporary directory and
PostgreSQL in a fresh schema (marked ``postgres``: fails when CI=true and the server is missing)."""

from __future__ import annotations

import pytest

from gateway.store import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore
from tests.integration.records import Clock
from tests.pg import PG_DSN, PgSchema


def _pg_store(pg: PgSchema, clock: Clock, **kw) -> PostgresStore:
    return PostgresStore(PG_DSN, schema=pg.name, clock=clock, **kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request, tmp_path, clock):
    """A factory of stores that share one database, so tests can open a second instance."""
    opened: list[Store] = []
    if request.param == "sqlite":

        def make(**kw) -> Store:
            return SqliteStore(tmp_path / "epix.sqlite3", clock=clock, **kw)

        pg = None
    else:
        pg = PgSchema()
        await pg.create()

        def make(**kw) -> Store:
            return _pg_store(pg, clock, **kw)

    async def open_one(**kw) -> Store:
        store = make(**kw)
        await store.open()
        opened.append(store)
        return store

    open_one.kind = request.param  # type: ignore[attr-defined]
    yield open_one
    for store in opened:
        await store.close()
    if pg is not None:
        await pg.drop()


@pytest.fixture
async def store(backend) -> Store:
    return await backend()
