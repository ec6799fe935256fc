"""`GET /api/workers`: the fleet's free capacity, from the agents' heartbeats."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from rondo.contracts.api import WorkerList
from rondo.gateway.deps import CurrentUser, SessionDep
from rondo.gateway.errors import ERROR_RESPONSES
from rondo.gateway.jobs import user_job_ids
from rondo.gateway.workers import WorkerRegistry

router = APIRouter(prefix="/api/workers", tags=["workers"], responses=ERROR_RESPONSES)


def get_worker_registry(request: Request) -> WorkerRegistry:
    registry: WorkerRegistry = request.app.state.workers
    return registry


WorkersDep = Annotated[WorkerRegistry, Depends(get_worker_registry)]


async def fleet_view(registry: WorkerRegistry, session: SessionDep, user_id: str) -> WorkerList:
    """The fleet with only the user's own jobs named (the registry lives on the event loop,
    the ownership query in the thread pool)."""
    own = await run_in_threadpool(user_job_ids, session, user_id, registry.job_ids())
    return registry.view(own)


@router.get("")
async def list_workers(user: CurrentUser, session: SessionDep, registry: WorkersDep) -> WorkerList:
    """Every worker heard from: online or not, its slots' free memory, your jobs on it."""
    return await fleet_view(registry, session, user.id)
