"""A throwaway PostgreSQL 15 server for the tests, and empty databases on it.

Debian's `postgresql` package (scripts/test installs it). The server refuses to run as root, so
as root `initdb` and `pg_ctl` run as the `postgres` user, in a temporary folder that user owns.
It listens on a free loopback port, trusts every local login, and never fsyncs (the data is
thrown away).
"""

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import psycopg
from psycopg import sql

from rondo.stack.ports import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
INSTALL_HINT = "install it with `apt-get install -y postgresql` (scripts/test does)"


@dataclass
class PostgresServer:
    """One PostgreSQL cluster; `start` it, make databases with `create_database`, `stop` it."""

    host: str = "127.0.0.1"
    port: int = 0
    root: Path | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "the server was not started"
        return self.root / "data"

    def start(self, timeout_s: float = 30) -> None:
        if not (PG_BIN / "initdb").exists():
            raise FileNotFoundError(f"{PG_BIN / 'initdb'} is missing: {INSTALL_HINT}")
        self.root = Path(tempfile.mkdtemp(prefix="rondo-postgres-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.port = self.port or free_port(self.host)
        self._as_postgres(
            "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", SUPERUSER,
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self._as_postgres(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.root / "server.log"),
            "-o", f"-h {self.host} -p {self.port} -k {self.root} -F -c max_connections=300",
            "-t", str(int(timeout_s)), "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        if self.root is None:
            return
        with contextlib.suppress(RuntimeError):
            self._as_postgres("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of `database` (psycopg 3 driver)."""
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "rondo") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{uuid4().hex[:12]}"
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of `url`, closing whatever still connects to it."""
        name = sql.Identifier(url.rsplit("/", 1)[1])
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))

    def _admin(self, statement: sql.Composed) -> None:
        conninfo = f"host={self.host} port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(statement)

    def _as_postgres(self, program: str, *args: str) -> None:
        """Run a server program as the `postgres` user (as ourselves when not root)."""
        as_user = ["runuser", "-u", SUPERUSER, "--"] if os.geteuid() == 0 else []
        argv: Sequence[str] = [*as_user, str(PG_BIN / program), *args]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")
