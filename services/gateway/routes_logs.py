"""`GET /api/jobs/{id}/logs`: a job's server or client log, its tail or a line range.

Live lines come on the job's event stream (`GET /api/jobs/{id}/events`, `log` events).
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from rondo.contracts.api import LOG_SOURCE_PATTERN, MAX_OFFSET, ErrorBody, JobLogs
from rondo.contracts.layout import SERVER_SITE
from rondo.gateway.deps import OwnedJob
from rondo.gateway.errors import ERROR_RESPONSES, ApiError
from rondo.gateway.job_logs import MAX_LINES_PER_READ, JobLogStore, log_file_key

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=ERROR_RESPONSES)


def get_log_store(request: Request) -> JobLogStore:
    store: JobLogStore = request.app.state.log_store
    return store


LogStoreDep = Annotated[JobLogStore, Depends(get_log_store)]


def _bad_range(message: str) -> ApiError:
    return ApiError(
        status.HTTP_400_BAD_REQUEST,
        "invalid_range",
        message,
        "ask for ?tail=N, or for ?start=A&end=B with A < B (0-based, end excluded)",
    )


@router.get(
    "/{job_id}/logs",
    responses={
        status.HTTP_400_BAD_REQUEST: {"model": ErrorBody, "description": "Bad range"},
        status.HTTP_404_NOT_FOUND: {"model": ErrorBody, "description": "No such job"},
    },
)
def read_job_logs(
    job: OwnedJob,
    store: LogStoreDep,
    source: Annotated[
        str, Query(pattern=LOG_SOURCE_PATTERN, description="'server' or 'client_<slot>'")
    ] = SERVER_SITE,
    tail: Annotated[int | None, Query(ge=1, le=MAX_LINES_PER_READ)] = None,
    start: Annotated[int | None, Query(ge=0, le=MAX_OFFSET)] = None,
    end: Annotated[int | None, Query(ge=1, le=MAX_OFFSET)] = None,
) -> JobLogs:
    """The last `tail` lines (default 200), or lines `[start, end)` (0-based), of one log."""
    if tail is not None and (start is not None or end is not None):
        raise _bad_range("tail cannot be combined with start/end")
    if end is not None and end <= (start or 0):
        raise _bad_range(f"end ({end}) must be greater than start ({start or 0})")
    if end is not None and start is None:
        start = 0
    file_key = log_file_key(job.files_prefix, source)
    return store.read(job.id, source, file_key=file_key, tail=tail, start=start, end=end)
