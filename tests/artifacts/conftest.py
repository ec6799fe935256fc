"""Artifacts fixtures: the service running in-process against the session's NATS and S3, its
database on SQLite and then on PostgreSQL."""

import secrets
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from artifacts_helpers import Bus

from rondo.artifacts.config import ArtifactsSettings
from rondo.artifacts.service import ArtifactsService, build_service
from rondo.contracts.bus import declare_streams, make_broker
from rondo.contracts.config import ServiceSettings
from rondo.contracts.storage import S3Client


@pytest.fixture(scope="module")
def artifacts_settings(
    service_settings: ServiceSettings,
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
) -> ArtifactsSettings:
    values = service_settings.model_dump()
    values |= {
        "data_dir": tmp_path_factory.mktemp("artifacts-data"),
        "consumer_retry_delay_s": 0.2,
        "consumer_max_retry_delay_s": 0.5,
    }
    return ArtifactsSettings(
        **values,
        artifacts_database_url=database_url,
        artifacts_log_flush_interval_s=0.3,
        # Counted from when the service caught up with a job (`CatchUpClock`): short, so the
        # test of a last round that never comes does not wait the default 120 s.
        artifacts_last_round_wait_s=4.0,
    )


@pytest.fixture(scope="module")
def bucket(s3: S3Client) -> str:
    name = f"user-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    return name


@pytest_asyncio.fixture(scope="module")
async def artifacts_service(
    artifacts_settings: ArtifactsSettings,
) -> AsyncIterator[ArtifactsService]:
    service = build_service(artifacts_settings)
    async with service.app:
        yield service


@pytest_asyncio.fixture(scope="module")
async def bus(artifacts_service: ArtifactsService) -> AsyncIterator[Bus]:
    broker = make_broker(artifacts_service.settings, "test-producer")
    await broker.connect()
    yield Bus(broker, await declare_streams(broker, replicas=1))
    await broker.stop()
