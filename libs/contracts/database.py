"""A stateful service's database engine: SQLite by default, PostgreSQL by URL.

Each service that keeps state (gateway, scheduler, artifacts) owns one database, named by its
`RONDO_<SERVICE>_DATABASE_URL`: `sqlite:///<path>` (the default, one host) or
`postgresql+psycopg://user:password@host:port/db` (several hosts, several schedulers). The
schema comes from the service's Alembic migrations (`rondo.contracts.migrations`).
"""

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import SQLModel, create_engine

SQLITE_BUSY_TIMEOUT_MS = 5_000
SUPPORTED_URLS = "sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"


def parse_database_url(database_url: str) -> URL:
    """The URL of a supported database; `postgresql://` gets the psycopg 3 driver (the one
    installed). Raises ValueError naming the accepted forms for anything else."""
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ValueError(f"not a database URL: {database_url!r}; use {SUPPORTED_URLS}") from None
    if url.drivername == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    if url.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        shown = url.render_as_string(hide_password=True)
        raise ValueError(f"unsupported database URL {shown}: use {SUPPORTED_URLS}")
    return url


def make_engine(
    database_url: str, *, sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS
) -> Engine:
    """An engine for `database_url`.

    SQLite: the file's folder is created; every connection gets WAL (readers never block the
    writer), NORMAL sync (safe under WAL), a busy timeout and enforced foreign keys, and may be
    used from any thread (FastAPI and `asyncio.to_thread` hand sessions between threads; the
    pool gives each connection to one user at a time). PostgreSQL: connections are checked
    before use, so a restarted server costs one reconnect, not a failed request.
    """
    url = parse_database_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False})

    def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={sqlite_busy_timeout_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    event.listen(engine, "connect", set_pragmas)
    return engine


def dialect_insert(engine: Engine, model: type[SQLModel]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into `model`'s table with `on_conflict_do_update` / `on_conflict_do_nothing`,
    which both backends support in their own dialect: an upsert that never races."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
