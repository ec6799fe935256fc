"""The gateway's own database: an engine for its URL, its schema migrated at start.

SQLite by default (WAL and the other pragmas), PostgreSQL by `RONDO_GATEWAY_DATABASE_URL`
(`postgresql+psycopg://`); both from `rondo.contracts.database`.
"""

from sqlalchemy import Engine

from rondo.contracts.database import make_engine
from rondo.contracts.migrations import upgrade
from rondo.gateway.migrations import MIGRATIONS

__all__ = ["init_db", "make_engine"]


def init_db(engine: Engine) -> None:
    """Migrate the schema to the newest revision (idempotent; see `rondo.gateway.migrations`)."""
    upgrade(engine, MIGRATIONS)
