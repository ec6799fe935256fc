"""The gateway's own database: engine creation, SQLite pragmas, table creation."""

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlmodel import create_engine

from rondo.gateway.models import GatewayModel

SQLITE_BUSY_TIMEOUT_MS = 5_000


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL for concurrent readers, NORMAL sync (safe under WAL), wait on locks, enforce FKs."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def make_engine(database_url: str) -> Engine:
    """An engine for `database_url`; for SQLite, creates the file's folder and sets pragmas.

    SQLite connections are shared across threads (FastAPI runs sync dependencies in a pool),
    so `check_same_thread` is off; SQLAlchemy's pool hands each connection to one user at a time.
    """
    url = make_url(database_url)
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        connect_args["check_same_thread"] = False
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args=connect_args)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _set_sqlite_pragmas)
    return engine


def init_db(engine: Engine) -> None:
    """Create missing tables (idempotent). Schema migrations are not needed yet."""
    GatewayModel.metadata.create_all(engine)
