"""The artifacts service: a FastStream app whose handlers write a job's outputs.

Subscriptions (durable consumers, `rondo.contracts.consumers`):
- `job.submitted`  → remember `job_id → (bucket, prefix)`, once: the first `job.submitted` of a
  job is the only source of where its outputs go (no later event can move them)
- `round.completed` → checkpoints and reports (`rondo.artifacts.rounds`)
- `artifact.staged` → user `out_dir` files (`rondo.artifacts.staged_files`)
- `logs.*`          → log lines (`rondo.artifacts.logs`), uploaded every flush interval
- `job.finished` / `job.failed` → final flush of the logs and the reports, once the job's last
  round is recorded (or given up on after `artifacts_last_round_wait_s`); then
  `job.outputs_written` says the outputs no longer change
Outcome of an event (the consumer policy): handled → ack; job not known yet, last round not
recorded yet, or S3/NATS/database trouble → the handler raises and the event is redelivered
with a growing delay (never dropped); an event that can never be handled (unsafe path,
checksum mismatch, staged object gone, a log source naming no file: `NeverValid`) → dead
letter, which fails the job.
"""

import logging
from dataclasses import dataclass, field

from faststream import FastStream
from faststream.nats import NatsBroker

from rondo.artifacts.catch_up import CatchUpClock
from rondo.artifacts.config import ArtifactsSettings
from rondo.artifacts.layout import JobLocation, normalize_prefix
from rondo.artifacts.logs import LogAssembler
from rondo.artifacts.rounds import RoundRecorder
from rondo.artifacts.staged_files import StagedFileCopier
from rondo.artifacts.staging import StagingArea
from rondo.artifacts.store import ArtifactsStore, JobNotKnown, make_store
from rondo.artifacts.writer import BucketWriter
from rondo.contracts.bus import declare_streams, make_broker, publish, register_health
from rondo.contracts.consumers import DurableConsumers, NeverValid, RetryLater
from rondo.contracts.events import (
    ArtifactStaged,
    JobFailed,
    JobFinished,
    JobOutputsWritten,
    JobSubmitted,
    LogBatch,
    RoundCompleted,
)
from rondo.contracts.storage import S3Client, platform_s3_client
from rondo.contracts.subjects import Durables

SERVICE = "artifacts"

logger = logging.getLogger(__name__)


class LastRoundPending(RetryLater):
    """An ended job's last round is not recorded yet (its `round.completed` is still on the
    way): its outputs are not final."""


class BadLocation(NeverValid):
    """A `job.submitted` whose prefix names no folder."""


@dataclass
class Handlers:
    """The parts the handlers use; the staging-backed ones exist once NATS is connected."""

    store: ArtifactsStore
    writer: BucketWriter
    logs: LogAssembler
    rounds: RoundRecorder | None = field(default=None)
    staged: StagedFileCopier | None = field(default=None)

    def open_staging(self, staging: StagingArea) -> None:
        self.rounds = RoundRecorder(self.store, self.writer, staging)
        self.staged = StagedFileCopier(self.store, self.writer, staging)

    def round_recorder(self) -> RoundRecorder:
        if self.rounds is None:
            raise RuntimeError("the staging object store is not open yet")
        return self.rounds

    def staged_copier(self) -> StagedFileCopier:
        if self.staged is None:
            raise RuntimeError("the staging object store is not open yet")
        return self.staged


@dataclass
class ArtifactsService:
    """The FastStream app plus its parts (tests reach the store and broker through it)."""

    app: FastStream
    broker: NatsBroker
    handlers: Handlers
    settings: ArtifactsSettings


