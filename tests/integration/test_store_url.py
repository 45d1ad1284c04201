"""Which store a database URL gives, without connecting to anything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from domain.errors import EpixError, ErrorCode
from gateway.store import open_store, store_for
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore


def test_no_url_is_sqlite_in_the_data_directory(tmp_path):
    store = store_for(None, tmp_path)
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "epix.sqlite3"
    assert not store.path.exists()  # nothing happens before open()


def test_sqlite_url_with_a_path_and_options(tmp_path):
    assert store_for("sqlite:", tmp_path).path == tmp_path / "epix.sqlite3"
    store = store_for(f"sqlite://{tmp_path}/other.db?synchronous=NORMAL", Path("/unused"))
    assert store.path == tmp_path / "other.db"
    with pytest.raises(EpixError) as caught:
        store_for("sqlite:?synchronous=SOMETIMES", tmp_path)
    assert caught.value.code is ErrorCode.CONFIG_INVALID


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_url_takes_the_schema_out_of_the_dsn(tmp_path, scheme):
    store = store_for(f"{scheme}://epix@db.example:5432/epix?schema=tenant_ch&sslmode=disable", tmp_path)
    assert isinstance(store, PostgresStore)
    assert store.schema == "tenant_ch"
    assert "schema=" not in store._dsn and "sslmode=disable" in store._dsn
    assert store_for(f"{scheme}://h/db", tmp_path, schema="t_kw").schema == "t_kw"


async def test_open_store_opens_it(tmp_path):
    store = await open_store(None, tmp_path)
    try:
        await store.ping()
        assert (tmp_path / "epix.sqlite3").exists()
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    ["mysql://h/db", "postgresql://h/db?schema=Robert');DROP", "postgresql://h/db?pool_max=zero"],
)
def test_unusable_urls_are_configuration_errors(tmp_path, url):
    with pytest.raises(EpixError) as caught:
        store_for(url, tmp_path)
    assert caught.value.code is ErrorCode.CONFIG_INVALID


@pytest.mark.postgres
async def test_processes_opening_a_new_schema_together_all_open_it(tmp_path):
    """Workers of one gateway start at the same moment on a schema nobody made yet: each runs
    CREATE SCHEMA IF NOT EXISTS, which PostgreSQL can refuse to all but one with a duplicate key
    (it did, 7 opens in 30 before the fix); that is the schema being there, not a fault."""
    from tests.pg import PgSchema, require_pg

    await require_pg()
    for _ in range(5):
        schema = PgSchema("together")  # not created: the stores make it
        stores = [store_for(schema.url, tmp_path) for _ in range(3)]
        try:
            opened = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
            assert [o for o in opened if isinstance(o, BaseException)] == []
            for s in stores:
                await s.ping()
        finally:
            for s in stores:
                await s.close()
            await schema.drop()
