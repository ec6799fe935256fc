"""The job state machine: only legal transitions, each stored, timed and announced."""

import logging

import pytest
from scheduler_helpers import FakeClock, Published, submitted

from rondo.contracts.events import (
    FailureCause,
    JobFailed,
    JobFinished,
    JobProgress,
    JobStateChanged,
)
from rondo.contracts.states import JobState
from rondo.scheduler.state_machine import FailureReport, JobStateMachine
from rondo.scheduler.store import JobStore


async def test_lifecycle_is_stored_timed_and_announced(
    machine: JobStateMachine, store: JobStore, published: Published, clock: FakeClock
) -> None:
    assert await machine.submit(submitted()) is not None
    assert await machine.submit(submitted()) is None  # redelivery
    clock.advance(2)
    assert await machine.transition("job-1", JobState.RUNNING)
    assert await machine.progress("job-1", current_round=1)
    assert not await machine.progress("job-1", current_round=1)  # nothing changed
    assert not await machine.progress("job-1", current_round=0)  # rounds only go forward
    clock.advance(3)
    assert await machine.transition("job-1", JobState.FINISHED)

    changes = published.of(JobStateChanged)
    assert [(c.previous_state, c.snapshot.state) for c in changes] == [
        (None, JobState.PENDING),
        (JobState.PENDING, JobState.RUNNING),
        (JobState.RUNNING, JobState.FINISHED),
    ]
    assert [p.snapshot.current_round for p in published.of(JobProgress)] == [1]
    [finished] = published.of(JobFinished)
    assert (finished.state, finished.last_round, finished.prefix) == (
        JobState.FINISHED,
        1,
        "jobs/digits/",
    )
    transitions = store.list_transitions("job-1")
    assert [t.to_state for t in transitions] == [
        JobState.PENDING,
        JobState.RUNNING,
        JobState.FINISHED,
    ]
    assert [(t.at - transitions[0].at).total_seconds() for t in transitions] == [0, 2, 5]
    assert store.list_outbox() == []


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ([], JobState.FINISHED),  # PENDING -> FINISHED is not a transition
        ([JobState.RUNNING], JobState.PENDING),
        ([JobState.CANCELLED], JobState.RUNNING),
        ([JobState.RUNNING, JobState.FINISHED], JobState.FAILED),
    ],
)
async def test_illegal_transitions_are_refused_and_logged(
    machine: JobStateMachine,
    store: JobStore,
    published: Published,
    caplog: pytest.LogCaptureFixture,
    path: list[JobState],
    refused: JobState,
) -> None:
    await machine.submit(submitted())
    for state in path:
        assert await machine.transition("job-1", state)
    before = len(published.events)
    report = FailureReport("x", FailureCause.OTHER, "")
    with caplog.at_level(logging.WARNING):
        assert not await machine.transition("job-1", refused, failure=report)
    assert "illegal transition" in caplog.text
    assert len(published.events) == before
    job = store.get_job("job-1")
    assert job is not None and job.state == (path[-1] if path else JobState.PENDING)


async def test_failure_is_announced_with_cause_and_hint(
    machine: JobStateMachine, published: Published, store: JobStore
) -> None:
    await machine.submit(submitted())
    report = FailureReport.from_error("NameError: name 'torch' is not defined")
    assert await machine.fail("job-1", report)
    [failed] = published.of(JobFailed)
    assert failed.message == "NameError: name 'torch' is not defined"
    assert failed.cause == FailureCause.NAME_NOT_DEFINED
    assert failed.hint == "put every import in model_def.py"
    # The failure rides on the state change too: watchers never see FAILED without its cause.
    failed_state = published.of(JobStateChanged)[-1].snapshot
    assert failed_state.state == JobState.FAILED and failed_state.error is not None
    assert (failed_state.error.message, failed_state.error.cause) == (
        failed.message,
        FailureCause.NAME_NOT_DEFINED,
    )
    job = store.get_job("job-1")
    assert job is not None and (job.state, job.message) == (JobState.FAILED, failed.message)
    assert not await machine.progress("job-1", reason="late")  # terminal jobs do not change
