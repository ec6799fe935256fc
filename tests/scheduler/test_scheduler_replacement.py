"""Replacing lost workers, without the bus (a stub dispatcher): a silent agent, a crashed client,
a restarted agent and a lost FL server each get the job a new run that resumes after the last
completed round; what cannot be replaced fails the job, naming the worker."""

from datetime import timedelta

from scheduler_helpers import FakeClock, Published, StubDispatcher, cpu_heartbeat, submitted

from rondo.contracts.events import (
    FailureCause,
    JobDispatched,
    JobFailed,
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
from rondo.contracts.states import JobState
from rondo.contracts.training import Timing
from rondo.scheduler.models import JobPublic
from rondo.scheduler.reconciler import Reconciler
from rondo.scheduler.service import Scheduler
from rondo.scheduler.store import JobStore

# Slots 0 and 1 land on agent-a (with the FL server) and agent-b; agent-c is the spare.
AGENTS = ("agent-a", "agent-b", "agent-c")
TIMING = Timing(worker_lost_after_s=10, below_min_clients_grace_s=20)
KILLED = "client process exited with code -9; last log lines:\nround 1"


def beat(scheduler: Scheduler, *agents: str) -> None:
    for agent_id in agents:
        scheduler.on_heartbeat(cpu_heartbeat(agent_id))


def current_job(store: JobStore) -> JobPublic:
    job = store.get_job("job-1")
    assert job is not None
    return job


def dispatches_of(published: Published, run_id: str) -> dict[str, JobDispatched]:
    return {d.agent_id: d for d in published.of(JobDispatched) if d.run_id == run_id}


def client_event(
    dispatch: JobDispatched, slot: int, phase: ProcessPhase, **fields: object
) -> RunProcessChanged:
    [client] = [c for c in dispatch.clients if c.slot == slot]
    return RunProcessChanged(
        job_id=dispatch.job_id,
        run_id=dispatch.run_id,
        agent_id=dispatch.agent_id,
        role="client",
        site_name=client.site_name,
        slot=slot,
        phase=phase,
        **fields,  # type: ignore[arg-type]
    )


def round_completed(run_id: str, round_number: int) -> RoundCompleted:
    return RoundCompleted(
        agent_id="agent-1",
        job_id="job-1",
        run_id=run_id,
        round=round_number,
        num_rounds=4,
        metrics={},
        contributions=[],
        duration_s=1,
        checkpoint_object="c",
        checkpoint_sha256="0",
    )


async def running_job(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, rounds_done: int = 2
) -> str:
    """A 4-round job RUNNING on agent-a and agent-b, both clients connected; its run id."""
    beat(scheduler, *AGENTS)
    await scheduler.on_submitted(submitted(num_rounds=4, timing=TIMING))
    await reconciler.tick()
    run_id = published.of(JobDispatched)[0].run_id
    for dispatch in dispatches_of(published, run_id).values():
        for client in dispatch.clients:
            await scheduler.on_process(client_event(dispatch, client.slot, ProcessPhase.READY))
    await scheduler.on_run_started(
        RunStarted(agent_id="agent-1", job_id="job-1", run_id=run_id, nvflare_job_id="n")
    )
    for round_number in range(rounds_done):
        await scheduler.on_round_completed(round_completed(run_id, round_number))
    return run_id


async def test_silent_agent_is_replaced_by_a_spare_from_the_last_checkpoint(
    scheduler: Scheduler,
    reconciler: Reconciler,
    published: Published,
    store: JobStore,
    clock: FakeClock,
    stub_dispatcher: StubDispatcher,
) -> None:
    first = await running_job(scheduler, reconciler, published)
    assert sorted(dispatches_of(published, first)) == ["agent-a", "agent-b"]

    clock.advance(11)  # agent-b silent for longer than worker_lost_after_s
    beat(scheduler, "agent-a", "agent-c")
    await reconciler.tick()

    panels = [p.snapshot.workers for p in published.of(JobProgress)]
    assert any(panel.disconnected == 1 for panel in panels), "Disconnected shown first"
    job = current_job(store)
    assert (job.state, job.reason, job.current_round) == (JobState.RUNNING, "replacing worker 1", 2)
    second = job.run_id
    assert second != first
    stopped = {(s.agent_id, s.run_id) for s in published.of(RunStopRequested)}
    assert stopped == {("agent-a", first), ("agent-b", first)}
    run = dispatches_of(published, second)
    assert sorted(run) == ["agent-a", "agent-c"]
    assert [c.site_name for c in run["agent-c"].clients] == ["site-1-1"]
    assert [c.site_name for c in run["agent-a"].clients] == ["site-0-0"]
    server = run["agent-a"].server
    assert server is not None and server.start_round == 2
    assert server.site_names == ["site-0-0", "site-1-1"]
    assert stub_dispatcher.resumed[-1] == (2, "jobs/digits/model_out/model_round_1.pt")
    old = store.get_run(first)
    assert old is not None and not old.active

    # The old run's late events change nothing; the new run's carry the job to the end.
    await scheduler.on_round_completed(round_completed(first, 2))
    assert current_job(store).current_round == 2
    await scheduler.on_run_started(
        RunStarted(agent_id="agent-1", job_id="job-1", run_id=second, nvflare_job_id="m")
    )
    job = current_job(store)
    assert job.reason == ""
    assert published.of(JobProgress)[-1].snapshot.workers.connected == 2
    for round_number in (2, 3):
        await scheduler.on_round_completed(round_completed(second, round_number))
    await scheduler.on_run_ended(
        RunEnded(agent_id="agent-1", job_id="job-1", run_id=second, completed=True)
    )
    states = [c.snapshot.state for c in published.of(JobStateChanged)]
    assert states == [JobState.PENDING, JobState.RUNNING, JobState.FINISHED]
    assert current_job(store).current_round == 4


async def test_crashed_client_shows_as_an_error_and_restarts_in_place(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, store: JobStore
) -> None:
    first = await running_job(scheduler, reconciler, published)
    on_b = dispatches_of(published, first)["agent-b"]

    await scheduler.on_process(
        client_event(on_b, 1, ProcessPhase.EXITED, exit_code=-9, error=KILLED)
    )
    assert published.of(JobProgress)[-1].snapshot.workers.errors == 1
    assert published.of(JobFailed) == []
    await reconciler.tick()

    second = current_job(store).run_id
    run = dispatches_of(published, second)
    assert sorted(run) == ["agent-a", "agent-b"], "the spare is not needed"
    assert [c.site_name for c in run["agent-b"].clients] == ["site-1-1"]


async def test_a_crash_the_user_must_fix_fails_at_once(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, store: JobStore
) -> None:
    first = await running_job(scheduler, reconciler, published)
    on_b = dispatches_of(published, first)["agent-b"]
    error = "client process exited with code 1; NameError: name 'torch' is not defined"
    await scheduler.on_process(client_event(on_b, 1, ProcessPhase.EXITED, exit_code=1, error=error))
    [failed] = published.of(JobFailed)
    assert failed.cause == FailureCause.NAME_NOT_DEFINED
    await reconciler.tick()
    assert current_job(store).run_id == first


async def test_lost_server_agent_is_re_placed_with_its_client(
    scheduler: Scheduler,
    reconciler: Reconciler,
    published: Published,
    store: JobStore,
    clock: FakeClock,
) -> None:
    first = await running_job(scheduler, reconciler, published)
    clock.advance(11)  # agent-a (FL server and slot 0) silent
    beat(scheduler, "agent-b", "agent-c")
    await reconciler.tick()

    job = current_job(store)
    assert job.reason == "replacing the FL server and worker 0"
    run = dispatches_of(published, job.run_id)
    assert "agent-a" not in run
    [server_agent] = [agent for agent, d in run.items() if d.server is not None]
    assert [c.site_name for c in run["agent-c"].clients] == ["site-0-1"]
    assert [c.site_name for c in run["agent-b"].clients] == ["site-1-0"]
    assert [c.generation for c in [*run["agent-c"].clients, *run["agent-b"].clients]] == [1, 0]
    assert server_agent in {"agent-b", "agent-c"}
    assert first != job.run_id


def server_crashed(dispatch: JobDispatched) -> RunProcessChanged:
    return RunProcessChanged(
        job_id=dispatch.job_id,
        run_id=dispatch.run_id,
        agent_id=dispatch.agent_id,
        role="server",
        site_name="server",
        phase=ProcessPhase.EXITED,
        exit_code=-9,
        error="server process exited with code -9; last log lines:\nround 1",
    )


async def test_crashed_server_process_gets_a_new_run_until_it_crashes_too_often(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, store: JobStore
) -> None:
    scheduler.settings.max_replacements_per_slot = 1
    first = await running_job(scheduler, reconciler, published)
    await scheduler.on_process(server_crashed(dispatches_of(published, first)["agent-a"]))
    assert published.of(JobFailed) == []
    await reconciler.tick()

    job = current_job(store)
    assert (job.state, job.reason) == (JobState.RUNNING, "replacing the FL server")
    run = dispatches_of(published, job.run_id)
    [server] = [d.server for d in run.values() if d.server is not None]
    assert server.start_round == 2, "resumes after the last completed round"
    assert server.site_names == ["site-0-0", "site-1-0"], "the workers stay as they were"
    stored = store.get_run(job.run_id)
    assert stored is not None and stored.server_generation == 1

    # The new server comes up, then crashes too: replaced once already, the job fails.
    [server_agent] = [agent for agent, d in run.items() if d.server is not None]
    await scheduler.on_run_started(
        RunStarted(agent_id="agent-1", job_id="job-1", run_id=job.run_id, nvflare_job_id="m")
    )
    await scheduler.on_process(server_crashed(run[server_agent]))
    await reconciler.tick()
    [failed] = published.of(JobFailed)
    assert failed.message.startswith(
        f"lost the FL server on {server_agent} again after 1 replacement: server process exited"
    )
    assert current_job(store).state == JobState.FAILED


async def test_agent_restarted_without_its_client_is_replaced_on_it(
    scheduler: Scheduler,
    reconciler: Reconciler,
    published: Published,
    store: JobStore,
    clock: FakeClock,
) -> None:
    first = await running_job(scheduler, reconciler, published)
    clock.advance(1)
    restarted = cpu_heartbeat("agent-b")
    restarted.started_at += timedelta(hours=1)
    scheduler.on_heartbeat(restarted)
    server_still_runs = cpu_heartbeat("agent-a")
    server_still_runs.running = [
        RunningProcess(job_id="job-1", run_id=first, role=role, site_name=site)
        for role, site in (("server", "server"), ("client", "site-0-0"))
    ]
    scheduler.on_heartbeat(server_still_runs)
    await reconciler.tick()

    run = dispatches_of(published, current_job(store).run_id)
    assert [c.site_name for c in run["agent-b"].clients] == ["site-1-1"]
    assert run["agent-a"].server is not None


async def test_worker_lost_too_often_fails_the_job(
    scheduler: Scheduler, reconciler: Reconciler, published: Published, store: JobStore
) -> None:
    scheduler.settings.max_replacements_per_slot = 1
    first = await running_job(scheduler, reconciler, published)
    crash = client_event(
        dispatches_of(published, first)["agent-b"],
        1,
        ProcessPhase.EXITED,
        exit_code=-9,
        error=KILLED,
    )
    await scheduler.on_process(crash)
    await reconciler.tick()
    second = current_job(store).run_id
    run = dispatches_of(published, second)
    for dispatch in run.values():
        for client in dispatch.clients:
            await scheduler.on_process(client_event(dispatch, client.slot, ProcessPhase.READY))
    await scheduler.on_run_started(
        RunStarted(agent_id="agent-1", job_id="job-1", run_id=second, nvflare_job_id="m")
    )
    await scheduler.on_process(
        client_event(run["agent-b"], 1, ProcessPhase.EXITED, exit_code=-9, error=KILLED)
    )
    await reconciler.tick()

    [failed] = published.of(JobFailed)
    assert failed.message.startswith(
        "lost worker 1 (site-1-1 on agent-b) again after 1 replacement: client process exited"
    )
    assert current_job(store).state == JobState.FAILED


async def test_no_spare_fails_after_the_grace_naming_the_worker(
    scheduler: Scheduler,
    reconciler: Reconciler,
    published: Published,
    store: JobStore,
    clock: FakeClock,
) -> None:
    await running_job(scheduler, reconciler, published)
    for _ in range(2):
        clock.advance(11)
        beat(scheduler, "agent-a")  # agent-b and the spare agent-c are gone
        await reconciler.tick()
    job = current_job(store)
    assert job.state == JobState.RUNNING
    assert job.reason == "replacing worker 1: waiting for 1 worker, 1 online, 1 busy"
    clock.advance(11)
    beat(scheduler, "agent-a")
    await reconciler.tick()
    [failed] = published.of(JobFailed)
    assert failed.message == (
        "lost worker 1 (site-1-0 on agent-b) for more than 20 s (1 of min_clients 2 workers left)"
    )
    assert failed.cause == FailureCause.WORKER_TIMEOUT


async def test_replacement_run_that_never_starts_fails_the_job(
    scheduler: Scheduler,
    reconciler: Reconciler,
    published: Published,
    store: JobStore,
    clock: FakeClock,
) -> None:
    first = await running_job(scheduler, reconciler, published)
    on_b = dispatches_of(published, first)["agent-b"]
    await scheduler.on_process(
        client_event(on_b, 1, ProcessPhase.EXITED, exit_code=-9, error=KILLED)
    )
    await reconciler.tick()
    for _ in range(4):
        clock.advance(10)
        beat(scheduler, *AGENTS)
        await reconciler.tick()
    [failed] = published.of(JobFailed)
    assert failed.message.startswith("the replacement run did not start within 30 s")
    assert "worker 1 (site-1-1 on agent-b)" in failed.message
    assert store.list_active_runs() == []
