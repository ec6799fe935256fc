"""Every event on the Rondo bus, one pydantic model each.

Each event names its NATS subject (`subject`), so publishers never spell subjects by hand and
`event_id` becomes the JetStream de-duplication id (`Nats-Msg-Id`). Subjects and streams are
listed in `rondo.contracts.subjects`.

Every event a worker-agent publishes carries the agent's id in its subject
(`rondo.run.<agent_id>.started`, ...): the bus lets an agent publish only on subjects naming
itself (`rondo.contracts.bus_permissions`), so the subject says who sent an event, and a consumer
refuses an event whose body does not name the subject it arrived on (`arrived_on_own_subject`).
Consumers subscribe with `filter_subject()`, the template with every field a wildcard.
"""

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal
from uuid import uuid4

from pydantic import BaseModel, Field

from rondo.contracts.clock import utc_now
from rondo.contracts.layout import CLIENT_PREFIX, SERVER_SITE, log_file_name
from rondo.contracts.states import JobState, WorkerPanel, WorkerSlotView
from rondo.contracts.training import GpuRequirements, Timing, TrainingConfig

SCHEMA_VERSION = 1


class Event(BaseModel):
    """Fields every event carries."""

    SUBJECT: ClassVar[str]

    event_id: str = Field(default_factory=lambda: uuid4().hex)
    occurred_at: datetime = Field(default_factory=utc_now)
    schema_version: int = SCHEMA_VERSION

    @property
    def subject(self) -> str:
        """The concrete subject; templates are filled from the event's own fields."""
        return self.SUBJECT.format(**self.__dict__)

    @classmethod
    def filter_subject(cls) -> str:
        """The subject filter matching every instance: each `{field}` token becomes `*`
        (what a consumer of every sender subscribes to)."""
        return _TEMPLATE_FIELD.sub("*", cls.SUBJECT)


# A `{field}` of a subject template; fields only ever fill whole tokens.
_TEMPLATE_FIELD = re.compile(r"\{[a-z_]+\}")


def arrived_on_own_subject(event: Event, subject: str) -> bool:
    """Whether `event` arrived on the subject its own fields name. An agent may publish only
    on subjects naming itself, so an event arriving elsewhere than its body says (a body
    naming another agent, job or run than the subject) is forged and must be dropped."""
    return event.subject == subject


class JobEvent(Event):
    job_id: str


class AgentEvent(JobEvent):
    """An event a worker-agent publishes about a job: its subject names the agent."""

    agent_id: str = Field(description="The publishing agent; its token in the subject")


# --- Gateway -> scheduler ------------------------------------------------------------------


class JobSubmitted(JobEvent):
    """A user's job passed validation; its files are in the user's bucket under `prefix`."""

    SUBJECT: ClassVar[str] = "rondo.job.submitted"

    user_id: str
    bucket: str
    name: str = Field(description="The job's folder name: outputs go under jobs/{name}/")
    prefix: str = Field(description="Bucket prefix of the job folder, e.g. 'jobs/digits/'")
    shard_keys: list[str] = Field(description="Shard object keys, sorted: slot n gets shard n")
    has_custom_app: bool = Field(description="The job brings its own NVFlare configs/")
    warm_start_key: str | None = Field(default=None, description="Checkpoint under model/")
    config: TrainingConfig = Field(default_factory=TrainingConfig)
    gpu: GpuRequirements = Field(default_factory=GpuRequirements)
    timing: Timing = Field(default_factory=Timing)


class CancelMode(StrEnum):
    CANCEL = "cancel"  # -> CANCELLED
    STOP = "stop"  # -> FINISHED with the completed rounds' outputs


class JobCancelRequested(JobEvent):
    SUBJECT: ClassVar[str] = "rondo.job.cancel_requested"

    mode: CancelMode = CancelMode.CANCEL
    requested_by: str


# --- Scheduler -> everyone -------------------------------------------------------------------


class FailureCause(StrEnum):
    WORKER_TIMEOUT = "worker_timeout"
    OOM = "oom"
    MISSING_FILE = "missing_file"
    NCCL_ERROR = "nccl_error"
    NAME_NOT_DEFINED = "name_not_defined"
    MANIFEST_MISSING = "manifest_missing"
    VALIDATION = "validation"
    OTHER = "other"


class JobError(BaseModel):
    """Why a job failed, as the user sees it: what happened, its class, what to do."""

    message: str
    cause: FailureCause
    hint: str


