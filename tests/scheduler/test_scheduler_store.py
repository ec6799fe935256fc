"""The SQL store on a temporary SQLite file: idempotent writes, compare-and-set, the outbox."""

from datetime import timedelta
from pathlib import Path

from scheduler_helpers import FakeClock, submitted
from sqlalchemy import text

from rondo.contracts.events import JobCancelRequested, Slot
from rondo.contracts.states import JobState, SlotStatus
from rondo.scheduler.models import (
    JobCreate,
    JobUpdate,
    RunCreate,
    RunSlotCreate,
    RunSlotUpdate,
    WorkerCreate,
)
from rondo.scheduler.store import JobStore, make_engine, make_store


def _run(job_id: str, run_id: str, clock: FakeClock) -> RunCreate:
    return RunCreate(
        run_id=run_id,
        job_id=job_id,
        server_agent_id="a",
        server_host="a.lan",
        fed_learn_port=9000,
        admin_port=9001,
        admin_name="admin@rondo.local",
        kits_prefix=f"kits/{job_id}/{run_id}/",
        created_at=clock(),
    )


def _slot(run_id: str, slot: int, agent_id: str = "a") -> RunSlotCreate:
    return RunSlotCreate(
        run_id=run_id,
        slot=slot,
        job_id="job-1",
        site_name=f"site-{slot}-0",
        agent_id=agent_id,
        device_index=slot,
        device="cpu",
    )


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000


def test_add_job_is_idempotent_and_keeps_its_transitions(store: JobStore, clock: FakeClock) -> None:
    event = submitted()
    job = store.add_job(JobCreate.from_event(event), clock())
    assert job is not None and job.state == JobState.PENDING
    assert job.submitted == event
    assert store.add_job(JobCreate.from_event(event), clock()) is None

    clock.advance(5)
    update = JobUpdate(state=JobState.RUNNING, state_since=clock(), reason="")
    running = store.update_job("job-1", update, expected_state=JobState.PENDING, at=clock())
    assert running is not None and running.state == JobState.RUNNING
    # compare-and-set: a second, stale transition from PENDING changes nothing
    again = store.update_job("job-1", update, expected_state=JobState.PENDING, at=clock())
    assert again is None
    transitions = store.list_transitions("job-1")
    assert [(t.from_state, t.to_state) for t in transitions] == [
        (None, JobState.PENDING),
        (JobState.PENDING, JobState.RUNNING),
    ]
    assert transitions[1].at - transitions[0].at == timedelta(seconds=5)
    assert transitions[1].at.tzinfo is not None


def test_runs_slots_and_fcfs_order(store: JobStore, clock: FakeClock) -> None:
    store.add_job(JobCreate.from_event(submitted("job-1")), clock())
    clock.advance(1)
    store.add_job(JobCreate.from_event(submitted("job-0")), clock())
    assert [job.job_id for job in store.list_jobs([JobState.PENDING])] == ["job-1", "job-0"]

    run = store.add_run(
        _run("job-1", "run-1", clock),
        [_slot("run-1", 0), _slot("run-1", 1, "b")],
        expected_run_id=None,
        job_update=JobUpdate(reason="starting"),
    )
    assert run is not None and run.active
    # idempotent: the job already has a run
    assert store.add_run(_run("job-1", "run-2", clock), [], expected_run_id=None) is None
    job = store.get_job("job-1")
    assert job is not None and (job.run_id, job.reason) == ("run-1", "starting")
    assert {(s.agent_id, s.device_index) for s in store.list_active_slots()} == {("a", 0), ("b", 1)}

    clock.advance(1)
    store.update_job(
        "job-1",
        JobUpdate(state=JobState.CANCELLED, state_since=clock()),
        expected_state=JobState.PENDING,
        at=clock(),
        slot_updates={1: RunSlotUpdate(status=SlotStatus.DONE)},
        end_run=True,
    )
    assert store.list_active_runs() == []
    assert store.list_active_slots() == []
    slots = store.list_slots("run-1")
    assert [s.status for s in slots] == [SlotStatus.ASSIGNED, SlotStatus.DONE]
    assert slots[1].updated_at == clock()


def test_workers_and_outbox(store: JobStore, clock: FakeClock) -> None:
    worker = WorkerCreate(
        agent_id="a",
        host="a.lan",
        slots=[
            Slot(index=0, kind="cpu", model="cpu", total_memory_mb=1, free_memory_mb=1).model_dump()
        ],
        fl_port_low=9000,
        fl_port_high=9009,
        started_at=clock(),
        last_seen_at=clock(),
    )
    store.save_worker(worker)
    store.save_worker(worker.model_copy(update={"host": "a2.lan"}))
    [saved] = store.list_workers()
    assert saved.host == "a2.lan" and saved.slot_list[0].model == "cpu"

    events = [JobCancelRequested(job_id=f"j{n}", requested_by="u") for n in range(3)]
    store.add_job(JobCreate.from_event(submitted()), clock(), outbox=events)
    pending = store.list_outbox()
    assert [entry.event() for entry in pending] == events
    store.delete_outbox([pending[0].id])
    assert [entry.event() for entry in store.list_outbox()] == events[1:]


def test_make_store_creates_the_sqlite_folder(tmp_path: Path) -> None:
    make_store(f"sqlite:///{tmp_path / 'a' / 'b' / 'x.db'}")
    assert (tmp_path / "a" / "b" / "x.db").exists()
