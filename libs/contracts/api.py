"""HTTP API schemas shared by the gateway and its clients (CLI, SDK, dashboard)."""

from datetime import datetime

from pydantic import BaseModel, Field

from rondo.contracts.events import FailureCause
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