class JobSnapshot(BaseModel):
    """What the scheduler knows of a job at one moment; the gateway's read model stores it."""

    state: JobState
    reason: str = ""
    current_round: int = Field(default=0, description="Rounds completed so far")
    num_rounds: int
    workers: WorkerPanel = Field(default_factory=WorkerPanel)
    slots: list[WorkerSlotView] = Field(default_factory=list)
    run_id: str | None = None
    error: JobError | None = Field(
        default=None, description="Set once FAILED, so the failure arrives with the state"
    )


class JobStateChanged(JobEvent):
    """A state transition (PENDING -> RUNNING, ...), with the job's snapshot after it."""

    SUBJECT: ClassVar[str] = "rondo.job.state_changed"

    previous_state: JobState | None
    snapshot: JobSnapshot


class JobProgress(JobEvent):
    """The job's reason, worker panel or round changed without a state transition."""

    SUBJECT: ClassVar[str] = "rondo.job.progress"

    snapshot: JobSnapshot


class JobFailed(JobEvent):
    SUBJECT: ClassVar[str] = "rondo.job.failed"

    bucket: str
    prefix: str
    message: str
    cause: FailureCause = FailureCause.OTHER
    hint: str = ""
    last_round: int = 0


class JobFinished(JobEvent):
    """The job ended with outputs: FINISHED (all rounds, or stopped) or CANCELLED."""

    SUBJECT: ClassVar[str] = "rondo.job.finished"

    bucket: str
    prefix: str
    state: Literal[JobState.FINISHED, JobState.CANCELLED]
    last_round: int


# --- Artifacts -> everyone ------------------------------------------------------------------


class JobOutputsWritten(JobEvent):
    """An ended job's model files and reports are final: `global_model.pt`, `best_model.pt`,
    `model_round_{r}.pt`, `metrics.json`, `training_log.txt` and `fl_round_complete.json` hold
    its last round (before this they may still hold an earlier one), and the logs received so
    far are written. Clients' out_dir files are staged on their own and may still follow."""

    SUBJECT: ClassVar[str] = "rondo.job.outputs_written"

    rounds_written: int = Field(
        description="Rounds whose checkpoint and report lines are written (latest round + 1)"
    )


# --- Scheduler -> one worker-agent ------------------------------------------------------------


class JobFile(BaseModel):
    """A file of the user's job folder, fetched by presigned GET URL."""

    path: str = Field(description="Relative to the job folder, e.g. 'scripts/model_def.py'")
    url: str


class ServerAssignment(BaseModel):
    """Run the NVFlare FL server of one run and submit the run's NVFlare job to it."""

    kit_url: str = Field(description="Presigned GET of the server's startup kit (zip)")
    admin_kit_url: str = Field(description="Presigned GET of the admin's startup kit (zip)")
    admin_name: str
    fed_learn_port: int
    admin_port: int
    site_names: list[str] = Field(description="Client sites of this run, slot order")
    start_round: int = 0
    initial_checkpoint_url: str | None = Field(
        default=None, description="Global weights to start from (resume or warm start)"
    )
    job_files: list[JobFile]
    has_custom_app: bool
    config: TrainingConfig
    timing: Timing = Field(default_factory=Timing)


class ClientAssignment(BaseModel):
    """Run one NVFlare client (one worker slot) of a run."""

    slot: int
    site_name: str
    generation: int = Field(
        default=0, description="How many times this slot was replaced before this run (0: never)"
    )
    kit_url: str
    shard_key: str
    shard_url: str = Field(description="Presigned GET of this slot's shard ZIP (1 hour)")
    job_files: list[JobFile]
    device: str = Field(default="cpu", description="'cpu' or 'cuda:N'")
    gpu_index: int | None = None


class JobDispatched(JobEvent):
    """One worker-agent's share of a run: the FL server role and/or client slots."""

    SUBJECT: ClassVar[str] = "rondo.agent.{agent_id}.dispatch"

    agent_id: str
    run_id: str
    server: ServerAssignment | None = None
    clients: list[ClientAssignment] = Field(default_factory=list)
    server_host: str = Field(description="Host clients dial to reach the FL server")


class RunStopRequested(JobEvent):
    """Kill every process of this run on the agent (whole process trees)."""

    SUBJECT: ClassVar[str] = "rondo.agent.{agent_id}.stop"

    agent_id: str
    run_id: str
    reason: str = ""


# --- Worker-agents -> scheduler ---------------------------------------------------------------


class Slot(BaseModel):
    """One unit of placement on a worker host: a GPU, or the CPU of a CPU-only host."""

    index: int
    kind: Literal["gpu", "cpu"]
    model: str = Field(description="e.g. 'rtx_4090', 'h100', or 'cpu'")
    total_memory_mb: int
    free_memory_mb: int


