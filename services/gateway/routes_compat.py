"""The hosted product's routes, so its SDK works against Rondo by changing `base_url`.

A thin layer: each route translates the hosted shapes (`rondo.gateway.compat`) and calls the
native handler or helper (submission, job list and detail, files, workers), so validation,
errors (the one `{code, message, hint}` envelope) and isolation are the native ones.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from rondo.contracts.api import MAX_OFFSET, ErrorBody, JobCreate, StoredObject
from rondo.gateway.compat import (
    CompatBucket,
    CompatGpuCatalog,
    CompatJob,
    CompatJobList,
    CompatRoundStats,
    CompatTaskCreate,
    CompatTaskCreated,
    CompatUpload,
    CompatUploadAbort,
    CompatUploadComplete,
    CompatUploadInit,
    CompatUsage,
    CompatWorkerStats,
    compat_job,
    custom_app_config,
    gpu_catalog,
    task_job_name,
    worker_stats,
)
from rondo.gateway.deps import (
    BrokerDep,
    CurrentUser,
    OwnedJob,
    S3Dep,
    SessionDep,
    SettingsDep,
    UserFilesDep,
    get_current_user,
)
from rondo.gateway.errors import ERROR_RESPONSES, not_found
from rondo.gateway.jobs import get_user_job
from rondo.gateway.models import job_public
from rondo.gateway.routes_jobs import IdempotencyKey, list_jobs, submit_job
from rondo.gateway.routes_workers import WorkersDep
from rondo.gateway.storage_admin import StorageAdmin, StorageAdminError
from rondo.gateway.user_files import check_key, storage_unavailable

router = APIRouter(tags=["compatibility"], responses=ERROR_RESPONSES)

_NOT_FOUND = {status.HTTP_404_NOT_FOUND: {"model": ErrorBody, "description": "No such job"}}
_BAD_REQUEST = {status.HTTP_400_BAD_REQUEST: {"model": ErrorBody, "description": "Invalid"}}


@router.post("/api/tasks", status_code=status.HTTP_201_CREATED, responses=_BAD_REQUEST)
async def create_task(
    task: CompatTaskCreate,
    user: CurrentUser,
    session: SessionDep,
    s3: S3Dep,
    broker: BrokerDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> CompatTaskCreated:
    """Submit the job folder the SDK uploaded; a custom app's rounds come from its
    config_fed_server.json. Same checks and errors as `POST /api/jobs`."""
    name = task_job_name(task)
    config = await run_in_threadpool(custom_app_config, s3, user.bucket, name)
    submission = JobCreate(name=name, config=config, gpu=task.gpu())
    job = await submit_job(
        submission=submission,
        user=user,
        session=session,
        s3=s3,
        broker=broker,
        response=response,
        idempotency_key=idempotency_key,
    )
    return CompatTaskCreated(id=job.id, name=job.name, status=job.state)


@router.get("/api/tasks/{job_id}", responses=_NOT_FOUND)
def read_task(job: OwnedJob) -> CompatJob:
    return compat_job(job_public(job))


@router.get("/api/customer/dashboard/jobs")
def list_dashboard_jobs(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> CompatJobList:
    """The user's jobs, newest first."""
    jobs = list_jobs(user=user, session=session, state=None, limit=limit, offset=offset)
    return CompatJobList(
        items=[compat_job(job) for job in jobs.items], total=jobs.total, limit=limit, offset=offset
    )


@router.get("/api/customer/dashboard/jobs/{job_id}", responses=_NOT_FOUND)
def read_dashboard_job(job: OwnedJob) -> CompatJob:
    """One job, with each worker slot's status and last heartbeat."""
    return compat_job(job_public(job))


@router.get("/api/customer/dashboard/workers/stats", dependencies=[Depends(get_current_user)])
async def read_worker_stats(registry: WorkersDep) -> CompatWorkerStats:
    """Free capacity of the online workers, one entry per slot (GPU)."""
    return worker_stats(
        [slot for heard, online in registry.workers() if online for slot in heard.heartbeat.slots]
    )


@router.get("/api/customer/dashboard/showStatsNvflare", responses=_NOT_FOUND)
def read_round_stats(
    user: CurrentUser,
    session: SessionDep,
    job_id: Annotated[str, Query(min_length=1, max_length=255)],
) -> CompatRoundStats:
    job = get_user_job(session, user.id, job_id)
    if job is None:
        raise not_found("job", job_id)
    return CompatRoundStats(current_round=job.current_round, num_rounds=job.num_rounds)


@router.get("/api/users/storage/bucket")
def read_bucket(user: CurrentUser, settings: SettingsDep) -> CompatBucket:
    """The user's bucket and where to reach it (SigV4, path-style)."""
    return CompatBucket(
        bucket_alias=user.bucket,
        endpoint=settings.presign_endpoint,
        region=settings.s3_region,
    )


def get_storage_admin(request: Request) -> StorageAdmin:
    storage: StorageAdmin = request.app.state.storage_admin
    return storage


StorageAdminDep = Annotated[StorageAdmin, Depends(get_storage_admin)]


@router.get("/api/users/storage/usage")
def read_usage(user: CurrentUser, storage: StorageAdminDep) -> CompatUsage:
    """What the user's bucket holds. Rondo sets no quota."""
    try:
        usage = storage.bucket_usage(user.bucket)
    except StorageAdminError as error:
        raise storage_unavailable("measuring your bucket failed") from error
    return CompatUsage(used_bytes=usage.bytes, object_count=usage.objects, quota_bytes=None)


@router.post("/api/users/storage/upload/init", responses=_BAD_REQUEST)
def start_upload(body: CompatUploadInit, files: UserFilesDep) -> CompatUpload:
    """A multipart upload: exactly ceil(size / 50 MiB) presigned UploadPart URLs, in order."""
    upload = files.start_multipart(check_key(body.key), body.size, body.content_type)
    return CompatUpload.model_validate(upload.model_dump())


@router.post("/api/users/storage/upload/complete", responses=_BAD_REQUEST)
def complete_upload(body: CompatUploadComplete, files: UserFilesDep) -> StoredObject:
    return files.complete_multipart(
        body.upload_id, check_key(body.key), [part.uploaded() for part in body.parts]
    )


@router.post("/api/users/storage/upload/abort", status_code=status.HTTP_204_NO_CONTENT)
def abort_upload(body: CompatUploadAbort, files: UserFilesDep) -> None:
    files.abort_multipart(body.upload_id, check_key(body.key))


@router.get("/api/gpu-catalog", dependencies=[Depends(get_current_user)])
async def read_gpu_catalog(registry: WorkersDep) -> CompatGpuCatalog:
    """The GPU models of the fleet (no prices: the fleet is your own)."""
    return gpu_catalog(
        [(slot, online) for heard, online in registry.workers() for slot in heard.heartbeat.slots]
    )
