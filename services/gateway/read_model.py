"""The gateway's read model of jobs, fed by the scheduler's and agents' events.

Durable pull consumers (one per subject, `Durables.GATEWAY_*`) apply each event in its own DB
transaction, then fan the change out to live SSE listeners through `JobEventHub`.

Idempotent under redelivery and reordering between the consumers:
- a snapshot (`JobStateChanged` / `JobProgress`) is applied only if it is not older than the one
  already applied (`Job.snapshot_at`) nor that very event again, and a terminal state is never
  left;
- a transition is recorded once per (job, state); a round once per (job, round, run_id);
- the outputs' completion is recorded once (the first announcement's time);
- events for jobs the gateway does not know are logged and acknowledged;
- events dated in the future beyond the allowed clock skew are logged and ignored.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

import anyio
from fastapi.sse import ServerSentEvent
from sqlalchemy import Engine
from sqlmodel import Session, select

from rondo.contracts.api import JobError, JobPublic, JobStreamEvent, RoundPublic
from rondo.contracts.clock import Clock
from rondo.contracts.consumers import DurableConsumers, dated_ahead
from rondo.contracts.events import (
    Event,
    JobFailed,
    JobOutputsWritten,
    JobProgress,
    JobStateChanged,
    RoundCompleted,
    utc_now,
)
from rondo.contracts.subjects import Durables
from rondo.gateway.models import Job, JobRound, JobTransition, job_public, round_public
from rondo.gateway.pubsub import JobEventHub

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
T = TypeVar("T")


def _known_job(session: Session, job_id: str, what: str) -> Job | None:
    job = session.get(Job, job_id)
    if job is None:
        logger.warning("%s for unknown job %s: ignored", what, job_id)
    return job


def _saved_view(session: Session, job: Job) -> JobPublic:
    """Commit the job's changes; its view as the API shows it."""
    session.add(job)
    session.commit()
    session.refresh(job)
    return job_public(job)


def _apply_snapshot(job: Job, event: JobStateChanged | JobProgress) -> bool:
    """Copy the event's snapshot onto the job unless it is stale or already applied.

    Returns True if the job changed.
    """
    snapshot, occurred_at = event.snapshot, event.occurred_at
    if event.event_id == job.snapshot_event_id:
        return False
    if job.snapshot_at is not None and occurred_at < job.snapshot_at:
        logger.info("stale snapshot for job %s (%s) ignored", job.id, occurred_at.isoformat())
        return False
    if job.state.is_terminal and snapshot.state != job.state:
        logger.warning(
            "job %s is %s; snapshot with state %s ignored", job.id, job.state, snapshot.state
        )
        return False
    job.state = snapshot.state
    job.reason = snapshot.reason
    job.current_round = snapshot.current_round
    job.num_rounds = snapshot.num_rounds
    job.workers = snapshot.workers.model_dump(mode="json")
    job.slots = [slot.model_dump(mode="json") for slot in snapshot.slots]
    job.run_id = snapshot.run_id
    if snapshot.error is not None:
        job.error = snapshot.error.model_dump(mode="json")
    job.snapshot_at = occurred_at
    job.snapshot_event_id = event.event_id
    job.updated_at = max(job.updated_at, occurred_at)
    return True


def _record_transition(session: Session, job: Job, event: JobStateChanged) -> bool:
    """Store when the job entered the event's state, once. True if it is new."""
    state = event.snapshot.state
    existing = session.exec(
        select(JobTransition).where(JobTransition.job_id == job.id, JobTransition.state == state)
    ).first()
    if existing is not None:
        return False
    session.add(JobTransition(job_id=job.id, state=state, at=event.occurred_at))
    return True


def apply_state_changed(session: Session, event: JobStateChanged) -> JobPublic | None:
    """Apply a transition; returns the job's new view, or None if nothing changed."""
    job = _known_job(session, event.job_id, "state change")
    if job is None:
        return None
    applied = _apply_snapshot(job, event)
    recorded = _record_transition(session, job, event)
    if not (applied or recorded):
        return None
    return _saved_view(session, job)


def apply_progress(session: Session, event: JobProgress) -> JobPublic | None:
    """Apply a reason/panel/round change; returns the job's new view, or None if stale."""
    job = _known_job(session, event.job_id, "progress")
    if job is None or not _apply_snapshot(job, event):
        return None
    return _saved_view(session, job)


