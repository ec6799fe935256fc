"""Empty databases on both backends the services run on, for the state-keeping suites.

A suite's store fixture depends on `database_url` (tests/conftest.py): a database per test
module, on SQLite and then on PostgreSQL, so each of its tests runs once per backend. A store
made per test takes its engine from `migrated_engine`, which empties the tables afterwards.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, MetaData, text

from rondo.contracts.database import make_engine
from rondo.contracts.migrations import Migrations, upgrade
from support.postgres import PostgresServer

BACKENDS = ("sqlite", "postgresql")


def new_database(request: pytest.FixtureRequest, backend: str) -> str:
    """The URL of a new empty database on `backend`, dropped when `request`'s scope ends.

    PostgreSQL databases live on the session's `postgres` server, started on first use.
    """
    if backend == "sqlite":
        folder = request.getfixturevalue("tmp_path_factory").mktemp("db")
        return f"sqlite:///{folder / 'state.db'}"
    postgres: PostgresServer = request.getfixturevalue("postgres")
    url = postgres.create_database()
    request.addfinalizer(lambda: postgres.drop_database(url))
    return url


@contextmanager
def migrated_engine(database_url: str, migrations: Migrations) -> Iterator[Engine]:
    """An engine on `database_url` with the schema at head; afterwards the tables are emptied
    and the engine's connections closed."""
    engine = make_engine(database_url)
    upgrade(engine, migrations)
    try:
        yield engine
    finally:
        clear_tables(engine, migrations.metadata)
        engine.dispose()


def clear_tables(engine: Engine, metadata: MetaData) -> None:
    """Empty every table of `metadata` as a new database would be (ids start again at 1)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            return
        for table in reversed(metadata.sorted_tables):
            connection.execute(table.delete())