class RunningProcess(BaseModel):
    job_id: str
    run_id: str
    role: Literal["server", "client"]
    site_name: str
    slot: int | None = None
    pid: int | None = None


class WorkerHeartbeat(Event):
    """Sent every heartbeat interval on core NATS (not stored: silence is the signal)."""

    SUBJECT: ClassVar[str] = "rondo.worker.heartbeat.{agent_id}"

    agent_id: str
    host: str = Field(description="Address other hosts use to reach this agent's FL server")
    slots: list[Slot]
    fl_port_range: tuple[int, int] = Field(description="Ports this host lends to FL servers")
    running: list[RunningProcess] = Field(default_factory=list)
    started_at: datetime


class ProcessPhase(StrEnum):
    PREPARING = "preparing"  # downloading shard, installing requirements
    STARTED = "started"  # NVFlare process spawned
    READY = "ready"  # server listening / client registered
    EXITED = "exited"  # process tree ended (see exit_code / error)


class RunProcessChanged(AgentEvent):
    """A server or client process of a run changed phase on an agent."""

    SUBJECT: ClassVar[str] = "rondo.run.{agent_id}.process"

    run_id: str
    role: Literal["server", "client"]
    site_name: str
    slot: int | None = None
    phase: ProcessPhase
    exit_code: int | None = None
    error: str | None = Field(default=None, description="Why it failed, with the last log lines")
    expected: bool = Field(default=False, description="The exit was asked for (stop/cancel/end)")


class RunStarted(AgentEvent):
    """The NVFlare run is deployed to every client and its rounds are starting."""

    SUBJECT: ClassVar[str] = "rondo.run.{agent_id}.started"

    run_id: str
    nvflare_job_id: str


class RunEnded(AgentEvent):
    """The NVFlare run ended on the server (all rounds done, aborted, or crashed)."""

    SUBJECT: ClassVar[str] = "rondo.run.{agent_id}.ended"

    run_id: str
    completed: bool = Field(description="Every round of the run completed")
    error: str | None = None


class WorkerContribution(BaseModel):
    site_name: str
    slot: int
    samples: int
    metrics: dict[str, float] = Field(default_factory=dict)


class RoundCompleted(AgentEvent):
    """A FedAvg round was aggregated and its global checkpoint persisted.

    The checkpoint travels in the NATS object store (`STAGING_OBJECT_STORE`), never in a plain
    message; `checkpoint_object` names it. It is a plain torch state dict.
    """

    SUBJECT: ClassVar[str] = "rondo.round.{agent_id}.completed"

    run_id: str
    round: int = Field(description="0-based round number")
    num_rounds: int
    metrics: dict[str, float] = Field(description="Sample-weighted mean over contributions")
    contributions: list[WorkerContribution]
    duration_s: float
    checkpoint_object: str
    checkpoint_sha256: str


class ArtifactStaged(AgentEvent):
    """A file for the job's outputs waits in the NATS object store; artifacts writes it."""

    SUBJECT: ClassVar[str] = "rondo.artifact.{agent_id}.staged"

    run_id: str
    object_name: str
    path: str = Field(description="Relative to jobs/{name}/, e.g. files_out/client_0/round_1/x")
    size: int
    sha256: str
    generation: int = Field(
        default=0,
        description="The writing client slot's generation: a file is never replaced by one "
        "from an older generation (a cut-off worker's late upload after its replacement's)",
    )


class LogSource(BaseModel):
    role: Literal["server", "client"]
    slot: int | None = None

    @property
    def file_name(self) -> str:
        return log_file_name(
            SERVER_SITE if self.role == "server" else f"{CLIENT_PREFIX}{self.slot}"
        )


class LogBatch(AgentEvent):
    """Consecutive log lines of one process; `first_line` numbers them for idempotent writes."""

    SUBJECT: ClassVar[str] = "rondo.logs.{agent_id}.{job_id}"

    run_id: str
    source: LogSource
    first_line: int = Field(description="Index of lines[0] in this source's log of the run")
    lines: list[str]


# --- Health -------------------------------------------------------------------------------


class HealthReply(BaseModel):
    """Answer of a service to a request on `rondo.health.<service>`."""

    service: str
    instance: str
    healthy: bool
    detail: dict[str, Any] = Field(default_factory=dict)


ALL_EVENTS: tuple[type[Event], ...] = (
    JobSubmitted,
    JobCancelRequested,
    JobStateChanged,
    JobProgress,
    JobFailed,
    JobFinished,
    JobOutputsWritten,
    JobDispatched,
    RunStopRequested,
    WorkerHeartbeat,
    RunProcessChanged,
    RunStarted,
    RunEnded,
    RoundCompleted,
    ArtifactStaged,
    LogBatch,
)
