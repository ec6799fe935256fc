"""Session fixtures: real nats-server and SeaweedFS S3 on free loopback ports; a real
PostgreSQL (started on first use) and a database per test module on each backend."""

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.databases import BACKENDS, new_database
from support.postgres import PostgresServer

from rondo.contracts.config import ServiceSettings
from rondo.contracts.storage import S3Client, make_s3_client
from rondo.stack.servers import NatsServer, S3Credentials, SeaweedS3, write_s3_config

# Workers of a stack started as root run user code as other uids (rondo.worker_agent.sandbox),
# which must pass through every folder above their run folders; pytest makes its temporary
# folders 0700. 0711 lets other uids pass, never list; a stack's data dir guards its content.
_pytest_getbasetemp = pytest.TempPathFactory.getbasetemp
_pytest_mktemp = pytest.TempPathFactory.mktemp


def _passable_basetemp(self: pytest.TempPathFactory) -> Path:
    base = _pytest_getbasetemp(self)
    for folder in (base, base.parent):
        if folder.stat().st_uid == os.geteuid() and folder.stat().st_mode & 0o011 != 0o011:
            os.chmod(folder, 0o711)
    return base


def _passable_mktemp(self: pytest.TempPathFactory, basename: str, numbered: bool = True) -> Path:
    path = _pytest_mktemp(self, basename, numbered)
    os.chmod(path, 0o711)
    return path


pytest.TempPathFactory.getbasetemp = _passable_basetemp  # type: ignore[method-assign]
pytest.TempPathFactory.mktemp = _passable_mktemp  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def nats_server(servers_dir: Path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=servers_dir / "nats")
    server.start(servers_dir / "nats.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database for this test module: its tests run on SQLite, then on PostgreSQL."""
    return new_database(request, request.param)


@pytest.fixture(scope="session")
def s3_admin() -> S3Credentials:
    return S3Credentials(
        access_key="rondo" + secrets.token_hex(6), secret_key=secrets.token_hex(20), name="admin"
    )


@pytest.fixture(scope="session")
def s3_server(servers_dir: Path, s3_admin: S3Credentials) -> Iterator[SeaweedS3]:
    config = servers_dir / "s3.json"
    write_s3_config(config, [s3_admin])
    server = SeaweedS3(data_dir=servers_dir / "seaweed", s3_config=config)
    server.start(servers_dir / "seaweed.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(s3_server: SeaweedS3, s3_admin: S3Credentials) -> S3Client:
    return make_s3_client(s3_server.endpoint, s3_admin.access_key, s3_admin.secret_key)


@pytest.fixture(scope="session")
def service_settings(
    nats_server: NatsServer,
    s3_server: SeaweedS3,
    s3_admin: S3Credentials,
    tmp_path_factory: pytest.TempPathFactory,
) -> ServiceSettings:
    """Settings a service would read from RONDO_* variables, pointing at the session servers."""
    return ServiceSettings(
        nats_url=nats_server.url,
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_admin.access_key,
        s3_secret_key=s3_admin.secret_key,
        data_dir=tmp_path_factory.mktemp("rondo-data"),
    )
