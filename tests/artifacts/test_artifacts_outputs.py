"""The artifacts service end to end: real nats-server + SeaweedFS, service broker in-process."""

import asyncio
import hashlib
import io
import json
import logging
import secrets
from datetime import timedelta
from pathlib import Path

import nats
import pytest
import torch
from artifacts_helpers import Bus, download, eventually, list_keys, read_key
from nats.aio.msg import Msg
from torch import nn

from rondo.artifacts.layout import JobLocation
from rondo.artifacts.logs import separator_line
from rondo.artifacts.service import ArtifactsService
from rondo.artifacts.store import JobNotKnown
from rondo.contracts.events import (
    ArtifactStaged,
    JobFailed,
    JobFinished,
    JobOutputsWritten,
    JobSubmitted,
    LogBatch,
    LogSource,
    RoundCompleted,
    WorkerContribution,
    utc_now,
)
from rondo.contracts.states import JobState
from rondo.contracts.storage import S3Client

pytestmark = pytest.mark.timeout(60)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)


def checkpoint(fill: float) -> bytes:
    model = TinyNet()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(fill)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def submitted(job_id: str, bucket: str) -> JobSubmitted:
    name = f"job-{job_id}"
    return JobSubmitted(
        job_id=job_id,
        user_id="u1",
        bucket=bucket,
        name=name,
        prefix=f"jobs/{name}/",
        shard_keys=[f"jobs/{name}/shards/shard_0.zip", f"jobs/{name}/shards/shard_1.zip"],
        has_custom_app=False,
    )


def job_known(service: ArtifactsService, job_id: str) -> bool:
    try:
        service.handlers.store.location(job_id)
    except JobNotKnown:
        return False
    return True


async def known_job(service: ArtifactsService, bus: Bus, bucket: str) -> JobSubmitted:
    """A new job, submitted and remembered by the service."""
    job = submitted(secrets.token_hex(6), bucket)
    await bus.publish(job)
    await eventually(lambda: job_known(service, job.job_id), what="job submitted")
    return job


async def stage_round(
    bus: Bus, job_id: str, run_id: str, round_number: int, fill: float, loss: float
) -> RoundCompleted:
    data = checkpoint(fill)
    name = f"{job_id}/{run_id}/round-{round_number}.pt"
    await bus.stage(name, data)
    return RoundCompleted(
        agent_id="agent-1",
        job_id=job_id,
        run_id=run_id,
        round=round_number,
        num_rounds=3,
        metrics={"loss": loss, "accuracy": 1.0 - loss},
        contributions=[
            WorkerContribution(site_name="site-0-0", slot=0, samples=100, metrics={"loss": loss}),
            WorkerContribution(site_name="site-1-0", slot=1, samples=60, metrics={"loss": loss}),
        ],
        duration_s=1.5,
        checkpoint_object=name,
        checkpoint_sha256=hashlib.sha256(data).hexdigest(),
    )


