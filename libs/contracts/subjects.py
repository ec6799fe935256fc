"""Streams, subject filters and durable consumer names: the bus layout, in one place.

Stored events live in JetStream streams; heartbeats and health checks are core NATS (a missed
heartbeat is information, not something to replay).
"""

from dataclasses import dataclass

from faststream.nats import JStream, StorageType
from nats.js.api import StreamConfig


# Streams. `duplicate_window` makes `event_id` (sent as Nats-Msg-Id) a de-duplication key.
# Streams are declared by `rondo.contracts.bus.declare_streams` with the configured replica
# count; subscribers refer to them by name only (declare=False).
@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_s: float

    def stream_config(self, replicas: int) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=300.0,
            max_age=self.max_age_s,
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
)
AGENTS_STREAM = StreamSpec("RONDO_AGENTS", ("rondo.agent.>",), max_age_s=3600.0)
LOGS_STREAM = StreamSpec("RONDO_LOGS", ("rondo.logs.>",), max_age_s=3 * 24 * 3600.0)
ALL_STREAMS = (JOBS_STREAM, AGENTS_STREAM, LOGS_STREAM)


def stream_of(subject: str) -> StreamSpec | None:
    """The stream that stores `subject`, or None for core NATS subjects (heartbeats)."""
    for spec in ALL_STREAMS:
        if any(subject_matches(subject, pattern) for pattern in spec.subjects):
            return spec
    return None


# The NATS object store that carries checkpoints and user out_dir files to the artifacts service.
STAGING_OBJECT_STORE = "rondo-staging"


def staging_stream_name() -> str:
    """The JetStream stream behind the staging object store (NATS names it `OBJ_<bucket>`)."""
    return f"OBJ_{STAGING_OBJECT_STORE}"


# Core NATS subjects.
HEARTBEAT_FILTER = "rondo.worker.heartbeat.*"


def health_subject(service: str) -> str:
    return f"rondo.health.{service}"


def agent_dispatch_subject(agent_id: str) -> str:
    return f"rondo.agent.{agent_id}.dispatch"


def agent_stop_subject(agent_id: str) -> str:
    return f"rondo.agent.{agent_id}.stop"


LOGS_FILTER = "rondo.logs.*"


class Durables:
    """Durable consumer names, one per (service, subject filter)."""

    SCHEDULER_SUBMITTED = "scheduler-job-submitted"
    SCHEDULER_CANCEL = "scheduler-job-cancel"
    SCHEDULER_RUN_PROCESS = "scheduler-run-process"
    SCHEDULER_RUN_STARTED = "scheduler-run-started"
    SCHEDULER_RUN_ENDED = "scheduler-run-ended"
    SCHEDULER_ROUNDS = "scheduler-round-completed"
    GATEWAY_STATE = "gateway-job-state"
    GATEWAY_PROGRESS = "gateway-job-progress"
    GATEWAY_FAILED = "gateway-job-failed"
    GATEWAY_OUTPUTS = "gateway-job-outputs-written"
    GATEWAY_ROUNDS = "gateway-round-completed"
    GATEWAY_LOGS = "gateway-logs"
    ARTIFACTS_SUBMITTED = "artifacts-job-submitted"
    ARTIFACTS_ROUNDS = "artifacts-round-completed"
    ARTIFACTS_STAGED = "artifacts-artifact-staged"
    ARTIFACTS_LOGS = "artifacts-logs"
    ARTIFACTS_FINISHED = "artifacts-job-finished"
    ARTIFACTS_FAILED = "artifacts-job-failed"

    @staticmethod
    def agent_dispatch(agent_id: str) -> str:
        return f"agent-{agent_id}-dispatch"

    @staticmethod
    def agent_stop(agent_id: str) -> str:
        return f"agent-{agent_id}-stop"
