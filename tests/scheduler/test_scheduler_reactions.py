"""The scheduler's reactions and the reconciler's limits, without the bus (a stub dispatcher)."""

from scheduler_helpers import FakeClock, Published, StubDispatcher, cpu_heartbeat, submitted

from rondo.contracts.events import (
    CancelMode,
    FailureCause,
    JobCancelRequested,
    JobDispatched,
    JobFailed,
    JobFinished,
    JobProgress,
    JobStateChanged,
    ProcessPhase,
    RoundCompleted,
    RunEnded,
    RunningProcess,
    RunProcessChanged,
    RunStarted,
    RunStopRequested,
)
from rondo.contracts.states import JobState, SlotStatus
from rondo.contracts.training import Timing
from rondo.scheduler.reconciler import Reconciler
from rondo.scheduler.service import Scheduler
from rondo.scheduler.store import JobStore

SHARD_REJECTED = "shard jobs/digits/shards/shard_1.zip rejected: manifest.ndjson is not at the root"


def beat(scheduler: Scheduler, *agents: str) -> None:
    for agent_id in agents:
        scheduler.on_heartbeat(cpu_heartbeat(agent_id))


async def dispatched(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, **job: object
) -> list[JobDispatched]:
    beat(scheduler, "agent-a", "agent-b")
    await scheduler.on_submitted(submitted(**job))  # type: ignore[arg-type]
    await reconciler.tick()
    return published.of(JobDispatched)


def process(
    dispatch: JobDispatched, slot: int, phase: ProcessPhase, **fields: object
) -> RunProcessChanged:
    return RunProcessChanged(
        job_id=dispatch.job_id,
        run_id=dispatch.run_id,
        agent_id=dispatch.agent_id,
        role="client",
        site_name=f"site-{slot}-0",
        slot=slot,
        phase=phase,
        **fields,  # type: ignore[arg-type]
    )


def job_state(store: JobStore, job_id: str = "job-1") -> JobState:
    job = store.get_job(job_id)
    assert job is not None
    return job.state


async def test_submitted_to_finished(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, store: JobStore
) -> None:
    dispatches = await dispatched(scheduler, reconciler, published)
    assert sorted(d.agent_id for d in dispatches) == ["agent-a", "agent-b"]
    assert sum(d.server is not None for d in dispatches) == 1
    assert sorted(c.slot for d in dispatches for c in d.clients) == [0, 1]
    run_id = dispatches[0].run_id
    await scheduler.on_submitted(submitted())  # redelivered: no second run
    await reconciler.tick()
    assert len(published.of(JobDispatched)) == 2

    for dispatch in dispatches:
        for client in dispatch.clients:
            await scheduler.on_process(process(dispatch, client.slot, ProcessPhase.READY))
    panel = published.of(JobProgress)[-1].snapshot.workers
    assert (panel.total, panel.connected) == (2, 2)

    await scheduler.on_run_started(
        RunStarted(agent_id="agent-1", job_id="job-1", run_id=run_id, nvflare_job_id="n")
    )
    for round_number in range(3):
        event = RoundCompleted(
            agent_id="agent-1",
            job_id="job-1",
            run_id=run_id,
            round=round_number,
            num_rounds=3,
            metrics={},
            contributions=[],
            duration_s=1,
            checkpoint_object="c",
            checkpoint_sha256="0",
        )
        await scheduler.on_round_completed(event)
        await scheduler.on_round_completed(event)  # redelivery changes nothing
    await scheduler.on_run_ended(
        RunEnded(agent_id="agent-1", job_id="job-1", run_id=run_id, completed=True)
    )
    await scheduler.on_run_ended(
        RunEnded(agent_id="agent-1", job_id="job-1", run_id=run_id, completed=True)
    )

    states = [c.snapshot.state for c in published.of(JobStateChanged)]
    assert states == [JobState.PENDING, JobState.RUNNING, JobState.FINISHED]
    assert [p.snapshot.current_round for p in published.of(JobProgress)][-3:] == [1, 2, 3]
    [finished] = published.of(JobFinished)
    assert finished.last_round == 3
    stops = published.of(RunStopRequested)
    assert sorted(s.agent_id for s in stops) == ["agent-a", "agent-b"]
    assert {s.run_id for s in stops} == {run_id}
    assert store.list_active_runs() == []


