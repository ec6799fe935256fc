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
from rondo.contracts.subjects import STAGING_OBJECT_STORE


@pytest.fixture(scope="module")
def artifacts_settings(
    service_settings: ServiceSettings,
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
) -> ArtifactsSettings:
    values = service_settings.model_dump()
    values["data_dir"] = tmp_path_factory.mktemp("artifacts-data")
    return ArtifactsSettings(
        **values,
        artifacts_database_url=database_url,
        artifacts_log_flush_interval_s=0.3,
        artifacts_retry_delay_s=0.2,
        artifacts_max_retry_delay_s=0.5,
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
    await declare_streams(broker, replicas=1)
    yield Bus(broker, await broker.object_storage(STAGING_OBJECT_STORE))
    await broker.stop()
