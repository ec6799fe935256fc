"""HTTP API schemas shared by the gateway and its clients (CLI, SDK, dashboard)."""

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from rondo.contracts.events import FailureCause, WorkerContribution
from rondo.contracts.states import JobState, WorkerPanel, WorkerSlotView
from rondo.contracts.training import GpuRequirements, Timing, TrainingConfig

JOB_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class ErrorBody(BaseModel):
    """The one error envelope of every route."""

    code: str
    message: str
    hint: str = ""


class JobCreate(BaseModel):
    """A job submission. The job's files are already in the bucket under jobs/{name}/."""

    name: str = Field(pattern=JOB_NAME_PATTERN, description="Folder name under jobs/")
    config: TrainingConfig = Field(default_factory=TrainingConfig)
    gpu: GpuRequirements = Field(default_factory=GpuRequirements)
    timing: Timing = Field(default_factory=Timing)


class StateTransition(BaseModel):
    state: JobState
    at: datetime


class JobError(BaseModel):
    message: str
    cause: FailureCause
    hint: str


class JobPublic(BaseModel):
    id: str
    name: str
    state: JobState
    reason: str = ""
    created_at: datetime
    updated_at: datetime
    transitions: list[StateTransition] = Field(default_factory=list)
    current_round: int = 0
    num_rounds: int
    workers: WorkerPanel = Field(default_factory=WorkerPanel)
    slots: list[WorkerSlotView] = Field(default_factory=list)
    error: JobError | None = None
    config: TrainingConfig
    files_prefix: str = Field(description="Bucket prefix of the job's folder")


class JobList(BaseModel):
    items: list[JobPublic]
    total: int


class RoundPublic(BaseModel):
    """One completed FedAvg round, as `round.completed` reported it."""

    round: int = Field(description="0-based round number")
    num_rounds: int
    run_id: str = Field(description="NVFlare run that completed it (replacement runs differ)")
    metrics: dict[str, float]
    contributions: list[WorkerContribution]
    duration_s: float
    completed_at: datetime


class JobMetrics(BaseModel):
    """Per-round metrics of a job, in round order (the latest run's result for each round)."""

    job_id: str
    rounds: list[RoundPublic]


class JobStreamEvent(StrEnum):
    """`event:` names of `GET /api/jobs/{id}/events` (Server-Sent Events, JSON `data:`)."""

    SNAPSHOT = "snapshot"  # JobPublic, sent first on connect
    STATE = "state"  # JobPublic after a state transition
    PROGRESS = "progress"  # JobPublic after a reason/panel/round change
    FAILED = "failed"  # JobPublic with its `error` set
    ROUND = "round"  # RoundPublic