async def test_waits_for_workers_then_places_when_they_come(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, store: JobStore
) -> None:
    await scheduler.on_submitted(submitted(shards=2))
    beat(scheduler, "agent-a")
    await reconciler.tick()
    job = store.get_job("job-1")
    assert job is not None and job.reason == "waiting for 2 workers, 1 online"
    assert published.of(JobProgress)[-1].snapshot.reason == job.reason
    beat(scheduler, "agent-b")
    await reconciler.tick()
    assert len(published.of(JobDispatched)) == 2


async def test_placement_wait_limit_fails_naming_the_wait(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, clock: FakeClock
) -> None:
    await scheduler.on_submitted(submitted(shards=3))
    await reconciler.tick()
    clock.advance(61)
    await reconciler.tick()
    [failed] = published.of(JobFailed)
    assert failed.message == "no placement within 60 s: waiting for 3 workers, 0 online"


async def test_client_error_fails_the_job_with_its_text(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, store: JobStore
) -> None:
    dispatches = await dispatched(scheduler, reconciler, published)
    client = next(d for d in dispatches if any(c.slot == 1 for c in d.clients))
    await scheduler.on_process(
        process(client, 1, ProcessPhase.EXITED, exit_code=2, error=SHARD_REJECTED)
    )
    [failed] = published.of(JobFailed)
    assert failed.message == SHARD_REJECTED
    assert failed.cause == FailureCause.MANIFEST_MISSING
    change = published.of(JobStateChanged)[-1]
    assert change.snapshot.state == JobState.FAILED
    assert change.snapshot.workers.errors == 1
    assert len(published.of(RunStopRequested)) == 2
    # a process that exits because it was asked to is no failure
    await scheduler.on_process(process(client, 0, ProcessPhase.EXITED, expected=True))
    assert len(published.of(JobFailed)) == 1


async def test_running_once_the_server_and_every_worker_are_connected(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, store: JobStore
) -> None:
    dispatches = await dispatched(scheduler, reconciler, published)
    server_dispatch = next(d for d in dispatches if d.server)
    for dispatch in dispatches:
        for client in dispatch.clients:
            await scheduler.on_process(process(dispatch, client.slot, ProcessPhase.READY))
    assert job_state(store) == JobState.PENDING  # the FL server is not up yet

    server_ready = process(server_dispatch, 0, ProcessPhase.READY).model_copy(
        update={"role": "server", "site_name": "server", "slot": None}
    )
    await scheduler.on_process(server_ready)

    # RUNNING without waiting for NVFlare to start its job processes (RunStarted).
    assert job_state(store) == JobState.RUNNING
    assert [c.snapshot.state for c in published.of(JobStateChanged)] == [
        JobState.PENDING,
        JobState.RUNNING,
    ]


async def test_server_start_limit_names_what_is_missing(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, clock: FakeClock
) -> None:
    dispatches = await dispatched(scheduler, reconciler, published)
    first = next(d for d in dispatches if any(c.slot == 0 for c in d.clients))
    await scheduler.on_process(process(first, 0, ProcessPhase.READY))
    beat(scheduler, "agent-a", "agent-b")
    clock.advance(31)
    beat(scheduler, "agent-a", "agent-b")
    await reconciler.tick()
    [failed] = published.of(JobFailed)
    server_agent = next(d.agent_id for d in dispatches if d.server)
    assert failed.message == (
        f"the run did not start within 30 s; still waiting for the FL server on {server_agent}, "
        f"worker 1 (site-1-0 on {next(d.agent_id for d in dispatches if d is not first)})"
    )
    assert failed.cause == FailureCause.WORKER_TIMEOUT


