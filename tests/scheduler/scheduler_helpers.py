"""Helpers of the scheduler tests: a settable clock, event builders, a dispatcher stand-in."""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from rondo.contracts.events import (
    ClientAssignment,
    Event,
    JobSubmitted,
    ServerAssignment,
    Slot,
    WorkerHeartbeat,
)
from rondo.contracts.layout import flare_client_site
from rondo.contracts.training import GpuRequirements, Timing, TrainingConfig
from rondo.scheduler.checkpoints import ResumePoint, round_checkpoint_key
from rondo.scheduler.dispatch import RunPlan, kit_key, new_run_id
from rondo.scheduler.placement import Placement


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Published:
    """Collects what the scheduler publishes."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list:
        return [event for event in self.events if isinstance(event, kind)]

    def clear(self) -> None:
        self.events.clear()


def submitted(
    job_id: str = "job-1",
    shards: int = 2,
    gpu: GpuRequirements | None = None,
    num_rounds: int = 3,
    timing: Timing | None = None,
    bucket: str = "user-bucket",
    name: str = "digits",
    min_clients: int | None = None,
) -> JobSubmitted:
    prefix = f"jobs/{name}/"
    return JobSubmitted(
        job_id=job_id,
        user_id="user-1",
        bucket=bucket,
        name=name,
        prefix=prefix,
        shard_keys=[f"{prefix}shards/shard_{n}.zip" for n in range(shards)],
        has_custom_app=False,
        config=TrainingConfig(num_rounds=num_rounds, min_clients=min_clients),
        gpu=gpu or GpuRequirements(),
        timing=timing or Timing(),
    )


def cpu_heartbeat(
    agent_id: str, host: str = "127.0.0.1", ports: tuple[int, int] = (9000, 9009)
) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        agent_id=agent_id,
        host=host,
        slots=[Slot(index=0, kind="cpu", model="cpu", total_memory_mb=8000, free_memory_mb=6000)],
        fl_port_range=ports,
        started_at=datetime(2026, 11, 25, 11, 0, tzinfo=UTC),
    )


class StubDispatcher:
    """Builds a run like `Dispatcher.create_run` without provisioning or S3; every checkpoint
    a replacement asks for is there."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls = 0
        self.error: Exception | None = None
        self.resumed: list[tuple[int, str | None]] = []  # (start_round, checkpoint key) per run

    def resume_point(self, job: JobSubmitted, completed_rounds: int, wait_s: float) -> ResumePoint:
        if completed_rounds == 0:
            return ResumePoint(start_round=0, checkpoint_key=None)
        return ResumePoint(completed_rounds, round_checkpoint_key(job.prefix, completed_rounds - 1))

    def create_run(
        self,
        job: JobSubmitted,
        placement: Placement,
        agents: Mapping[str, WorkerHeartbeat],
        *,
        generations: Mapping[int, int] | None = None,
        start_round: int = 0,
        initial_checkpoint_key: str | None = None,
    ) -> RunPlan:
        self.calls += 1
        if self.error is not None:
            raise self.error
        self.resumed.append((start_round, initial_checkpoint_key))
        run_id = new_run_id()
        generations = generations or {}
        sites = {
            c.slot: flare_client_site(c.slot, generations.get(c.slot, 0)) for c in placement.clients
        }
        url = "http://s3.invalid/"
        host = agents[placement.server_agent_id].host
        server = ServerAssignment(
            kit_url=url + kit_key(job.job_id, run_id, "server"),
            admin_kit_url=url + "admin",
            admin_name="admin@rondo.local",
            fed_learn_port=placement.fed_learn_port,
            admin_port=placement.admin_port,
            site_names=[sites[slot] for slot in sorted(sites)],
            start_round=start_round,
            job_files=[],
            has_custom_app=False,
            config=job.config,
        )
        clients = [
            ClientAssignment(
                slot=c.slot,
                site_name=sites[c.slot],
                generation=generations.get(c.slot, 0),
                kit_url=url,
                shard_key=job.shard_keys[c.slot],
                shard_url=url,
                job_files=[],
            )
            for c in placement.clients
        ]
        return RunPlan.build(
            job,
            placement,
            run_id,
            server,
            clients,
            server_host=host,
            created_at=self.clock(),
        )
