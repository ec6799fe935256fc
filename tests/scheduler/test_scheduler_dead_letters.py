"""The scheduler's reaction to dead letters and to events about jobs it does not know, without
the bus (a stub dispatcher): a letter about a job fails it (cause `other`, naming the event); an
agent's unreadable event fails only a job that agent runs (an agent cannot fail others' jobs
that way); a letter about no job, or an ended job, changes nothing; a cancel of a job never
received ends it after a wait."""

import json

import pytest
from scheduler_helpers import FakeClock, Published, cpu_heartbeat, submitted

from rondo.contracts.consumers import DeadLetter
from rondo.contracts.events import (
    FailureCause,
    JobCancelRequested,
    JobDispatched,
    JobFailed,
    JobStateChanged,
    JobSubmitted,
    RunEnded,
)
from rondo.contracts.states import JobState
from rondo.contracts.subjects import Durables
from rondo.scheduler.reconciler import Reconciler
from rondo.scheduler.service import UNKNOWN_JOB_CANCEL_WAIT_S, JobNotKnownYet, Scheduler
from rondo.scheduler.store import JobStore


def letter(subject: str, durable: str, payload: dict[str, object]) -> DeadLetter:
    return DeadLetter(
        durable=durable,
        event_subject=subject,
        stream="RONDO_JOBS",
        stream_sequence=7,
        deliveries=1,
        error="invalid event: run_id: Input should be a valid string",
        payload=json.dumps(payload),
        job_id=str(payload.get("job_id")) if "job_id" in payload else None,
    )


def state(store: JobStore, job_id: str = "job-1") -> JobState:
    job = store.get_job(job_id)
    assert job is not None
    return job.state


async def running_job(scheduler: Scheduler, reconciler: Reconciler, published: Published) -> str:
    """job-1 placed on agent-a and agent-b; returns the agent of its slot 0."""
    for agent_id in ("agent-a", "agent-b"):
        scheduler.on_heartbeat(cpu_heartbeat(agent_id))
    await scheduler.on_submitted(submitted())
    await reconciler.tick()
    dispatches = published.of(JobDispatched)
    assert dispatches
    return next(d.agent_id for d in dispatches if any(c.slot == 0 for c in d.clients))


async def test_a_letter_about_a_known_job_fails_it_naming_the_event(
    scheduler: Scheduler, store: JobStore, published: Published
) -> None:
    await scheduler.on_submitted(submitted())
    bad_cancel = letter(
        JobCancelRequested.SUBJECT, Durables.SCHEDULER_CANCEL, {"job_id": "job-1", "mode": 3}
    )
    await scheduler.on_dead_letter(bad_cancel)
    job = store.get_job("job-1")
    assert job is not None and job.state == JobState.FAILED
    assert job.cause == FailureCause.OTHER
    assert JobCancelRequested.SUBJECT in job.message
    assert Durables.SCHEDULER_CANCEL in job.message
    assert "run_id: Input should be a valid string" in job.message
    [failed] = published.of(JobFailed)
    assert failed.message == job.message

    published.clear()
    await scheduler.on_dead_letter(bad_cancel)  # redelivered, or a second letter: no change
    assert published.of(JobStateChanged) == []


async def test_an_agents_letter_fails_only_a_job_that_agent_runs(
    scheduler: Scheduler, reconciler: Reconciler, store: JobStore, published: Published
) -> None:
    member = await running_job(scheduler, reconciler, published)
    payload = {"job_id": "job-1", "agent_id": "agent-x", "run_id": 5}
    outsider = letter(RunEnded.SUBJECT.format(**payload), Durables.SCHEDULER_RUN_ENDED, payload)
    await scheduler.on_dead_letter(outsider)
    assert state(store) == JobState.PENDING

    payload["agent_id"] = member
    insider = letter(RunEnded.SUBJECT.format(**payload), Durables.SCHEDULER_RUN_ENDED, payload)
    await scheduler.on_dead_letter(insider)
    assert state(store) == JobState.FAILED


async def test_a_letter_about_an_unknown_job_announces_it_failed(
    scheduler: Scheduler, store: JobStore, published: Published
) -> None:
    body = submitted("job-9").model_dump(mode="json")
    body["timing"]["worker_lost_after_s"] = None
    poison = letter(JobSubmitted.SUBJECT, Durables.SCHEDULER_SUBMITTED, body)
    await scheduler.on_dead_letter(poison)
    [changed] = published.of(JobStateChanged)
    assert changed.job_id == "job-9"
    assert changed.snapshot.state == JobState.FAILED
    assert changed.snapshot.num_rounds == 3
    assert changed.snapshot.error is not None
    assert changed.snapshot.error.cause == FailureCause.OTHER
    [failed] = published.of(JobFailed)
    assert failed.bucket == "user-bucket"
    assert store.get_job("job-9") is None

    published.clear()
    no_job = letter(JobSubmitted.SUBJECT, Durables.SCHEDULER_SUBMITTED, {"name": "x"})
    await scheduler.on_dead_letter(no_job)
    assert published.events == []


async def test_a_cancel_of_a_job_not_known_yet_waits_for_it_then_ends_it(
    scheduler: Scheduler, store: JobStore, published: Published, clock: FakeClock
) -> None:
    """A cancel may overtake its job's submission (separate consumers): it is retried until the
    job arrives. A job whose submission never arrives (lost while NATS was down) is announced
    CANCELLED after the wait, so the gateway ends it and frees its name."""
    early = JobCancelRequested(job_id="job-1", requested_by="user-1", occurred_at=clock())
    with pytest.raises(JobNotKnownYet):
        await scheduler.on_cancel(early)
    await scheduler.on_submitted(submitted())
    await scheduler.on_cancel(early)  # redelivered once the job is known
    assert state(store) == JobState.CANCELLED

    published.clear()
    lost = JobCancelRequested(job_id="job-lost", requested_by="user-1", occurred_at=clock())
    with pytest.raises(JobNotKnownYet):
        await scheduler.on_cancel(lost)
    assert published.events == []
    clock.advance(UNKNOWN_JOB_CANCEL_WAIT_S + 1)
    await scheduler.on_cancel(lost)
    [changed] = published.of(JobStateChanged)
    assert changed.job_id == "job-lost"
    assert changed.snapshot.state == JobState.CANCELLED
    assert "never received" in changed.snapshot.reason
    assert store.get_job("job-lost") is None