async def test_rounds_write_models_and_reports_once_per_round(
    artifacts_service: ArtifactsService,
    bus: Bus,
    s3: S3Client,
    bucket: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_id = secrets.token_hex(6)
    job = submitted(job_id, bucket)
    location = JobLocation(job_id, bucket, job.prefix)

    # Round 0 arrives before the job is known: it is retried, not dropped.
    round_0 = await stage_round(bus, job_id, "run-a", 0, fill=0.0, loss=1.0)
    with caplog.at_level(logging.INFO, logger="rondo.contracts.consumers"):
        await bus.publish(round_0)
        await eventually(
            lambda: f"job {job_id} not known yet" in caplog.text, what="round 0 put back"
        )
    await bus.publish(job)
    await eventually(lambda: job_known(artifacts_service, job_id), what="job submitted")
    await eventually(lambda: read_key(s3, bucket, location.model_round(0)) is not None)

    round_1 = await stage_round(bus, job_id, "run-a", 1, fill=1.0, loss=0.5)
    round_2 = await stage_round(bus, job_id, "run-a", 2, fill=2.0, loss=0.7)
    await bus.publish(round_1)
    await bus.publish(round_2)
    # A replay of round 2 (same checkpoint, object already consumed), then round 1 again from
    # the resumed run: round 1 is replaced (last writer wins); its worse loss makes round 2 the
    # best round, so best_model.pt is copied from model_round_2.pt.
    await bus.publish(round_2.model_copy(update={"event_id": secrets.token_hex(16)}))
    round_1_resumed = await stage_round(bus, job_id, "run-b", 1, fill=11.0, loss=0.9)
    await bus.publish(round_1_resumed)

    def metrics() -> dict[str, object]:
        body = read_key(s3, bucket, location.metrics_json)
        return json.loads(body) if body else {}

    await eventually(
        lambda: [r["run_id"] for r in metrics().get("rounds", [])] == ["run-a", "run-b", "run-a"],
        what="metrics.json with the resumed round 1",
    )
    for event in (round_0, round_1, round_2, round_1_resumed):
        await bus.wait_deleted(event.checkpoint_object)

    prefix = job.prefix
    assert list_keys(s3, bucket, prefix) == {
        f"{prefix}model_out/model_round_0.pt",
        f"{prefix}model_out/model_round_1.pt",
        f"{prefix}model_out/model_round_2.pt",
        f"{prefix}model_out/global_model.pt",
        f"{prefix}model_out/best_model.pt",
        f"{prefix}files_out/metrics.json",
        f"{prefix}files_out/training_log.txt",
        f"{prefix}files_out/fl_round_complete.json",
    }

    document = metrics()
    assert [r["round"] for r in document["rounds"]] == [0, 1, 2]
    assert document["best_round"] == 2
    assert document["best_metric"] == "loss"
    assert document["best_loss"] == pytest.approx(0.7)
    assert document["best_accuracy"] == pytest.approx(0.3)
    first = document["rounds"][0]
    assert first["loss"] == pytest.approx(1.0)
    assert first["metrics"] == {"accuracy": pytest.approx(0.0)}
    assert first["samples"] == {"client_0": 100, "client_1": 60}
    assert first["duration_s"] == pytest.approx(1.5)
    assert first["completed_at"]

    log_lines = read_key(s3, bucket, location.training_log).decode().splitlines()  # type: ignore[union-attr]
    assert len(log_lines) == 3
    assert "round 1/3" in log_lines[1] and "loss=0.9" in log_lines[1]

    rounds_json = json.loads(read_key(s3, bucket, location.rounds_json))  # type: ignore[arg-type]
    assert [r["round"] for r in rounds_json["rounds"]] == [0, 1, 2]
    assert [c["client"] for c in rounds_json["rounds"][2]["contributions"]] == [
        "client_0",
        "client_1",
    ]

    # Plain torch loads every checkpoint into the model.
    def weights(key: str) -> float:
        model = TinyNet()
        model.load_state_dict(torch.load(download(s3, bucket, key, tmp_path)))
        return model.fc.weight[0, 0].item()

    assert weights(location.global_model) == 2.0  # latest round
    assert weights(location.best_model) == 2.0  # lowest loss once round 1 was redone
    assert weights(location.model_round(1)) == 11.0
    assert weights(location.model_round(0)) == 0.0


async def test_staged_files_outside_files_out_are_refused(
    artifacts_service: ArtifactsService, bus: Bus, s3: S3Client, bucket: str
) -> None:
    job = await known_job(artifacts_service, bus, bucket)
    job_id = job.job_id

    async def staged(path: str, data: bytes, sha256: str | None = None) -> ArtifactStaged:
        name = f"{job_id}/{secrets.token_hex(4)}"
        await bus.stage(name, data)
        event = ArtifactStaged(
            agent_id="agent-1",
            job_id=job_id,
            run_id="run-a",
            object_name=name,
            path=path,
            size=len(data),
            sha256=sha256 or hashlib.sha256(data).hexdigest(),
        )
        await bus.publish(event)
        return event

    refused = [
        await staged(path, b"evil")
        for path in (
            "../escape.txt",
            "/etc/passwd",
            "files_out/../model_out/global_model.pt",
            "model_out/global_model.pt",
            "files_out/metrics.json",
            "files_out/server.log",
            "scripts/model_def.py",
        )
    ]
    corrupt = await staged("files_out/client_0/round_0/bad.txt", b"data", sha256="0" * 64)
    good = await staged("files_out/client_0/round_1/pred.txt", b"prediction\n")
    good_key = f"{job.prefix}files_out/client_0/round_1/pred.txt"

    await eventually(lambda: read_key(s3, bucket, good_key) == b"prediction\n", what="good file")
    assert list_keys(s3, bucket, job.prefix) == {good_key}
    for event in [*refused, corrupt, good]:
        await bus.wait_deleted(event.object_name)


async def test_a_cut_off_workers_late_files_never_replace_its_replacements(
    artifacts_service: ArtifactsService, bus: Bus, s3: S3Client, bucket: str
) -> None:
    job = await known_job(artifacts_service, bus, bucket)
    job_id = job.job_id
    path = "files_out/client_0/round_2/pred.txt"
    key = f"{job.prefix}{path}"

    async def staged(run_id: str, generation: int, data: bytes) -> ArtifactStaged:
        name = f"{job_id}/{run_id}/client_0/round_2/pred.txt"
        await bus.stage(name, data)
        event = ArtifactStaged(
            agent_id="agent-1",
            job_id=job_id,
            run_id=run_id,
            object_name=name,
            path=path,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            generation=generation,
        )
        await bus.publish(event)
        await bus.wait_deleted(name)
        return event

    await staged("run-replacement", 1, b"from the replacement\n")
    assert read_key(s3, bucket, key) == b"from the replacement\n"
    # The cut-off worker (generation 0 of slot 0) is back and uploads its spooled round 2.
    await staged("run-first", 0, b"from the cut-off worker\n")
    assert read_key(s3, bucket, key) == b"from the replacement\n"
    # The same generation (here: a rerun of the round) still replaces it.
    await staged("run-third", 1, b"rerun\n")
    assert read_key(s3, bucket, key) == b"rerun\n"


async def test_log_batches_are_assembled_once_per_line(
    artifacts_service: ArtifactsService, bus: Bus, s3: S3Client, bucket: str
) -> None:
    job = await known_job(artifacts_service, bus, bucket)
    job_id = job.job_id
    location = JobLocation(job_id, bucket, job.prefix)

    server = LogSource(role="server")
    client_0 = LogSource(role="client", slot=0)

    def batch(source: LogSource, run_id: str, first: int, lines: list[str]) -> LogBatch:
        return LogBatch(
            agent_id="agent-1",
            job_id=job_id,
            run_id=run_id,
            source=source,
            first_line=first,
            lines=lines,
        )

    batches = [
        batch(server, "run-a", 0, ["s0", "s1", "s2"]),
        batch(server, "run-a", 0, ["s0", "s1", "s2"]),  # redelivered by the agent
        batch(client_0, "run-a", 0, ["c0", "c1\n"]),
        batch(server, "run-a", 2, ["s2", "s3", "s4"]),  # overlaps the first batch
        batch(client_0, "run-a", 1, ["c1", "c2"]),
        batch(server, "run-b", 0, ["t0", "t1"]),  # the resumed run continues the file
        batch(server, "run-a", 3, ["s3", "s4"]),  # a late duplicate of the first run
    ]
    for event in batches:
        await bus.publish(event)
    await bus.publish(batches[0])  # same event_id: JetStream drops it

    expected_server = ["s0", "s1", "s2", "s3", "s4", separator_line("run-b"), "t0", "t1"]
    expected_client = ["c0", "c1", "c2"]

    def log(file_name: str) -> list[str] | None:
        body = read_key(s3, bucket, location.log_file(file_name))
        return body.decode().splitlines() if body is not None else None

    await eventually(lambda: log("server.log") == expected_server, what="server.log")
    await eventually(lambda: log("client_0.log") == expected_client, what="client_0.log")

    # JobFinished flushes at once and leaves the assembled logs as they are.
    await bus.publish(batch(client_0, "run-b", 0, ["d0"]))
    await bus.publish(
        JobFinished(
            job_id=job_id,
            bucket=bucket,
            prefix=job.prefix,
            state=JobState.FINISHED,
            last_round=0,
        )
    )
    await eventually(
        lambda: log("client_0.log") == [*expected_client, separator_line("run-b"), "d0"],
        what="client_0.log after the job finished",
    )
    assert log("server.log") == expected_server


async def test_outputs_are_announced_written_once_the_last_round_is_in(
    artifacts_service: ArtifactsService, bus: Bus, s3: S3Client, bucket: str
) -> None:
    """`job.outputs_written` comes only when the reports and `global_model.pt` hold the job's
    last round, even when `job.finished` overtakes that round's event; a round that never
    arrives is given up after `artifacts_last_round_wait_s`."""
    job = await known_job(artifacts_service, bus, bucket)
    location = JobLocation(job.job_id, bucket, job.prefix)
    announced: list[JobOutputsWritten] = []

    async def on_message(message: Msg) -> None:
        announced.append(JobOutputsWritten.model_validate_json(message.data))

    def announcements(job_id: str) -> list[JobOutputsWritten]:
        return [event for event in announced if event.job_id == job_id]

    def log_lines() -> int:
        body = read_key(s3, bucket, location.training_log)
        return len(body.splitlines()) if body else 0

    listener = await nats.connect(artifacts_service.settings.nats_servers)
    try:
        await listener.subscribe(JobOutputsWritten.SUBJECT, cb=on_message)
        await bus.publish(await stage_round(bus, job.job_id, "run-a", 0, fill=0.0, loss=1.0))
        await eventually(lambda: log_lines() == 1, what="round 0 recorded")

        finished = JobFinished(
            job_id=job.job_id,
            bucket=bucket,
            prefix=job.prefix,
            state=JobState.FINISHED,
            last_round=2,
        )
        await bus.publish(finished)
        await bus.publish(finished)  # same event_id: JetStream drops it
        await asyncio.sleep(1.5)  # several redeliveries of job.finished (0.2-0.5 s apart)
        assert announcements(job.job_id) == []

        await bus.publish(await stage_round(bus, job.job_id, "run-a", 1, fill=1.0, loss=0.5))
        await eventually(lambda: bool(announcements(job.job_id)), what="outputs written")
        assert [e.rounds_written for e in announcements(job.job_id)] == [2]
        assert log_lines() == 2
        pointers = artifacts_service.handlers.store.model_pointers(job.job_id)
        assert pointers.global_round == 1

        # The last round never comes: announced anyway once the wait is over.
        lost = await known_job(artifacts_service, bus, bucket)
        wait_s = artifacts_service.settings.artifacts_last_round_wait_s
        await bus.publish(
            JobFailed(
                job_id=lost.job_id,
                bucket=bucket,
                prefix=lost.prefix,
                message="worker lost",
                last_round=3,
                occurred_at=utc_now() - timedelta(seconds=wait_s + 1),
            )
        )
        await eventually(lambda: bool(announcements(lost.job_id)), what="outputs given up")
        assert [e.rounds_written for e in announcements(lost.job_id)] == [0]
    finally:
        await listener.close()
