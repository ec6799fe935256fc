"""The hosted product's API shapes (its SDK's field names) and their mapping to Rondo's.

Only shapes and translations live here; `routes_compat.py` serves them over the same handlers
as the native routes. Field names follow the hosted product: camelCase, except where it uses
snake_case itself (`free_memory_mb` of a worker, `showStatsNvflare`'s answer).
"""

import json
import re
from datetime import datetime

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import status
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from rondo.contracts.api import (
    JOB_NAME_PATTERN,
    TOKEN_PATTERN,
    JobPublic,
    MultipartAbort,
    MultipartComplete,
    MultipartInit,
    MultipartUpload,
    UploadedPart,
)
from rondo.contracts.events import Slot
from rondo.contracts.layout import (
    CONFIGS,
    MODEL,
    REQUIREMENTS,
    SCRIPTS,
    SERVER_CONFIG_KEY,
    SHARDS,
    job_prefix,
)
from rondo.contracts.states import JobState
from rondo.contracts.storage import S3Client, is_not_found
from rondo.contracts.training import GpuRequirements, TrainingConfig
from rondo.gateway.errors import ApiError

MAX_CONFIG_BYTES = 1024 * 1024
# Which folder of jobs/<name>/ each path field of a task must name.
TASK_FOLDERS = {
    "shards_dir_path": SHARDS,
    "training_scripts_folder_path": SCRIPTS,
    "training_config_folder_path": CONFIGS,
    "training_requirements_folder_path": REQUIREMENTS,
    "model_folder_path": MODEL,
}


CAMEL = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class CamelModel(BaseModel):
    model_config = CAMEL


class CompatTaskCreate(CamelModel):
    """`POST /api/tasks`: the SDK uploaded `jobs/<slug>/` and names its folders."""

    name: str = Field(min_length=1, max_length=200, description="The job's display name")
    shards_dir_path: str = Field(max_length=1024, description="e.g. /jobs/<slug>/shards")
    training_scripts_folder_path: str = Field(max_length=1024)
    training_config_folder_path: str = Field(max_length=1024)
    training_requirements_folder_path: str = Field(max_length=1024)
    model_folder_path: str | None = Field(default=None, max_length=1024)
    estimated_memory_mb: int | None = Field(default=None, ge=0)
    worker_ids: list[str] = Field(default_factory=list)
    auto_select_workers: bool = False
    gpu_models: list[str] = Field(default_factory=list)
    max_price_per_gpu_hour_cents: int | None = Field(
        default=None, ge=0, description="Accepted and ignored: a Rondo fleet has no prices"
    )
    only_mine_workers: bool = Field(default=False, description="Accepted and ignored")

    def gpu(self) -> GpuRequirements:
        return GpuRequirements(
            gpu_models=self.gpu_models,
            estimated_memory_mb=self.estimated_memory_mb,
            worker_ids=self.worker_ids,
        )


class CompatTaskCreated(BaseModel):
    id: str
    name: str
    status: JobState


class CompatWorkerCounts(BaseModel):
    total: int
    connected: int
    errors: int
    disconnected: int


class CompatWorkerHeartbeat(CamelModel):
    slot: int
    site_name: str
    agent_id: str | None
    status: str
    last_heartbeat_at: str | None


class CompatJob(CamelModel):
    """A job as the hosted API shows it (`id`/`jobId`, `name`/`jobName`, `status`/`state`)."""

    id: str
    name: str
    status: JobState
    job_id: str
    job_name: str
    state: JobState
    reason: str
    created_at: datetime
    updated_at: datetime
    current_round: int
    num_rounds: int
    worker_counts: CompatWorkerCounts
    workers: list[CompatWorkerHeartbeat]
    error_message: str | None
    error_cause: str | None
    error_hint: str | None
    files_prefix: str


class CompatJobList(BaseModel):
    items: list[CompatJob]
    total: int
    limit: int
    offset: int


class CompatWorker(BaseModel):
    """One placement slot (a GPU, or a CPU-only host) of an online worker."""

    model: str
    free_memory_mb: int


class CompatWorkerStats(CamelModel):
    online_count: int = Field(description="Online slots: the hosted product counts GPUs")
    total_free_memory_mb: int
    workers: list[CompatWorker]


class CompatRoundStats(BaseModel):
    current_round: int
    num_rounds: int


class CompatBucket(CamelModel):
    bucket_alias: str
    endpoint: str
    region: str


class CompatUsage(CamelModel):
    used_bytes: int
    object_count: int
    quota_bytes: int | None = Field(description="None: no quota")


class CompatUploadInit(MultipartInit):
    model_config = CAMEL


class CompatUpload(MultipartUpload):
    model_config = CAMEL


class CompatPart(BaseModel):
    """A part as the SDK names it: `{PartNumber, ETag}` (S3's own spelling)."""

    part_number: int = Field(
        ge=1, le=10_000, validation_alias=AliasChoices("PartNumber", "partNumber")
    )
    etag: str = Field(
        min_length=1,
        max_length=1024,
        pattern=TOKEN_PATTERN,
        validation_alias=AliasChoices("ETag", "etag"),
    )

    def uploaded(self) -> UploadedPart:
        return UploadedPart(part_number=self.part_number, etag=self.etag)


class CompatUploadComplete(MultipartComplete):
    model_config = CAMEL

    parts: list[CompatPart] = Field(min_length=1, max_length=10_000)  # type: ignore[assignment]


class CompatUploadAbort(MultipartAbort):
    model_config = CAMEL


