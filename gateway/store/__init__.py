"""Durable state: permits, exchange messages with their history, and the delivery queue.

``await open_store(None, data_dir)`` gives the embedded SQLite store in the data directory,
``await open_store("postgresql://…", data_dir)`` the shared PostgreSQL one, both opened (schema
migrated); ``await store.close()`` at the end, or ``async with opened_store(...)`` for both.
``store_for`` names the store without any I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from domain.errors import EpixError, ErrorCode

from .base import MessageEvent, MessageFilter, MessageRecord, PermitRecord, Store

__all__ = ["MessageEvent", "MessageFilter", "MessageRecord", "PermitRecord", "Store", "open_store", "opened_store", "store_for"]

SQLITE_FILE = "epix.sqlite3"


def store_for(url: str | None, data_dir: Path, *, schema: str | None = None) -> Store:
    """The store a URL names, not yet opened (no I/O happens here).

    - ``None`` or ``sqlite:`` → ``data_dir/epix.sqlite3``; ``sqlite:///abs/path.db`` → that file.
      ``?synchronous=NORMAL`` trades power-cut durability for speed (see ``sqlite.py``).
    - ``postgresql://…`` or ``postgres://…`` → an asyncpg pool. ``?schema=name`` (or the
      ``schema`` keyword) sets the search_path, so that tests and tenants get their own tables;
      ``?pool_max=N`` sizes the pool.
    """
    if url is None or url.startswith("sqlite:"):
        from .sqlite import SqliteStore

        path, options = Path(data_dir) / SQLITE_FILE, {}
        if url is not None:
            parts = urlsplit(url)
            if parts.path not in ("", "/"):
                path = Path(parts.path)
            options = dict(parse_qsl(parts.query))
        return SqliteStore(path, synchronous=options.get("synchronous", "FULL"))
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        # Our own options are taken out: asyncpg would send unknown ones to the server as settings.
        schema = query.pop("schema", None) or schema
        pool_max = query.pop("pool_max", "10")
        if not pool_max.isdigit() or int(pool_max) < 1:
            raise EpixError(ErrorCode.CONFIG_INVALID, f"pool_max={pool_max!r} in the database URL is not a positive number.")
        dsn = urlunsplit(parts._replace(query=urlencode(query)))
        return PostgresStore(dsn, schema=schema, max_size=int(pool_max))
    scheme = url.split(":", 1)[0]
    raise EpixError(
        ErrorCode.CONFIG_INVALID,
        f"The database URL scheme {scheme!r} is not supported; use sqlite: or postgresql://.",
    )


async def open_store(url: str | None, data_dir: Path, *, schema: str | None = None) -> Store:
    """The store a URL names, opened: connected and its schema migrated."""
    store = store_for(url, data_dir, schema=schema)
    await store.open()
    return store


@asynccontextmanager
async def opened_store(url: str | None, data_dir: Path) -> AsyncIterator[Store]:
    """``open_store`` for one piece of work (a command, a report), closed when it ends."""
    store = await open_store(url, data_dir)
    try:
        yield store
    finally:
        await store.close()
