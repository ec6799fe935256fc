"""The scheduler on a real bus and S3, with real NVFlare provisioning.

Simulated agents send heartbeats; a job submitted over the bus is placed, provisioned and
dispatched (presigned URLs that really download); simulated run events then drive it to
FINISHED. It runs against its own nats-server so its durable consumers never see the jobs that
other tests left in the session's streams (and never take them).
"""

import asyncio
import io
import os
import secrets
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import pytest
import pytest_asyncio
from faststream.nats import NatsBroker

from rondo.contracts.bus import declare_streams, make_broker, publish
from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import (
    Event,
    HealthReply,
    JobDispatched,
    JobFinished,
    JobProgress,
    JobStateChanged,
    JobSubmitted,
    RoundCompleted,
    RunEnded,
    RunStarted,
    RunStopRequested,
    Slot,
    WorkerHeartbeat,
)
from rondo.contracts.states import JobState
from rondo.contracts.storage import S3Client
from rondo.contracts.subjects import health_subject
from rondo.contracts.training import TrainingConfig
from rondo.scheduler.config import SchedulerSettings
from rondo.scheduler.service import build_app
from rondo.stack.servers import NatsServer, SeaweedS3

JOB_FILES = {
    "scripts/model_def.py": b"import torch\n",
    "requirements/requirements.txt": b"",
    "configs/meta.json": b"{}",
}
SHARDS = {"shards/shard_0.zip": b"zero", "shards/shard_1.zip": b"one"}
NOT_FOR_AGENTS = {"files_out/server.log": b"old", "model_out/global_model.pt": b"old"}


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Observer:
    """Everything the scheduler publishes, seen on core NATS as it happens."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def of(self, kind: type[Event], job_id: str) -> list:
        return [e for e in self.events if isinstance(e, kind) and e.job_id == job_id]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    root = tmp_path_factory.mktemp("scheduler-nats")
    server = NatsServer(store_dir=root / "store")
    server.start(root / "nats.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def settings(
    own_nats: NatsServer,
    service_settings: ServiceSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> SchedulerSettings:
    values = service_settings.model_dump()
    values |= {
        "nats_url": own_nats.url,
        "data_dir": tmp_path_factory.mktemp("scheduler-data"),
        "platform_bucket": f"platform-{secrets.token_hex(4)}",
    }
    return SchedulerSettings(**values)


@pytest_asyncio.fixture
async def bus(settings: SchedulerSettings) -> AsyncIterator[tuple[NatsBroker, Observer]]:
    """The scheduler running in-process, and a broker that acts as gateway and agents."""
    app, _ = build_app(settings)
    observer = Observer()
    broker = make_broker(settings, "test-bus")
    for kind in (JobDispatched, RunStopRequested):
        broker.subscriber(kind.SUBJECT.replace("{agent_id}", "*"))(_collect(observer, kind))
    for kind in (JobStateChanged, JobProgress, JobFinished):
        broker.subscriber(kind.SUBJECT)(_collect(observer, kind))
    await broker.connect()
    await declare_streams(broker, replicas=1)
    await broker.start()
    async with app:
        yield broker, observer
    await broker.stop()


def _collect(observer: Observer, kind: type[Event]) -> Callable[..., object]:
    async def handler(event: kind) -> None:  # type: ignore[valid-type]
        observer.events.append(event)

    handler.__name__ = f"collect_{kind.__name__}"
    return handler


def heartbeat(agent_id: str, ports: tuple[int, int]) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        agent_id=agent_id,
        host="127.0.0.1",
        slots=[Slot(index=0, kind="cpu", model="cpu", total_memory_mb=4096, free_memory_mb=4096)],
        fl_port_range=ports,
        started_at=datetime(2026, 11, 25, tzinfo=UTC),
    )


async def beat_forever(broker: NatsBroker, beats: list[WorkerHeartbeat]) -> None:
    while True:
        for beat in beats:
            await publish(broker, beat.model_copy(update={"occurred_at": datetime.now(UTC)}))
        await asyncio.sleep(0.5)


def upload_job(s3: S3Client, bucket: str, prefix: str) -> None:
    s3.create_bucket(Bucket=bucket)
    for path, body in {**JOB_FILES, **SHARDS, **NOT_FOR_AGENTS}.items():
        s3.put_object(Bucket=bucket, Key=prefix + path, Body=body)


async def fetch(client: httpx.AsyncClient, url: str) -> bytes:
    response = await client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content


def kit_files(content: bytes) -> set[str]:
    return set(zipfile.ZipFile(io.BytesIO(content)).namelist())


@pytest.mark.timeout(60)
async def test_submitted_job_is_dispatched_and_driven_to_finished(
    bus: tuple[NatsBroker, Observer], s3: S3Client, settings: SchedulerSettings
) -> None:
    broker, observer = bus
    agents = [heartbeat("agent-a", (9100, 9109)), heartbeat("agent-b", (9200, 9209))]
    beating = asyncio.create_task(beat_forever(broker, agents))
    try:
        job_id = f"job-{secrets.token_hex(4)}"
        bucket, prefix = f"user-{secrets.token_hex(4)}", "jobs/digits/"
        upload_job(s3, bucket, prefix)
        await asyncio.sleep(0.6)  # both agents heard
        submitted_at = time.monotonic()
        await publish(
            broker,
            JobSubmitted(
                job_id=job_id,
                user_id="user-1",
                bucket=bucket,
                name="digits",
                prefix=prefix,
                shard_keys=[prefix + key for key in sorted(SHARDS)],
                has_custom_app=True,
                config=TrainingConfig(num_rounds=2),
            ),
        )
        await eventually(lambda: observer.of(JobStateChanged, job_id) != [], "PENDING")
        assert time.monotonic() - submitted_at < 1.0
        await eventually(lambda: len(observer.of(JobDispatched, job_id)) == 2, "2 dispatches")
        dispatches: list[JobDispatched] = observer.of(JobDispatched, job_id)
        await check_dispatches(dispatches, s3, settings, bucket, prefix)

        run_id = dispatches[0].run_id
        await publish(
            broker,
            RunStarted(agent_id="agent-1", job_id=job_id, run_id=run_id, nvflare_job_id="nv-1"),
        )
        await eventually(lambda: len(observer.of(JobStateChanged, job_id)) == 2, "RUNNING")
        for round_number in range(2):
            await publish(broker, round_completed(job_id, run_id, round_number))
            await eventually(
                lambda r=round_number: any(
                    p.snapshot.current_round == r + 1 for p in observer.of(JobProgress, job_id)
                ),
                f"round {round_number}",
            )
        await publish(
            broker, RunEnded(agent_id="agent-1", job_id=job_id, run_id=run_id, completed=True)
        )
        await eventually(lambda: observer.of(JobFinished, job_id) != [], "JobFinished")
        await eventually(lambda: len(observer.of(RunStopRequested, job_id)) == 2, "stops")
    finally:
        beating.cancel()

    changes = observer.of(JobStateChanged, job_id)
    assert [(c.previous_state, c.snapshot.state) for c in changes] == [
        (None, JobState.PENDING),
        (JobState.PENDING, JobState.RUNNING),
        (JobState.RUNNING, JobState.FINISHED),
    ]
    assert changes[-1].snapshot.current_round == 2
    [finished] = observer.of(JobFinished, job_id)
    assert (finished.state, finished.last_round, finished.bucket) == (JobState.FINISHED, 2, bucket)
    stops = observer.of(RunStopRequested, job_id)
    assert sorted(s.agent_id for s in stops) == ["agent-a", "agent-b"]
    assert {s.run_id for s in stops} == {run_id}


async def check_dispatches(
    dispatches: list[JobDispatched],
    s3: S3Client,
    settings: SchedulerSettings,
    bucket: str,
    prefix: str,
) -> None:
    assert sorted(d.agent_id for d in dispatches) == ["agent-a", "agent-b"]
    assert len({d.run_id for d in dispatches}) == 1
    [with_server] = [d for d in dispatches if d.server is not None]
    server = with_server.server
    assert server is not None
    low, high = (9100, 9109) if with_server.agent_id == "agent-a" else (9200, 9209)
    assert (server.fed_learn_port, server.admin_port) == (low, low + 1) and high > low
    assert server.site_names == ["site-0-0", "site-1-0"]
    assert all(d.server_host == "127.0.0.1" for d in dispatches)
    clients = sorted((c for d in dispatches for c in d.clients), key=lambda c: c.slot)
    assert [(c.slot, c.site_name, c.device) for c in clients] == [
        (0, "site-0-0", "cpu"),
        (1, "site-1-0", "cpu"),
    ]
    assert {c.slot for c in dispatches[0].clients} != {c.slot for c in dispatches[1].clients}

    async with httpx.AsyncClient(timeout=10) as http:
        assert kit_files(await fetch(http, server.kit_url)) >= {
            "startup/fed_server.json",
            "startup/sub_start.sh",
        }
        assert "startup/fed_admin.json" in kit_files(await fetch(http, server.admin_kit_url))
        for client in clients:
            assert "startup/fed_client.json" in kit_files(await fetch(http, client.kit_url))
            assert await fetch(http, client.shard_url) == SHARDS[f"shards/shard_{client.slot}.zip"]
            assert client.shard_key == f"{prefix}shards/shard_{client.slot}.zip"
        for files in [server.job_files, *(c.job_files for c in clients)]:
            assert sorted(f.path for f in files) == sorted(JOB_FILES)
            for file in files:
                assert await fetch(http, file.url) == JOB_FILES[file.path]

    run_id = dispatches[0].run_id
    listing = s3.list_objects_v2(
        Bucket=settings.platform_bucket, Prefix=f"kits/{with_server.job_id}/{run_id}/"
    )
    names = {item["Key"].rsplit("/", 1)[1] for item in listing.get("Contents", [])}
    spares = {f"site-{slot}-{generation}.zip" for slot in (0, 1) for generation in (1, 2)}
    assert names == {"server.zip", "admin@rondo.local.zip", "site-0-0.zip", "site-1-0.zip"} | spares


def round_completed(job_id: str, run_id: str, round_number: int) -> RoundCompleted:
    return RoundCompleted(
        agent_id="agent-1",
        job_id=job_id,
        run_id=run_id,
        round=round_number,
        num_rounds=2,
        metrics={"loss": 1.0 / (round_number + 1)},
        contributions=[],
        duration_s=1.0,
        checkpoint_object=f"{job_id}/{run_id}/round_{round_number}.pt",
        checkpoint_sha256="0" * 64,
    )


@pytest.mark.timeout(60)
async def test_module_entry_point_answers_health(tmp_path: Path, s3_server: SeaweedS3) -> None:
    server = NatsServer(store_dir=tmp_path / "nats")
    server.start(tmp_path / "nats.log")
    env = {
        **os.environ,
        "RONDO_NATS_URL": server.url,
        "RONDO_S3_ENDPOINT": s3_server.endpoint,
        "RONDO_DATA_DIR": str(tmp_path / "data"),
        "RONDO_SCHEDULER_DATABASE_URL": f"sqlite:///{tmp_path / 'db' / 'scheduler.db'}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "rondo.scheduler"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = await nats.connect(server.url)
    try:
        reply: HealthReply | None = None
        for _ in range(100):
            try:
                message = await client.request(health_subject("scheduler"), b"", timeout=0.5)
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await asyncio.sleep(0.2)
                continue
            reply = HealthReply.model_validate_json(message.data)
            break
        assert reply is not None and reply.healthy and reply.service == "scheduler"
        assert reply.detail["workers_online"] == 0
        assert (tmp_path / "db" / "scheduler.db").exists()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0
        assert (tmp_path / "data" / "logs" / "scheduler.log").exists()
    finally:
        await client.close()
        if process.poll() is None:
            process.kill()
        server.stop()
