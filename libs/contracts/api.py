"""HTTP API schemas shared by the gateway and its clients (CLI, SDK, dashboard)."""

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from rondo.contracts.events import JobError, Slot, WorkerContribution
from rondo.contracts.job_checks import Problem
from rondo.contracts.states import JobState, WorkerPanel, WorkerSlotView
from rondo.contracts.training import GpuRequirements, Timing, TrainingConfig

JOB_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# Offsets and line numbers above this overflow database integers: refused as invalid.
MAX_OFFSET = 2**31 - 1


class ErrorBody(BaseModel):
    """The one error envelope of every route."""

    code: str
    message: str
    hint: str = ""
    problems: list[Problem] | None = Field(
        default=None,
        description="Every problem found (code `invalid_job`: the job folder's files); "
        "`message` and `hint` summarise them",
    )


class JobCreate(BaseModel):
    """A job submission. The job's files are already in the bucket under jobs/{name}/."""

    name: str = Field(pattern=JOB_NAME_PATTERN, description="Folder name under jobs/")
    config: TrainingConfig = Field(default_factory=TrainingConfig)
    gpu: GpuRequirements = Field(default_factory=GpuRequirements)
    timing: Timing = Field(default_factory=Timing)


class StateTransition(BaseModel):
    state: JobState
    at: datetime


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
    outputs_written_at: datetime | None = Field(
        default=None,
        description="When the ended job's model files and reports became final; until then "
        "`global_model.pt` and the reports may still hold an earlier round",
    )


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
    PROGRESS = "progress"  # JobPublic after a reason/panel/round/outputs change
    FAILED = "failed"  # JobPublic with its `error` set
    ROUND = "round"  # RoundPublic
    LOG = "log"  # LogLines: new lines of one log source


class UserStreamEvent(StrEnum):
    """`event:` names of `GET /api/events`: changes to any of the user's jobs (JobPublic data)."""

    READY = "ready"  # sent once, when subscribed: list the jobs after it and miss no change
    STATE = JobStreamEvent.STATE.value
    PROGRESS = JobStreamEvent.PROGRESS.value
    FAILED = JobStreamEvent.FAILED.value


# --- Files: the user's own bucket (keys are bucket-relative) ---------------------------------

MULTIPART_PART_SIZE = 50 * 1024 * 1024
LOG_SOURCE_PATTERN = r"^(server|client_[0-9]+)$"


class FileObject(BaseModel):
    key: str
    size: int
    last_modified: datetime


class FileListing(BaseModel):
    """One level of the bucket under `prefix` (delimiter "/")."""

    prefix: str
    folders: list[str] = Field(description="Full keys of the sub-folders, each ending in '/'")
    objects: list[FileObject]
    truncated: bool = Field(
        default=False, description="More entries exist than one listing returns"
    )


class FileText(BaseModel):
    """The start of a text object, for the viewer."""

    key: str
    size: int = Field(description="The whole object's size in bytes")
    truncated: bool = Field(description="Only the first max_bytes are in `text`")
    text: str


class DownloadUrlRequest(BaseModel):
    key: str


CONTENT_TYPE_PATTERN = r"^[!-~][ -~]*$"  # printable ASCII: it becomes a signed header
# Upload ids and ETags the store hands out are printable ASCII without spaces.
TOKEN_PATTERN = r"^[!-~]+$"


class UploadUrlRequest(BaseModel):
    key: str
    content_type: str = Field(
        default="application/octet-stream",
        max_length=255,
        pattern=CONTENT_TYPE_PATTERN,
        description="The PUT must send this Content-Type header",
    )


class PresignedUrl(BaseModel):
    url: str
    expires_at: datetime


class MultipartInit(BaseModel):
    key: str
    size: int = Field(gt=0, description="The whole object's size in bytes")
    content_type: str = Field(
        default="application/octet-stream", max_length=255, pattern=CONTENT_TYPE_PATTERN
    )


class MultipartUpload(BaseModel):
    """PUT part n (1-based) of the file to `urls[n-1]`, keep each answer's ETag header."""

    upload_id: str
    key: str
    part_size: int = Field(description="Every part but the last has exactly this many bytes")
    urls: list[str]


class UploadedPart(BaseModel):
    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=1024, pattern=TOKEN_PATTERN)


class MultipartComplete(BaseModel):
    upload_id: str = Field(min_length=1, max_length=1024, pattern=TOKEN_PATTERN)
    key: str
    parts: list[UploadedPart] = Field(min_length=1, max_length=10_000)


class MultipartAbort(BaseModel):
    upload_id: str = Field(min_length=1, max_length=1024, pattern=TOKEN_PATTERN)
    key: str


class StoredObject(BaseModel):
    """An object just written (a completed multipart upload)."""

    key: str
    etag: str


# --- Logs and workers ---------------------------------------------------------------------


class LogLines(BaseModel):
    """Consecutive lines of one job log; `first_line` is the 0-based number of `lines[0]`."""

    source: str = Field(description="'server' or 'client_<slot>'")
    first_line: int
    lines: list[str]


class JobLogs(LogLines):
    total: int = Field(description="Lines of this source stored so far")
    file_key: str = Field(
        description="The source's complete log in your bucket (files_out/<source>.log): it "
        "stays there when the lines here are deleted, some time after the job ended"
    )


class WorkerPublic(BaseModel):
    agent_id: str
    host: str
    online: bool
    last_heartbeat_at: datetime
    slots: list[Slot]
    jobs: list[str] = Field(description="Your jobs with a process on this worker")


class WorkerList(BaseModel):
    online_count: int
    total_free_memory_mb: int = Field(description="Free memory of the online workers' slots")
    workers: list[WorkerPublic]
