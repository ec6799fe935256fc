"""Each stateful service's migrations build exactly its models, on SQLite and PostgreSQL.

`test_migrations_build_exactly_the_models` fails when a model changed without a revision; the
fix is `python -m rondo.<service>.migrations revision -m "what changed"` (README.md).
"""

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, MetaData, inspect
from support.databases import BACKENDS, new_database

from rondo.artifacts.migrations import MIGRATIONS as ARTIFACTS
from rondo.contracts.database import make_engine
from rondo.contracts.migrations import Migrations, schema_drift, upgrade, write_revision
from rondo.gateway.migrations import MIGRATIONS as GATEWAY
from rondo.scheduler.migrations import MIGRATIONS as SCHEDULER

SERVICES = {"gateway": GATEWAY, "scheduler": SCHEDULER, "artifacts": ARTIFACTS}


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """A new empty database per test (the services' tables share names), on each backend."""
    engine = make_engine(new_database(request, request.param))
    yield engine
    engine.dispose()


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_build_exactly_the_models(service: str, engine: Engine) -> None:
    migrations = SERVICES[service]
    upgrade(engine, migrations)
    upgrade(engine, migrations)  # at head already: nothing to do
    drift = schema_drift(engine, migrations)
    assert drift == [], (
        f"the {service} models differ from its migrations; write a revision with "
        f'`python -m rondo.{service}.migrations revision -m "what changed"`: {drift}'
    )
    assert _tables(engine) == {*migrations.metadata.tables, migrations.version_table}


@pytest.mark.parametrize("service", SERVICES)
def test_downgrade_to_base_and_back(service: str, engine: Engine) -> None:
    migrations = SERVICES[service]
    upgrade(engine, migrations)
    with engine.begin() as connection:
        command.downgrade(migrations.config(connection), "base")
    assert _tables(engine) == {migrations.version_table}
    upgrade(engine, migrations)
    assert schema_drift(engine, migrations) == []


def test_instances_starting_together_on_postgresql_migrate_once(
    request: pytest.FixtureRequest,
) -> None:
    engine = make_engine(new_database(request, "postgresql"))
    errors: list[BaseException] = []

    def start() -> None:
        try:
            upgrade(engine, SCHEDULER)
        except BaseException as error:  # reported below, with its type
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert schema_drift(engine, SCHEDULER) == []
    engine.dispose()


def test_a_database_made_before_migrations_is_adopted_with_its_rows(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    with engine.begin() as connection:  # the baseline tables, as create_all made them
        command.upgrade(GATEWAY.config(connection), GATEWAY.baseline())
        connection.execute(sa.text(f"DROP TABLE {GATEWAY.version_table}"))
        connection.execute(
            sa.text(
                "INSERT INTO users (id, name, bucket, created_at) "
                "VALUES ('u-1', 'ada', 'user-ada', '2026-11-25 12:00:00')"
            )
        )
    upgrade(engine, GATEWAY)
    assert schema_drift(engine, GATEWAY) == []
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT name FROM users")).scalars().all() == ["ada"]
    engine.dispose()


def _with_new_column(metadata: MetaData) -> MetaData:
    """A copy of `metadata` whose users table has one more column (a model change)."""
    changed = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["users"].append_column(sa.Column("email", sa.String(), nullable=True))
    return changed


def test_a_model_change_needs_a_revision_and_revision_writes_it(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    shutil.copytree(GATEWAY.versions, versions, ignore=shutil.ignore_patterns("__pycache__"))
    unchanged = Migrations(versions, GATEWAY.version_table, GATEWAY.metadata)
    assert write_revision(unchanged, "nothing") is None

    changed = Migrations(versions, GATEWAY.version_table, _with_new_column(GATEWAY.metadata))
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    upgrade(engine, changed)
    assert [diff[0] for diff in schema_drift(engine, changed)] == ["add_column"]

    written = write_revision(changed, "add users.email")
    assert written is not None and written.parent == versions
    assert "add_column" in written.read_text()
    upgrade(engine, changed)
    assert schema_drift(engine, changed) == []
    engine.dispose()