async def test_lost_worker_is_disconnected_then_fails_the_job_after_the_grace(
    scheduler: Scheduler,
    reconciler: Reconciler,
    published: Published,
    clock: FakeClock,
    store: JobStore,
) -> None:
    timing = Timing(worker_lost_after_s=10, below_min_clients_grace_s=20)
    dispatches = await dispatched(scheduler, reconciler, published, timing=timing)
    run_id = dispatches[0].run_id
    await scheduler.on_run_started(
        RunStarted(agent_id="agent-1", job_id="job-1", run_id=run_id, nvflare_job_id="n")
    )
    server_agent = next(d.agent_id for d in dispatches if d.server)
    lost_agent = next(d.agent_id for d in dispatches if d.server is None)
    lost_slot = next(d.clients[0] for d in dispatches if d.server is None)

    # silent for 11 s: its slot is Disconnected; it comes back running its client: Connected
    clock.advance(11)
    beat(scheduler, server_agent)
    await reconciler.tick()
    assert published.of(JobProgress)[-1].snapshot.workers.disconnected == 1
    heartbeat = cpu_heartbeat(lost_agent)
    heartbeat.running = [
        RunningProcess(job_id="job-1", run_id=run_id, role="client", site_name=lost_slot.site_name)
    ]
    scheduler.on_heartbeat(heartbeat)
    await reconciler.tick()
    assert published.of(JobProgress)[-1].snapshot.workers.connected == 2
    job = store.get_job("job-1")
    assert job is not None and job.below_min_since is None

    # silent again (lost after 10 s), then past the 20 s grace: the job fails naming it
    for _ in range(4):
        clock.advance(10)
        beat(scheduler, server_agent)
        await reconciler.tick()
    assert published.of(JobFailed) == []
    clock.advance(10)
    await reconciler.tick()
    [failed] = published.of(JobFailed)
    assert failed.message == (
        f"lost worker {lost_slot.slot} ({lost_slot.site_name} on {lost_agent}) for more than "
        "20 s (1 of min_clients 2 workers left)"
    )
    assert failed.cause == FailureCause.WORKER_TIMEOUT
    assert job_state(store) == JobState.FAILED


async def test_cancel_and_stop(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, store: JobStore
) -> None:
    dispatches = await dispatched(scheduler, reconciler, published)
    run_id = dispatches[0].run_id
    await scheduler.on_run_started(
        RunStarted(agent_id="agent-1", job_id="job-1", run_id=run_id, nvflare_job_id="n")
    )
    await scheduler.on_cancel(
        JobCancelRequested(job_id="job-1", mode=CancelMode.STOP, requested_by="ann")
    )
    assert job_state(store) == JobState.FINISHED
    assert published.of(JobFinished)[0].state == JobState.FINISHED
    assert len(published.of(RunStopRequested)) == 2
    # stale events of the ended run change nothing
    await scheduler.on_run_ended(
        RunEnded(agent_id="agent-1", job_id="job-1", run_id=run_id, completed=False)
    )
    assert published.of(JobFailed) == []

    await scheduler.on_submitted(submitted("job-2"))
    await reconciler.tick()  # slots are free again
    assert len(published.of(JobDispatched)) == 4
    await scheduler.on_cancel(JobCancelRequested(job_id="job-2", requested_by="ann"))
    assert job_state(store, "job-2") == JobState.CANCELLED
    assert published.of(JobFinished)[-1].state == JobState.CANCELLED


async def test_a_missing_shard_fails_the_job_naming_the_key(
    scheduler: Scheduler,
    reconciler: Reconciler,
    published: Published,
    stub_dispatcher: StubDispatcher,
) -> None:
    from rondo.scheduler.dispatch import MissingObjectError

    stub_dispatcher.error = MissingObjectError("user-bucket", "jobs/digits/shards/shard_1.zip")
    await dispatched(scheduler, reconciler, published)
    [failed] = published.of(JobFailed)
    assert failed.message == (
        "Missing file: s3://user-bucket/jobs/digits/shards/shard_1.zip does not exist"
    )
    assert failed.cause == FailureCause.MISSING_FILE


async def test_restart_restores_workers_and_jobs(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, store: JobStore
) -> None:
    dispatches = await dispatched(scheduler, reconciler, published)
    again = Scheduler(scheduler.settings, store, scheduler.dispatcher, published, scheduler.clock)
    assert again.registry.restore() == 2
    assert again.registry.online(10) == []  # offered to placement only after a fresh beat
    assert not again.registry.is_lost("agent-a", 10)  # but not lost yet either
    await again.on_run_started(
        RunStarted(
            agent_id="agent-1", job_id="job-1", run_id=dispatches[0].run_id, nvflare_job_id="n"
        )
    )
    assert job_state(store) == JobState.RUNNING
    assert [s.status for s in store.list_slots(dispatches[0].run_id)] == [SlotStatus.CONNECTED] * 2
