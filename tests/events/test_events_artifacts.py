"""The artifacts service's consumers under faults and forgeries (its own nats-server, the
session's SeaweedFS behind a relay that can be cut): a round whose write fails (S3 unreachable)
is redelivered until it is written; a job's bucket and prefix come only from its first
`job.submitted`, so a forged `job.failed` (or a second `job.submitted`) naming another bucket
writes nothing there."""

import asyncio
import hashlib
import io
import json
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import torch
from events_helpers import Relay, Watcher, eventually
from faststream.nats import NatsBroker
from nats.js.object_store import ObjectStore

from rondo.artifacts.config import ArtifactsSettings
from rondo.artifacts.layout import JobLocation
from rondo.artifacts.service import ArtifactsService, build_service
from rondo.artifacts.store import JobNotKnown
from rondo.contracts.bus import declare_streams, make_broker, publish
from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import (
    JobFailed,
    JobOutputsWritten,
    JobSubmitted,
    LogBatch,
    LogSource,
    RoundCompleted,
    WorkerContribution,
)
from rondo.contracts.storage import S3Client, make_s3_client

pytestmark = pytest.mark.timeout(90)

AGENT = "agent-1"


@pytest.fixture(scope="module")
def artifacts_settings(
    events_settings: ServiceSettings, tmp_path_factory: pytest.TempPathFactory
) -> ArtifactsSettings:
    values = events_settings.model_dump()
    values["data_dir"] = tmp_path_factory.mktemp("artifacts-data")
    return ArtifactsSettings(**values, artifacts_log_flush_interval_s=0.3)


@pytest.fixture(scope="module")
async def relay(artifacts_settings: ArtifactsSettings) -> AsyncIterator[tuple[Relay, str]]:
    """A cuttable path to the session's S3."""
    url = urlsplit(artifacts_settings.s3_endpoint)
    relay = Relay(url.hostname or "127.0.0.1", url.port or 80)
    endpoint = await relay.start()
    yield relay, endpoint
    await relay.stop()


@pytest.fixture(scope="module")
async def artifacts(
    artifacts_settings: ArtifactsSettings, relay: tuple[Relay, str]
) -> AsyncIterator[ArtifactsService]:
    """The service, reaching S3 through the relay."""
    s = artifacts_settings
    s3 = make_s3_client(relay[1], s.s3_access_key, s.s3_secret_key, s.s3_region)
    service = build_service(artifacts_settings, s3=s3)
    async with service.app:
        yield service


@pytest.fixture(scope="module")
async def producer(
    artifacts: ArtifactsService, artifacts_settings: ArtifactsSettings
) -> AsyncIterator[tuple[NatsBroker, ObjectStore]]:
    broker = make_broker(artifacts_settings, "test-producer")
    await broker.connect()
    yield broker, await declare_streams(broker, replicas=1)
    await broker.stop()


def bucket_name() -> str:
    return f"user-{secrets.token_hex(4)}"


def submitted(job_id: str, bucket: str) -> JobSubmitted:
    return JobSubmitted(
        job_id=job_id,
        user_id="u1",
        bucket=bucket,
        name=job_id,
        prefix=f"jobs/{job_id}/",
        shard_keys=[f"jobs/{job_id}/shards/shard_0.zip"],
        has_custom_app=False,
    )


def keys(s3: S3Client, bucket: str) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def known(service: ArtifactsService, job_id: str) -> JobLocation | None:
    try:
        return service.handlers.store.location(job_id)
    except JobNotKnown:
        return None


async def staged_round(staging: ObjectStore, job_id: str) -> RoundCompleted:
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 1).state_dict(), buffer)
    data = buffer.getvalue()
    name = f"{job_id}/run-1/round-0.pt"
    await staging.put(name, data)
    return RoundCompleted(
        job_id=job_id,
        agent_id=AGENT,
        run_id="run-1",
        round=0,
        num_rounds=1,
        metrics={"loss": 0.5},
        contributions=[WorkerContribution(site_name="site-0-0", slot=0, samples=10)],
        duration_s=1.0,
        checkpoint_object=name,
        checkpoint_sha256=hashlib.sha256(data).hexdigest(),
    )


async def test_a_round_whose_write_fails_is_redelivered_until_written(
    artifacts: ArtifactsService,
    producer: tuple[NatsBroker, ObjectStore],
    relay: tuple[Relay, str],
    s3: S3Client,
) -> None:
    broker, staging = producer
    job_id = f"job-{secrets.token_hex(4)}"
    bucket = bucket_name()
    s3.create_bucket(Bucket=bucket)
    await publish(broker, submitted(job_id, bucket))
    await eventually(lambda: known(artifacts, job_id), "the job known")
    relay[0].cut()  # S3 unreachable for the service
    try:
        await publish(broker, await staged_round(staging, job_id))
        await asyncio.sleep(2.0)  # several tries, each failing
        assert artifacts.handlers.store.round(job_id, 0) is None
    finally:
        relay[0].restore()
    model = f"jobs/{job_id}/model_out/global_model.pt"
    await eventually(lambda: model in keys(s3, bucket), "the round written", timeout_s=30)
    assert artifacts.handlers.store.round(job_id, 0) is not None


async def test_a_forged_end_event_naming_another_bucket_writes_nothing_there(
    artifacts: ArtifactsService,
    producer: tuple[NatsBroker, ObjectStore],
    s3: S3Client,
    watcher: Watcher,
) -> None:
    broker, _ = producer
    await watcher.watch(JobOutputsWritten.SUBJECT)
    own, victim = bucket_name(), bucket_name()
    for bucket in (own, victim):
        s3.create_bucket(Bucket=bucket)
    job_id = f"job-{secrets.token_hex(4)}"
    await publish(broker, submitted(job_id, own))
    await eventually(lambda: known(artifacts, job_id), "the job known")
    # A second job.submitted (a replay or a forgery) cannot move the job either.
    await publish(broker, submitted(job_id, victim))
    lines = LogBatch(
        job_id=job_id,
        agent_id=AGENT,
        run_id="run-1",
        source=LogSource(role="server"),
        first_line=0,
        lines=["hello"],
    )
    await publish(broker, lines)
    forged = JobFailed(
        job_id=job_id, bucket=victim, prefix="jobs/stolen/", message="forged", last_round=0
    )
    await publish(broker, forged)

    log_key = f"jobs/{job_id}/files_out/server.log"
    await eventually(lambda: log_key in keys(s3, own), "the job's log written to its bucket")
    await eventually(
        lambda: [m for m in watcher.messages if json.loads(m.data)["job_id"] == job_id],
        "the job's outputs announced written",
    )
    assert known(artifacts, job_id) == JobLocation(job_id, own, f"jobs/{job_id}/")
    assert keys(s3, victim) == set()
