"""PostgreSQL for tests: a fresh schema per test on the real server (fail when CI=true and it is missing)."""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg
import pytest

from tests.conftest import IN_CI

PG_DSN = os.environ.get("EPIX_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def pg_unreachable_reason() -> str | None:
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as e:
        return f"PostgreSQL at {PG_DSN} is not reachable ({e})"
    await conn.close()
    return None


async def require_pg() -> None:
    reason = await pg_unreachable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason + " and CI=true requires it")
        pytest.skip(reason)


class PgSchema:
    """A fresh schema for one test, dropped afterwards; several stores may share it."""

    def __init__(self, prefix: str = "t") -> None:
        self.name = f"{prefix}_{uuid.uuid4().hex[:16]}"

    @property
    def url(self) -> str:
        return f"{PG_DSN}?schema={self.name}"

    async def create(self) -> None:
        await require_pg()
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f"CREATE SCHEMA {self.name}")
        finally:
            await conn.close()

    async def drop(self) -> None:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
        finally:
            await conn.close()