class CompatGpu(CamelModel):
    id: str = Field(description="GPU model id, e.g. 'rtx_4090' ('cpu' for CPU-only hosts)")
    memory_mb: int
    online: int = Field(description="Slots of this model online now")
    free_memory_mb: int
    price_per_gpu_hour_cents: int = Field(description="Always 0: a Rondo fleet is your own")


class CompatGpuCatalog(BaseModel):
    gpus: list[CompatGpu]


def _bad_paths(message: str) -> ApiError:
    return ApiError(
        status.HTTP_400_BAD_REQUEST,
        "invalid_task_paths",
        message,
        "paths name folders of one job in your bucket: /jobs/<name>/shards, "
        "/jobs/<name>/scripts, /jobs/<name>/configs, /jobs/<name>/requirements",
    )


def task_job_name(task: CompatTaskCreate) -> str:
    """The `<name>` of `jobs/<name>/` that every path of the task points into."""
    names: set[str] = set()
    for field, folder in TASK_FOLDERS.items():
        path = getattr(task, field)
        if path is None:
            continue
        alias = to_camel(field)
        match = re.fullmatch(r"/?jobs/([^/]+)/([^/]+)/?", path)
        if match is None:
            raise _bad_paths(f"{alias} {path!r} is not /jobs/<name>/{folder}")
        if match.group(2) != folder:
            raise _bad_paths(f"{alias} {path!r} must end in /{folder}")
        names.add(match.group(1))
    if len(names) != 1:
        raise _bad_paths(f"the paths point into different jobs: {', '.join(sorted(names))}")
    name = names.pop()
    if not re.fullmatch(JOB_NAME_PATTERN, name):
        raise _bad_paths(f"job folder name {name!r} must match {JOB_NAME_PATTERN}")
    return name


def _invalid_server_config(key: str, problem: str) -> ApiError:
    return ApiError(
        status.HTTP_400_BAD_REQUEST,
        "invalid_config",
        f"{key}: {problem}",
        "fix the file and upload it again; its ScatterAndGather workflow args carry num_rounds",
    )


def custom_app_config(s3: S3Client, bucket: str, name: str) -> TrainingConfig:
    """The training config of a job that brings its own NVFlare app: `num_rounds` from the
    workflow args of `configs/config_fed_server.json` (the defaults when there is no such
    file; the submission checks then say what is missing)."""
    key = job_prefix(name) + SERVER_CONFIG_KEY
    try:
        answer = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{MAX_CONFIG_BYTES - 1}")
        raw = answer["Body"].read(MAX_CONFIG_BYTES + 1)
    except ClientError as error:
        if is_not_found(error):
            return TrainingConfig()
        raise _invalid_server_config(key, "could not be read from your bucket") from error
    except BotoCoreError as error:
        raise _invalid_server_config(key, "could not be read from your bucket") from error
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _invalid_server_config(key, f"is not valid JSON ({error})") from error
    workflows = document.get("workflows") if isinstance(document, dict) else None
    for workflow in workflows if isinstance(workflows, list) else []:
        args = workflow.get("args") if isinstance(workflow, dict) else None
        rounds = args.get("num_rounds") if isinstance(args, dict) else None
        if rounds is None:
            continue
        if not isinstance(rounds, int) or isinstance(rounds, bool) or not 1 <= rounds <= 10_000:
            raise _invalid_server_config(key, f"num_rounds must be 1..10000, not {rounds!r}")
        return TrainingConfig(num_rounds=rounds)
    return TrainingConfig()


def compat_job(job: JobPublic) -> CompatJob:
    return CompatJob(
        id=job.id,
        name=job.name,
        status=job.state,
        job_id=job.id,
        job_name=job.name,
        state=job.state,
        reason=job.reason,
        created_at=job.created_at,
        updated_at=job.updated_at,
        current_round=job.current_round,
        num_rounds=job.num_rounds,
        worker_counts=CompatWorkerCounts(**job.workers.model_dump()),
        workers=[
            CompatWorkerHeartbeat(
                slot=slot.slot,
                site_name=slot.site_name,
                agent_id=slot.agent_id,
                status=slot.status.value,
                last_heartbeat_at=slot.last_heartbeat_at,
            )
            for slot in job.slots
        ],
        error_message=job.error.message if job.error else None,
        error_cause=job.error.cause.value if job.error else None,
        error_hint=job.error.hint if job.error else None,
        files_prefix=job.files_prefix,
    )


def worker_stats(online_slots: list[Slot]) -> CompatWorkerStats:
    return CompatWorkerStats(
        online_count=len(online_slots),
        total_free_memory_mb=sum(slot.free_memory_mb for slot in online_slots),
        workers=[
            CompatWorker(model=slot.model, free_memory_mb=slot.free_memory_mb)
            for slot in online_slots
        ],
    )


def gpu_catalog(slots: list[tuple[Slot, bool]]) -> CompatGpuCatalog:
    """One entry per slot model seen in the fleet, with how many are online."""
    by_model: dict[str, CompatGpu] = {}
    for slot, online in slots:
        entry = by_model.setdefault(
            slot.model,
            CompatGpu(
                id=slot.model, memory_mb=0, online=0, free_memory_mb=0, price_per_gpu_hour_cents=0
            ),
        )
        entry.memory_mb = max(entry.memory_mb, slot.total_memory_mb)
        if online:
            entry.online += 1
            entry.free_memory_mb += slot.free_memory_mb
    return CompatGpuCatalog(gpus=[by_model[model] for model in sorted(by_model)])
