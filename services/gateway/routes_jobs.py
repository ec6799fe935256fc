"""`/api/jobs`: submit, list, read, cancel/stop, per-round metrics, and a live event stream."""

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.exc import IntegrityError

from rondo.contracts.api import (
    MAX_OFFSET,
    ErrorBody,
    JobCreate,
    JobList,
    JobMetrics,
    JobPublic,
    JobStreamEvent,
)
from rondo.contracts.bus import publish
from rondo.contracts.events import CancelMode, JobCancelRequested
from rondo.contracts.states import JobState
from rondo.contracts.telemetry import tag_job
from rondo.gateway.deps import (
    ApiKeyHash,
    BrokerDep,
    CurrentUser,
    HubDep,
    OwnedJob,
    S3Dep,
    SessionDep,
    StreamGuardDep,
)
from rondo.gateway.errors import ERROR_RESPONSES, ApiError
from rondo.gateway.jobs import (
    active_job_named,
    create_submitted_job,
    find_by_idempotency_key,
    latest_rounds,
    list_user_jobs,
)
from rondo.gateway.models import Job, job_public, round_public
from rondo.gateway.submissions import SUBMIT_ACK_TIMEOUT_S, SUBMIT_PUBLISH_RETRY_S, hand_over
from rondo.gateway.validation import inspect_job_folder

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=ERROR_RESPONSES)

_NOT_FOUND = {status.HTTP_404_NOT_FOUND: {"model": ErrorBody, "description": "No such job"}}
_CONFLICT = {status.HTTP_409_CONFLICT: {"model": ErrorBody, "description": "Job state conflict"}}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Retrying with the same key returns the job the first call created",
    ),
]


def _name_in_use(name: str) -> ApiError:
    return ApiError(
        status.HTTP_409_CONFLICT,
        "job_name_in_use",
        f"a job named {name} is still active",
        "wait for it to finish, cancel it, or submit under another folder name",
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_400_BAD_REQUEST: {
            "model": ErrorBody,
            "description": "Job folder invalid (`invalid_job`: every problem in `problems`)",
        },
        **_CONFLICT,
    },
)
async def submit_job(
    submission: JobCreate,
    user: CurrentUser,
    session: SessionDep,
    s3: S3Dep,
    broker: BrokerDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    """Validate `jobs/{name}/` in the user's bucket, store the job PENDING, hand it over.

    The bucket is only read. A replay with the same `Idempotency-Key` returns the first job
    (header `Idempotent-Replayed: true`) without validating or publishing again.
    """
    if idempotency_key and (job := find_by_idempotency_key(session, user.id, idempotency_key)):
        response.headers["Idempotent-Replayed"] = "true"
        return job_public(job)
    if active_job_named(session, user.id, submission.name):
        raise _name_in_use(submission.name)

    folder = await run_in_threadpool(
        inspect_job_folder, s3, user.bucket, submission.name, submission.config
    )
    try:
        job = create_submitted_job(session, user, submission, folder, idempotency_key)
    except IntegrityError:
        # A concurrent submission won the race: same idempotency key, or same active name.
        if idempotency_key and (job := find_by_idempotency_key(session, user.id, idempotency_key)):
            response.headers["Idempotent-Replayed"] = "true"
            return job_public(job)
        raise _name_in_use(submission.name) from None

    tag_job(job.id)
    await hand_over(broker, job)
    logger.info(
        "job %s (%s) submitted by %s: %d shard(s), custom app %s, warm start %s",
        job.id,
        job.name,
        user.name,
        len(folder.shard_keys),
        folder.has_custom_app,
        folder.warm_start_key,
    )
    return job_public(job)


@router.get("")
def list_jobs(
    user: CurrentUser,
    session: SessionDep,
    state: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> JobList:
    """The user's jobs, newest first."""
    jobs, total = list_user_jobs(session, user.id, state, limit, offset)
    return JobList(items=[job_public(job) for job in jobs], total=total)


@router.get("/{job_id}", responses=_NOT_FOUND)
def read_job(job: OwnedJob) -> JobPublic:
    return job_public(job)


async def _request_cancel(job: Job, requested_by: str, broker: BrokerDep, mode: CancelMode) -> None:
    if job.state.is_terminal:
        raise ApiError(
            status.HTTP_409_CONFLICT,
            "job_not_active",
            f"job {job.id} is already {job.state}",
            "only PENDING or RUNNING jobs can be cancelled or stopped",
        )
    tag_job(job.id)
    request = JobCancelRequested(job_id=job.id, mode=mode, requested_by=requested_by)
    try:
        # Briefly, as a submit: a dead bus gets a clear answer, not a request hanging a minute.
        await publish(
            broker, request, retry_s=SUBMIT_PUBLISH_RETRY_S, ack_timeout_s=SUBMIT_ACK_TIMEOUT_S
        )
    except Exception as error:  # not confirmed: the client may still send it on reconnect
        logger.warning("%s of job %s not confirmed (%r)", mode, job.id, error)
        raise ApiError(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "bus_unavailable",
            f"the {mode} of job {job.id} was not confirmed: the event bus is unreachable",
            "it may still take effect once the bus is back; ask again in a minute to be sure "
            "(asking twice is harmless)",
        ) from error
    logger.info("%s of job %s requested by %s", mode, job.id, requested_by)


@router.post(
    "/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, responses={**_NOT_FOUND, **_CONFLICT}
)
async def cancel_job(job: OwnedJob, user: CurrentUser, broker: BrokerDep) -> JobPublic:
    """Ask the scheduler to cancel: the job ends CANCELLED, partial outputs kept."""
    await _request_cancel(job, user.id, broker, CancelMode.CANCEL)
    return job_public(job)


@router.post(
    "/{job_id}/stop", status_code=status.HTTP_202_ACCEPTED, responses={**_NOT_FOUND, **_CONFLICT}
)
async def stop_job(job: OwnedJob, user: CurrentUser, broker: BrokerDep) -> JobPublic:
    """Ask the scheduler to stop: the job ends FINISHED with the completed rounds' outputs."""
    await _request_cancel(job, user.id, broker, CancelMode.STOP)
    return job_public(job)


@router.get("/{job_id}/metrics", responses=_NOT_FOUND)
def read_job_metrics(job: OwnedJob, session: SessionDep) -> JobMetrics:
    """Per-round metrics, contributions and durations, in round order."""
    return JobMetrics(
        job_id=job.id, rounds=[round_public(row) for row in latest_rounds(session, job.id)]
    )


@router.get("/{job_id}/events", response_class=EventSourceResponse, responses=_NOT_FOUND)
async def stream_job_events(
    job: OwnedJob, session: SessionDep, hub: HubDep, guard: StreamGuardDep, key_hash: ApiKeyHash
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: a `snapshot` (JobPublic) first, then `state`, `progress`, `failed`
    (JobPublic) and `round` (RoundPublic) as the read model changes. Stays open until the
    client leaves, the gateway shuts down, or the API key is revoked (or its user removed:
    the stream ends within seconds); keep-alive comments every 15 s.
    """
    with hub.subscribe(job.id) as queue, guard.watch(key_hash, queue):
        # Subscribed first, then read: a change in between is sent twice, never lost.
        session.refresh(job)
        snapshot = job_public(job)
        session.close()  # no DB connection held for the life of the stream
        yield ServerSentEvent(event=JobStreamEvent.SNAPSHOT.value, data=snapshot)
        while (event := await queue.get()) is not None:
            yield event
