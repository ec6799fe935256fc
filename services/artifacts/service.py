"""The artifacts service: a FastStream app whose handlers write a job's outputs.

Subscriptions (durable pull consumers):
- `job.submitted`  → remember `job_id → (bucket, prefix)`; the other events carry only job_id
- `round.completed` → checkpoints and reports (`rondo.artifacts.rounds`)
- `artifact.staged` → user `out_dir` files (`rondo.artifacts.staged_files`)
- `logs.*`          → log lines (`rondo.artifacts.logs`), uploaded every flush interval
- `job.finished` / `job.failed` → final flush of the logs and the reports, once the job's last
  round is recorded (or given up on after `artifacts_last_round_wait_s`); then
  `job.outputs_written` says the outputs no longer change
Outcome of an event: handled → ack; job not known yet, last round not recorded yet, or
S3/NATS/database trouble → nack with a growing delay (redelivered, never dropped); an event
that can never be handled (unsafe path, checksum mismatch, staged object gone) → logged and
rejected.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError
from faststream import FastStream
from faststream.exceptions import NackMessage, RejectMessage
from faststream.nats import NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.errors import Error as NatsError
from nats.js.api import ConsumerConfig
from sqlalchemy.exc import OperationalError

from rondo.artifacts.config import ArtifactsSettings
from rondo.artifacts.layout import JobLocation, UnsafePath
from rondo.artifacts.logs import BadLogSource, LogAssembler
from rondo.artifacts.rounds import RoundRecorder
from rondo.artifacts.staged_files import StagedFileCopier
from rondo.artifacts.staging import ChecksumMismatch, StagedObjectMissing, StagingArea
from rondo.artifacts.store import ArtifactsStore, JobNotKnown, make_store
from rondo.artifacts.writer import BucketWriter
from rondo.contracts.bus import declare_streams, make_broker, publish, register_health
from rondo.contracts.events import (
    ArtifactStaged,
    JobFailed,
    JobFinished,
    JobOutputsWritten,
    JobSubmitted,
    LogBatch,
    RoundCompleted,
    utc_now,
)
from rondo.contracts.storage import S3Client, platform_s3_client
from rondo.contracts.subjects import (
    JOBS_STREAM,
    LOGS_FILTER,
    LOGS_STREAM,
    Durables,
)
from rondo.contracts.telemetry import tag_job

SERVICE = "artifacts"
PULL_TIMEOUT_S = 1.0

logger = logging.getLogger(__name__)

NEVER_VALID = (UnsafePath, ChecksumMismatch, StagedObjectMissing, BadLogSource)
TRANSIENT = (BotoCoreError, ClientError, NatsError, OperationalError, OSError, TimeoutError)


class LastRoundPending(Exception):
    """An ended job's last round is not recorded yet (its `round.completed` is still on the
    way): its outputs are not final."""


@dataclass
class RetryPolicy:
    """Maps a handler's exception to the message's fate (see the module docstring)."""

    base_delay_s: float
    max_delay_s: float

    def delay(self, message: NatsMessage) -> float:
        """Doubles with each delivery: base, 2*base, 4*base, ... up to the maximum."""
        delivered = message.raw_message.metadata.num_delivered or 1
        return min(self.base_delay_s * 2 ** min(delivered - 1, 16), self.max_delay_s)

    @asynccontextmanager
    async def handling(self, message: NatsMessage, what: str) -> AsyncIterator[None]:
        try:
            yield
        except JobNotKnown as error:
            delay = self.delay(message)
            logger.info("%s: job %s not known yet; retry in %.1f s", what, error, delay)
            raise NackMessage(delay=delay) from error
        except LastRoundPending as error:
            delay = self.delay(message)
            logger.info("%s: %s; retry in %.1f s", what, error, delay)
            raise NackMessage(delay=delay) from error
        except NEVER_VALID as error:
            logger.error("%s refused: %s: %s", what, type(error).__name__, error)
            raise RejectMessage() from error
        except TRANSIENT as error:
            delay = self.delay(message)
            logger.warning("%s failed (%r); retry in %.1f s", what, error, delay)
            raise NackMessage(delay=delay) from error


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
    retry = RetryPolicy(settings.artifacts_retry_delay_s, settings.artifacts_max_retry_delay_s)
    broker = make_broker(settings, SERVICE)
    pull = PullSub(timeout=PULL_TIMEOUT_S)

    def long_work() -> ConsumerConfig:
        """Consumers whose handler copies a whole checkpoint or file may take minutes."""
        return ConsumerConfig(ack_wait=settings.artifacts_ack_wait_s)

    @broker.subscriber(
        JobSubmitted.SUBJECT,
        stream=JOBS_STREAM.ref,
        durable=Durables.ARTIFACTS_SUBMITTED,
        pull_sub=pull,
    )
    async def on_job_submitted(event: JobSubmitted, message: NatsMessage) -> None:
        """Remember where the job's outputs go."""
        tag_job(event.job_id)
        async with retry.handling(message, "job.submitted"):
            store.save_location(JobLocation(event.job_id, event.bucket, event.prefix))

    @broker.subscriber(
        RoundCompleted.SUBJECT,
        stream=JOBS_STREAM.ref,
        durable=Durables.ARTIFACTS_ROUNDS,
        pull_sub=pull,
        config=long_work(),
    )
    async def on_round_completed(event: RoundCompleted, message: NatsMessage) -> None:
        """Checkpoint → model_out/, reports → files_out/."""
        tag_job(event.job_id)
        async with retry.handling(message, f"round {event.round} of job {event.job_id}"):
            await handlers.round_recorder().record(event)

    @broker.subscriber(
        ArtifactStaged.SUBJECT,
        stream=JOBS_STREAM.ref,
        durable=Durables.ARTIFACTS_STAGED,
        pull_sub=pull,
        config=long_work(),
    )
    async def on_artifact_staged(event: ArtifactStaged, message: NatsMessage) -> None:
        """A user out_dir file → files_out/<path>."""
        tag_job(event.job_id)
        async with retry.handling(message, f"staged {event.path!r} of job {event.job_id}"):
            await handlers.staged_copier().copy(event)

    @broker.subscriber(
        LOGS_FILTER,
        stream=LOGS_STREAM.ref,
        durable=Durables.ARTIFACTS_LOGS,
        pull_sub=pull,
    )
    async def on_log_batch(event: LogBatch, message: NatsMessage) -> None:
        """Store the lines; the periodic flush uploads them."""
        tag_job(event.job_id)
        async with retry.handling(message, f"logs of job {event.job_id}"):
            logs.add(event)

    async def finish(event: JobFinished | JobFailed) -> None:
        """Final flush; then announce the outputs final, unless the last round is still on
        its way (retried until `artifacts_last_round_wait_s` after the job ended)."""
        job_id = event.job_id
        store.save_location(JobLocation(job_id, event.bucket, event.prefix))
        await logs.flush(job_id)
        covered = await handlers.round_recorder().refresh(job_id)
        if covered < event.last_round:
            waited_s = (utc_now() - event.occurred_at).total_seconds()
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

    @broker.subscriber(
        JobFinished.SUBJECT,
        stream=JOBS_STREAM.ref,
        durable=Durables.ARTIFACTS_FINISHED,
        pull_sub=pull,
    )
    async def on_job_finished(event: JobFinished, message: NatsMessage) -> None:
        """Final flush of logs and reports."""
        tag_job(event.job_id)
        async with retry.handling(message, f"job.finished of {event.job_id}"):
            await finish(event)

    @broker.subscriber(
        JobFailed.SUBJECT,
        stream=JOBS_STREAM.ref,
        durable=Durables.ARTIFACTS_FAILED,
        pull_sub=pull,
    )
    async def on_job_failed(event: JobFailed, message: NatsMessage) -> None:
        """Final flush; everything written so far stays (partial outputs are kept)."""
        tag_job(event.job_id)
        async with retry.handling(message, f"job.failed of {event.job_id}"):
            await finish(event)

    register_health(broker, SERVICE)

    async def connect() -> None:
        await broker.connect()
        object_store = await declare_streams(broker, settings.nats_stream_replicas)
        handlers.open_staging(StagingArea(object_store, settings.work_dir))

    app = FastStream(
        broker,
        logger=logging.getLogger(f"rondo.{SERVICE}"),
        on_startup=[connect],
        after_startup=[logs.start],
        after_shutdown=[logs.stop],
    )
    return ArtifactsService(app=app, broker=broker, handlers=handlers, settings=settings)
