"""Streams, subject filters and durable consumer names: the bus layout, in one place.

Stored events live in JetStream streams; heartbeats and health checks are core NATS (a missed
heartbeat is information, not something to replay).
"""

from dataclasses import dataclass

from faststream.nats import JStream, StorageType
from nats.js.api import DiscardPolicy, StreamConfig

from rondo.contracts.events import LogBatch, WorkerHeartbeat

# Streams. `duplicate_window` makes `event_id` (sent as Nats-Msg-Id, keyed per sender by
# `rondo.contracts.bus.message_id`) a de-duplication key.
# Streams are declared by `rondo.contracts.bus.declare_streams` with the configured replica
# count; subscribers refer to them by name only (declare=False).
#
# Every stream is bounded by age and by size (`max_bytes`). What happens at the size limit is
# chosen per stream (`discard`):
# - Events that drive state (jobs, agents' commands): `DiscardPolicy.NEW`. A full stream
#   refuses the publish (the publisher gets an error and retries, the gateway's outbox keeps
#   the submission) instead of silently deleting the oldest messages, which may be events a
#   durable consumer has not read yet. A full jobs stream is an outage you see, not lost events.
# - Logs and dead letters: `DiscardPolicy.OLD`. They are records, not state: dropping the
#   oldest lines keeps the newest flowing (the per-job cap in the worker-agent's log tailer
#   keeps one job from filling the stream).
# The sizes total about 3.3 GiB per server, well under JetStream's default store limit on any
# host with a few GiB of disk; their ages are what the consumers need, see each stream.
GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_s: float
    max_bytes: int
    discard: DiscardPolicy

    def stream_config(self, replicas: int) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=300.0,
            max_age=self.max_age_s,
            max_bytes=self.max_bytes,
            discard=self.discard,
        )

    @property
    def ref(self) -> JStream:
        """The stream as a FastStream subscriber argument."""
        return JStream(name=self.name, declare=False)


def subject_matches(subject: str, pattern: str) -> bool:
    """NATS matching: `*` is one token, a final `>` one or more."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or token not in ("*", tokens[index]):
            return False
    return len(tokens) == len(wanted)


JOBS_STREAM = StreamSpec(
    "RONDO_JOBS",
    ("rondo.job.>", "rondo.run.>", "rondo.round.>", "rondo.artifact.>"),
    max_age_s=14 * 24 * 3600.0,
    max_bytes=1 * GiB,
    discard=DiscardPolicy.NEW,
)
AGENTS_STREAM = StreamSpec(
    "RONDO_AGENTS",
    ("rondo.agent.>",),
    max_age_s=3600.0,
    max_bytes=128 * MiB,
    discard=DiscardPolicy.NEW,
)
LOGS_STREAM = StreamSpec(
    "RONDO_LOGS",
    ("rondo.logs.>",),
    max_age_s=3 * 24 * 3600.0,
    max_bytes=2 * GiB,
    discard=DiscardPolicy.OLD,
)
# Events no consumer could ever handle (`rondo.contracts.consumers.DeadLetter`), one subject per
# durable consumer; kept a month so an operator can read what was set aside and why.
DEADLETTER_STREAM = StreamSpec(
    "RONDO_DEADLETTER",
    ("rondo.deadletter.>",),
    max_age_s=30 * 24 * 3600.0,
    max_bytes=128 * MiB,
    discard=DiscardPolicy.OLD,
)
ALL_STREAMS = (JOBS_STREAM, AGENTS_STREAM, LOGS_STREAM, DEADLETTER_STREAM)


def stream_of(subject: str) -> StreamSpec | None:
    """The stream that stores `subject`, or None for core NATS subjects (heartbeats)."""
    for spec in ALL_STREAMS:
        if any(subject_matches(subject, pattern) for pattern in spec.subjects):
            return spec
    return None


# The NATS object store that carries checkpoints and user out_dir files to the artifacts service.
STAGING_OBJECT_STORE = "rondo-staging"
# How long a staged object is kept (`ServiceSettings.nats_staging_max_age_s` overrides it). The
# artifacts service copies an object to S3 as soon as it reads its `artifact.staged` and deletes
# it; what is still there a day later belongs to an artifacts outage longer than the job
# stream's events are worth waiting for, or to a copy that failed for good.
STAGING_MAX_AGE_S = 24 * 3600.0


def staging_stream_name() -> str:
    """The JetStream stream behind the staging object store (NATS names it `OBJ_<bucket>`)."""
    return f"OBJ_{STAGING_OBJECT_STORE}"


# Core NATS subjects.
HEARTBEAT_FILTER = WorkerHeartbeat.filter_subject()


def health_subject(service: str) -> str:
    return f"rondo.health.{service}"


def agent_dispatch_subject(agent_id: str) -> str:
    return f"rondo.agent.{agent_id}.dispatch"


def agent_stop_subject(agent_id: str) -> str:
    return f"rondo.agent.{agent_id}.stop"


LOGS_FILTER = LogBatch.filter_subject()


class Durables:
    """Durable consumer names, one per (service, subject filter).

    A durable keeps the filter it was created with, so a name is never reused for another
    filter: those of agents' events end in `-by-agent` since their subjects name the agent."""

    SCHEDULER_SUBMITTED = "scheduler-job-submitted"
    SCHEDULER_CANCEL = "scheduler-job-cancel"
    SCHEDULER_RUN_PROCESS = "scheduler-run-process-by-agent"
    SCHEDULER_RUN_STARTED = "scheduler-run-started-by-agent"
    SCHEDULER_RUN_ENDED = "scheduler-run-ended-by-agent"
    SCHEDULER_ROUNDS = "scheduler-round-completed-by-agent"
    GATEWAY_STATE = "gateway-job-state"
    GATEWAY_PROGRESS = "gateway-job-progress"
    GATEWAY_FAILED = "gateway-job-failed"
    GATEWAY_OUTPUTS = "gateway-job-outputs-written"
    GATEWAY_ROUNDS = "gateway-round-completed-by-agent"
    GATEWAY_LOGS = "gateway-logs-by-agent"
    ARTIFACTS_SUBMITTED = "artifacts-job-submitted"
    ARTIFACTS_ROUNDS = "artifacts-round-completed-by-agent"
    ARTIFACTS_STAGED = "artifacts-artifact-staged-by-agent"
    ARTIFACTS_LOGS = "artifacts-logs-by-agent"
    ARTIFACTS_FINISHED = "artifacts-job-finished"
    ARTIFACTS_FAILED = "artifacts-job-failed"
    SCHEDULER_DEAD_LETTERS = "scheduler-dead-letters"

    @staticmethod
    def agent_dispatch(agent_id: str) -> str:
        return f"agent-{agent_id}-dispatch"

    @staticmethod
    def agent_stop(agent_id: str) -> str:
        return f"agent-{agent_id}-stop"