def build_service(
    settings: ArtifactsSettings,
    store: ArtifactsStore | None = None,
    s3: S3Client | None = None,
) -> ArtifactsService:
    """Wire the broker, subscribers, health reply and startup/shutdown hooks.

    `app.run()` (or `async with service.app:`) connects, declares the streams and the staging
    store, starts consuming and the periodic log flush; stopping stops consuming, then flushes.
    """
    store = store or make_store(settings.database_url)
    writer = BucketWriter(s3 or platform_s3_client(settings), settings.multipart_threshold_bytes)
    logs = LogAssembler(store, writer, settings.work_dir, settings.artifacts_log_flush_interval_s)
    handlers = Handlers(store=store, writer=writer, logs=logs)
    broker = make_broker(settings, SERVICE)
    consumers = DurableConsumers(broker, settings)
    catch_up = CatchUpClock()
    # Consumers whose handler copies a whole checkpoint or file may take minutes.
    long_work = settings.artifacts_ack_wait_s

    @consumers(JobSubmitted, Durables.ARTIFACTS_SUBMITTED)
    async def on_job_submitted(event: JobSubmitted) -> None:
        """Remember where the job's outputs go: the first `job.submitted` of a job decides."""
        try:
            prefix = normalize_prefix(event.prefix)
        except ValueError as error:
            raise BadLocation(f"job {event.job_id}: {error}") from error
        asked = JobLocation(event.job_id, event.bucket, prefix)
        recorded = store.save_location(asked)
        if (recorded.bucket, recorded.prefix) != (asked.bucket, asked.prefix):
            logger.warning(
                "job %s: a job.submitted naming %s/%s ignored; its outputs go to %s/%s",
                event.job_id, asked.bucket, asked.prefix, recorded.bucket, recorded.prefix,
            )  # fmt: skip

    @consumers(RoundCompleted, Durables.ARTIFACTS_ROUNDS, ack_wait_s=long_work)
    async def on_round_completed(event: RoundCompleted) -> None:
        """Checkpoint → model_out/, reports → files_out/."""
        await handlers.round_recorder().record(event)
        catch_up.progressed(event.job_id)

    @consumers(ArtifactStaged, Durables.ARTIFACTS_STAGED, ack_wait_s=long_work)
    async def on_artifact_staged(event: ArtifactStaged) -> None:
        """A user out_dir file → files_out/<path>."""
        await handlers.staged_copier().copy(event)

    @consumers(LogBatch, Durables.ARTIFACTS_LOGS)
    async def on_log_batch(event: LogBatch) -> None:
        """Store the lines; the periodic flush uploads them."""
        logs.add(event)

    async def finish(event: JobFinished | JobFailed) -> None:
        """Final flush; then announce the outputs final, unless the last round is still on
        its way (retried until `artifacts_last_round_wait_s` without progress on the job,
        counted from when this service caught up with it: `CatchUpClock`, not the job's end,
        so a long artifacts outage cannot announce outputs before the final model).

        The job's bucket and prefix are those its `job.submitted` named: the end event's own
        are not used (a forged one must not redirect writes)."""
        job_id = event.job_id
        waited_s = catch_up.waited_s(job_id)
        try:
            store.location(job_id)
        except JobNotKnown:
            if waited_s < settings.artifacts_last_round_wait_s:
                raise  # its job.submitted may still be on the way: retried
            logger.error(
                "job %s: its end came %.0f s ago but its job.submitted never did: "
                "no outputs to write",
                job_id,
                waited_s,
            )
            catch_up.forget(job_id)
            return
        await logs.flush(job_id)
        covered = await handlers.round_recorder().refresh(job_id)
        if covered < event.last_round:
            if waited_s < settings.artifacts_last_round_wait_s:
                raise LastRoundPending(
                    f"round {event.last_round - 1} of job {job_id} is not recorded yet"
                )
            logger.warning(
                "job %s ended after %d rounds but only %d were recorded in %.0f s: "
                "outputs announced without the rest",
                job_id,
                event.last_round,
                covered,
                waited_s,
            )
        # Derived id: a redelivered end event announces once (JetStream de-duplication).
        written = JobOutputsWritten(
            event_id=f"{event.event_id}.outputs", job_id=job_id, rounds_written=covered
        )
        await publish(broker, written)
        catch_up.forget(job_id)

    @consumers(JobFinished, Durables.ARTIFACTS_FINISHED)
    async def on_job_finished(event: JobFinished) -> None:
        """Final flush of logs and reports."""
        await finish(event)

    @consumers(JobFailed, Durables.ARTIFACTS_FAILED)
    async def on_job_failed(event: JobFailed) -> None:
        """Final flush; everything written so far stays (partial outputs are kept)."""
        await finish(event)

    register_health(broker, SERVICE)

    async def connect() -> None:
        await broker.connect()
        object_store = await declare_streams(
            broker, settings.nats_stream_replicas, settings.nats_staging_max_age_s
        )
        handlers.open_staging(StagingArea(object_store, settings.work_dir))

    app = FastStream(
        broker,
        logger=logging.getLogger(f"rondo.{SERVICE}"),
        on_startup=[connect],
        after_startup=[logs.start],
        after_shutdown=[logs.stop],
    )
    return ArtifactsService(app=app, broker=broker, handlers=handlers, settings=settings)
