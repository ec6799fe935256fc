"""Gateway fixtures: the app served by a real uvicorn on a free port, against the session's
real nats-server and SeaweedFS, its database on SQLite and then on PostgreSQL; users made with
the operator functions; bus access."""

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import nats
import pytest
import uvicorn
from faststream.nats import NatsBroker
from gateway_helpers import BusProbe, Gateway
from nats.aio.client import Client as NatsClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Engine
from sqlmodel import Session
from support.databases import BACKENDS, new_database

from rondo.contracts.bus import make_broker
from rondo.contracts.config import ServiceSettings
from rondo.gateway.app import create_app
from rondo.gateway.config import GatewaySettings
from rondo.gateway.db import init_db, make_engine
from rondo.gateway.users import NewUser, add_user


@pytest.fixture(scope="session", params=BACKENDS)
def gateway_database_url(request: pytest.FixtureRequest) -> str:
    """The running gateway's database: its tests run on SQLite, then on PostgreSQL."""
    return new_database(request, request.param)


@pytest.fixture(scope="session")
def gateway_settings(
    service_settings: ServiceSettings,
    tmp_path_factory: pytest.TempPathFactory,
    gateway_database_url: str,
) -> GatewaySettings:
    return GatewaySettings(
        **service_settings.model_dump(exclude={"data_dir"}),
        data_dir=tmp_path_factory.mktemp("gateway-data"),
        gateway_database_url=gateway_database_url,
        # Per key: tests use a fresh user (key) each, the rate-limit test exhausts its own.
        gateway_rate_limit_per_s=5.0,
        gateway_rate_limit_burst=40,
        gateway_worker_online_s=1.0,
    )


@pytest.fixture(scope="session")
async def gateway(gateway_settings: GatewaySettings) -> AsyncIterator[Gateway]:
    """`create_app` served by uvicorn (lifespan, SSE and all) on a free loopback port."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = create_app(gateway_settings, tracer_provider=provider)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(20):
        while not server.started:
            assert not task.done(), "uvicorn exited while starting"
            await asyncio.sleep(0.05)
    yield Gateway(url=f"http://127.0.0.1:{sock.getsockname()[1]}", app=app, spans=spans)
    server.should_exit = True
    await task
    sock.close()


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        yield http


@pytest.fixture
def make_user(gateway: Gateway) -> Callable[[], NewUser]:
    """Creates a user, their bucket and S3 key with the operator function."""

    def make() -> NewUser:
        suffix = secrets.token_hex(4)
        with Session(gateway.app.state.engine) as session:
            return add_user(
                session,
                gateway.app.state.storage_admin,
                gateway.app.state.secret_box,
                f"user-{suffix}",
                f"user-{suffix}",
                platform_bucket=gateway.app.state.settings.platform_bucket,
            )

    return make


@pytest.fixture
async def nats_client(service_settings: ServiceSettings) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(service_settings.nats_url)
    yield nc
    await nc.close()


@pytest.fixture
def probe(nats_client: NatsClient) -> Callable[[str], Awaitable[BusProbe]]:
    """Subscribe (core NATS) to a subject and collect what is published there."""

    async def subscribe(subject: str) -> BusProbe:
        watcher = BusProbe(subject)
        await nats_client.subscribe(subject, cb=watcher.handle)
        await nats_client.flush()
        return watcher

    return subscribe


@pytest.fixture
async def publisher(service_settings: ServiceSettings) -> AsyncIterator[NatsBroker]:
    """A plain broker that publishes events the way the scheduler and agents do."""
    broker = make_broker(service_settings, "test-publisher")
    await broker.connect()
    yield broker
    await broker.stop()


@pytest.fixture
def settings(service_settings: ServiceSettings, tmp_path: Path) -> GatewaySettings:
    """Settings of a gateway with its own SQLite database and data dir (operator functions)."""
    return GatewaySettings(
        **service_settings.model_dump(exclude={"data_dir"}),
        data_dir=tmp_path,
        gateway_database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
    )


@pytest.fixture
def engine(settings: GatewaySettings) -> Iterator[Engine]:
    """That database, migrated."""
    engine = make_engine(settings.database_url)
    init_db(engine)
    yield engine
    engine.dispose()