def apply_failed(session: Session, event: JobFailed) -> JobPublic | None:
    """Store the failure the user sees (message, cause, hint)."""
    job = _known_job(session, event.job_id, "failure")
    if job is None:
        return None
    error = JobError(message=event.message, cause=event.cause, hint=event.hint)
    if job.error == error.model_dump(mode="json"):
        return None  # redelivered
    job.error = error.model_dump(mode="json")
    job.updated_at = max(job.updated_at, event.occurred_at)
    return _saved_view(session, job)


def apply_outputs_written(session: Session, event: JobOutputsWritten) -> JobPublic | None:
    """Record that the ended job's outputs are final; returns the job's new view if new."""
    job = _known_job(session, event.job_id, "outputs written")
    if job is None or job.outputs_written_at is not None:
        return None
    job.outputs_written_at = event.occurred_at
    job.updated_at = max(job.updated_at, event.occurred_at)
    return _saved_view(session, job)


def apply_round_completed(session: Session, event: RoundCompleted) -> RoundPublic | None:
    """Store a round's metrics once per (job, round, run); returns it if new."""
    job = _known_job(session, event.job_id, "round")
    if job is None:
        return None
    existing = session.exec(
        select(JobRound).where(
            JobRound.job_id == job.id,
            JobRound.round == event.round,
            JobRound.run_id == event.run_id,
        )
    ).first()
    if existing is not None:
        return None
    row = JobRound(
        job_id=job.id,
        run_id=event.run_id,
        round=event.round,
        num_rounds=event.num_rounds,
        metrics=dict(event.metrics),
        contributions=[c.model_dump(mode="json") for c in event.contributions],
        duration_s=event.duration_s,
        completed_at=event.occurred_at,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return round_public(row)


def register_read_model(
    consumers: DurableConsumers, engine: Engine, hub: JobEventHub, clock: Clock = utc_now
) -> None:
    """Subscribe the read-model consumers (before the broker starts).

    The consumers run concurrently; their DB work is serialized by one lock (a job row's
    read-check-write must not interleave with another consumer's) and runs in a worker thread
    (SQLite may wait on a lock). The hub is published to from the event loop. A handler that
    raises (a locked or unreachable database) has its event redelivered with a growing delay
    (`rondo.contracts.consumers`). An event dated ahead of `clock` by more than the allowed
    clock skew is ignored (logged): it would shadow every real snapshot after it.
    """
    write_lock = asyncio.Lock()

    async def run_in_session(apply: Callable[[Session, E], T], event: E) -> T | None:
        if dated_ahead(event.occurred_at, clock()):
            logger.warning(
                "%s %s of job %s is dated %s, ahead of this clock: ignored",
                event.subject, event.event_id, getattr(event, "job_id", "-"),
                event.occurred_at.isoformat(),
            )  # fmt: skip
            return None

        def run() -> T:
            with Session(engine) as session:
                return apply(session, event)

        async with write_lock:
            return await anyio.to_thread.run_sync(run)

    def announce(job_id: str, kind: JobStreamEvent, data: JobPublic | RoundPublic | None) -> None:
        if data is not None:
            hub.publish(job_id, ServerSentEvent(event=kind.value, data=data))

    @consumers(JobStateChanged, Durables.GATEWAY_STATE)
    async def on_state_changed(event: JobStateChanged) -> None:
        view = await run_in_session(apply_state_changed, event)
        announce(event.job_id, JobStreamEvent.STATE, view)

    @consumers(JobProgress, Durables.GATEWAY_PROGRESS)
    async def on_progress(event: JobProgress) -> None:
        view = await run_in_session(apply_progress, event)
        announce(event.job_id, JobStreamEvent.PROGRESS, view)

    @consumers(JobFailed, Durables.GATEWAY_FAILED)
    async def on_failed(event: JobFailed) -> None:
        view = await run_in_session(apply_failed, event)
        announce(event.job_id, JobStreamEvent.FAILED, view)

    @consumers(JobOutputsWritten, Durables.GATEWAY_OUTPUTS)
    async def on_outputs_written(event: JobOutputsWritten) -> None:
        view = await run_in_session(apply_outputs_written, event)
        announce(event.job_id, JobStreamEvent.PROGRESS, view)

    @consumers(RoundCompleted, Durables.GATEWAY_ROUNDS)
    async def on_round_completed(event: RoundCompleted) -> None:
        row = await run_in_session(apply_round_completed, event)
        announce(event.job_id, JobStreamEvent.ROUND, row)
