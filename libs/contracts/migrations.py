"""Each stateful service's schema migrations (Alembic): applied at start, checked, generated.

A service keeps its revisions in its own `migrations/versions/` and names them, with its own
version table and its SQLModel metadata, in a `Migrations`. The Alembic environment
(`migration_env/`: `env.py`, `script.py.mako`) is shared. The service calls `upgrade` before it
serves; `python -m rondo.<service>.migrations revision -m MESSAGE` writes the next revision from
the models (README.md, "Database migrations").
"""

import argparse
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, TypeDecorator, inspect, text

from rondo.contracts.database import make_engine

ENVIRONMENT = Path(__file__).parent / "migration_env"

# Generated revisions come out linted and formatted like the rest of the code.
RUFF_HOOKS = {
    "hooks": "ruff_fix, ruff_format",
    "ruff_fix.type": "module",
    "ruff_fix.module": "ruff",
    "ruff_fix.options": "check --fix --quiet REVISION_SCRIPT_FILENAME",
    "ruff_format.type": "module",
    "ruff_format.module": "ruff",
    "ruff_format.options": "format --quiet REVISION_SCRIPT_FILENAME",
}


@dataclass(frozen=True)
class Migrations:
    """One service's migrations: its revisions, its version table, the models they build."""

    versions: Path
    version_table: str
    metadata: MetaData

    @property
    def lock_key(self) -> int:
        """PostgreSQL advisory-lock key: instances starting together migrate one at a time."""
        return zlib.crc32(self.version_table.encode())

    def config(self, connection: Connection) -> Config:
        """An Alembic config running on `connection` (the shared env.py reads `attributes`)."""
        config = Config()
        config.set_main_option("script_location", str(ENVIRONMENT))
        config.set_main_option("version_locations", str(self.versions))
        config.set_main_option("path_separator", "os")
        config.attributes["connection"] = connection
        config.attributes["migrations"] = self
        for name, value in RUFF_HOOKS.items():
            config.set_section_option("post_write_hooks", name, value)
        return config

    def baseline(self) -> str:
        """The first revision: the schema the service made before it had migrations."""
        scripts = ScriptDirectory(str(ENVIRONMENT), version_locations=[str(self.versions)])
        base = scripts.get_base()
        if base is None:
            raise RuntimeError(f"{self.versions} holds no revision")
        return base


def upgrade(engine: Engine, migrations: Migrations) -> None:
    """Bring the database to the newest revision (idempotent); each service calls it at start.

    On PostgreSQL the whole upgrade is one transaction under an advisory lock, so instances
    starting together migrate once. A database made before migrations existed (the service's
    tables, no version table) is adopted at the baseline revision, its rows kept.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": migrations.lock_key}
            )
        config = migrations.config(connection)
        if _predates_migrations(connection, migrations):
            command.stamp(config, migrations.baseline())
        command.upgrade(config, "head")


def _predates_migrations(connection: Connection, migrations: Migrations) -> bool:
    existing = set(inspect(connection).get_table_names())
    return migrations.version_table not in existing and bool(
        existing & set(migrations.metadata.tables)
    )


def schema_drift(engine: Engine, migrations: Migrations) -> list[Any]:
    """How the models differ from the database (Alembic's diff tuples); empty when they agree.

    Asked of a database just upgraded to head, a non-empty answer means a model changed
    without a revision: write one with `write_revision`.
    """
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts=_context_options(migrations))
        return list(compare_metadata(context, migrations.metadata))


def write_revision(migrations: Migrations, message: str) -> Path | None:
    """Write the next revision from how the models differ from head; None when they agree.

    Head is built in a scratch SQLite database; the revision uses batch operations, so it runs
    on SQLite and PostgreSQL alike. Read it before committing: a rename comes out as drop + add,
    and a new NOT NULL column on a filled table needs a `server_default`.
    """
    with tempfile.TemporaryDirectory(prefix="rondo-revision-") as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            upgrade(engine, migrations)
            if not schema_drift(engine, migrations):
                return None
            with engine.begin() as connection:
                script = command.revision(
                    migrations.config(connection), message=message, autogenerate=True
                )
        finally:
            engine.dispose()
    if script is None or isinstance(script, list):
        raise RuntimeError("Alembic wrote no single revision")
    return Path(script.path)


def _render_type(kind: str, obj: Any, _context: AutogenContext) -> str | bool:
    """TypeDecorators (UTC datetimes, SQLModel's AutoString) go into a revision as their plain
    SQLAlchemy type, so that no revision imports service code that may change later."""
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl_instance!r}"
    return False


def _context_options(migrations: Migrations) -> dict[str, Any]:
    return {
        "target_metadata": migrations.metadata,
        "version_table": migrations.version_table,
        "render_as_batch": True,  # SQLite alters a table by copying it
        "compare_type": True,
        "render_item": _render_type,
    }


def run_migrations() -> None:
    """The shared env.py: run Alembic on the connection and `Migrations` that `upgrade` or
    `write_revision` put into the config."""
    from alembic import context  # importable only while Alembic runs an env.py

    attributes = context.config.attributes
    if "connection" not in attributes:
        raise RuntimeError(
            "Rondo's migrations run at each service's start, or through "
            "`python -m rondo.<service>.migrations`, not through the alembic command"
        )
    context.configure(
        connection=attributes["connection"], **_context_options(attributes["migrations"])
    )
    with context.begin_transaction():
        context.run_migrations()


def main(migrations: Migrations, argv: Sequence[str] | None = None) -> None:
    """`python -m rondo.<service>.migrations revision -m MESSAGE`: write the next revision."""
    parser = argparse.ArgumentParser(description=f"The migrations in {migrations.versions}")
    commands = parser.add_subparsers(dest="command", required=True)
    revision = commands.add_parser("revision", help="write the next revision from the models")
    revision.add_argument("-m", "--message", required=True, help="what the revision changes")
    args = parser.parse_args(argv)
    path = write_revision(migrations, args.message)
    print(f"wrote {path}" if path else "the models and migrations agree: nothing to write")
