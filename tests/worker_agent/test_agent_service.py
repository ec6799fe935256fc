"""The whole agent on the real bus and S3, with a fake NVFlare (the real one is tested later).

The fake `flare_runs` starts small Python processes that behave like NVFlare participants:
they print the readiness lines, write spool / out_dir files, and (client) leave a grandchild
in a new session, the way NVFlare starts its job processes.
"""

import io
import os
import secrets
import textwrap
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from faststream.nats import NatsBroker

from rondo.contracts.bus import declare_streams, make_broker, publish
from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import (
    ArtifactStaged,
    ClientAssignment,
    HealthReply,
    JobDispatched,
    JobFile,
    LogBatch,
    ProcessPhase,
    RoundCompleted,
    RunEnded,
    RunProcessChanged,
    RunStarted,
    RunStopRequested,
    ServerAssignment,
    Slot,
    WorkerHeartbeat,
)
from rondo.contracts.storage import S3Client
from rondo.contracts.training import TrainingConfig
from rondo.worker_agent.agent import WorkerAgent
from rondo.worker_agent.config import AgentSettings
from rondo.worker_agent.flare_runs import ClientRunSpec, ProcessSpec, ServerRunSpec
from rondo.worker_agent.sandbox import SandboxUser

from .conftest import BusLog, wait_until

CPU_SLOT = Slot(index=0, kind="cpu", model="cpu", total_memory_mb=4096, free_memory_mb=2048)

FAKE_CLIENT = textwrap.dedent(
    """
    import os, pathlib, subprocess, sys, time
    print("Successfully registered client:" + os.environ["SITE"] + " for project p", flush=True)
    if os.environ["CRASH"] == "1":
        print("NameError: name 'torch' is not defined", flush=True)
        sys.exit(3)
    grandchild = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    pathlib.Path("grandchild.pid").write_text(str(grandchild.pid))
    spool = pathlib.Path(os.environ["RONDO_OUT_SPOOL"])
    staging = spool / ".staging" / "round_0_x"
    staging.mkdir(parents=True)
    (staging / "note.txt").write_text("hello from round 0")
    staging.rename(spool / "round_0")
    print("trained round 0 on", len(os.listdir(os.environ["RONDO_DATA_ROOT"])), "files", flush=True)
    time.sleep(600)
    """
)

FAKE_SERVER = textwrap.dedent(
    """
    import json, os, pathlib, time
    print("Server started", flush=True)
    spool = pathlib.Path(os.environ["RONDO_SPOOL_DIR"])
    def put(name, data):
        tmp = spool / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(spool / name)
    put("run_started.json", json.dumps({"nvflare_job_id": "nv-fake"}).encode())
    put("round_00000.pt", b"weights-of-round-0")
    contribution = {"site_name": "site-0-0", "samples": 5, "metrics": {"loss": 0.25}}
    summary = {"round": 0, "num_rounds": 1, "metrics": {"loss": 0.25}, "duration_s": 0.5,
               "contributions": [contribution]}
    put("round_00000.json", json.dumps(summary).encode())
    put("run_ended.json", json.dumps({"completed": True, "error": None}).encode())
    time.sleep(600)
    """
)


def process_spec(
    argv: list[str], kit_dir: Path, env: dict[str, str], user: SandboxUser | None
) -> ProcessSpec:
    """Runs as the sandbox uid the agent claimed, like the real NVFlare processes."""
    output_log = kit_dir / "output.log"
    return ProcessSpec(argv, kit_dir, env, log_files=[output_log], output_log=output_log, user=user)


class FakeFlare:
    """Stands in for `rondo.worker_agent.flare_runs`."""

    def __init__(self) -> None:
        self.submitted: list[ServerRunSpec] = []

    def server_process(self, spec: ServerRunSpec) -> ProcessSpec:
        assert (spec.kit_dir / "startup" / "sub_start.sh").exists()
        assert (spec.admin_kit_dir / "startup" / "sub_start.sh").exists()
        env = {**os.environ, "RONDO_SPOOL_DIR": str(spec.spool_dir)}
        spec.spool_dir.mkdir(parents=True, exist_ok=True)
        return process_spec([spec.python, "-c", FAKE_SERVER], spec.kit_dir, env, spec.user)

    def submit_run(self, spec: ServerRunSpec, timeout_s: float) -> str:
        assert (spec.job_files_dir / "scripts" / "model_def.py").read_text() == "MODEL = 1\n"
        self.submitted.append(spec)
        return "nv-fake"

    def client_process(self, spec: ClientRunSpec) -> ProcessSpec:
        env = {
            **os.environ,
            "RONDO_OUT_SPOOL": str(spec.out_spool),
            "RONDO_DATA_ROOT": str(spec.data_root),
            "SITE": spec.site_name,
            "CRASH": "1" if spec.slot == 1 else "0",
        }
        return process_spec([spec.python, "-c", FAKE_CLIENT], spec.kit_dir, env, spec.user)


def zip_bytes(entries: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    return buffer.getvalue()


class Bucket:
    """A fresh bucket holding one job's objects, handing out presigned GET URLs."""

    def __init__(self, s3: S3Client) -> None:
        self.s3 = s3
        self.name = "agent-" + secrets.token_hex(4)
        s3.create_bucket(Bucket=self.name)

    def put(self, key: str, data: bytes) -> str:
        self.s3.put_object(Bucket=self.name, Key=key, Body=data)
        return self.url(key)

    def url(self, key: str) -> str:
        return self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.name, "Key": key}, ExpiresIn=3600
        )


@pytest.fixture
def bucket(s3: S3Client) -> Bucket:
    return Bucket(s3)


@pytest.fixture
async def scheduler(service_settings: ServiceSettings) -> AsyncIterator[NatsBroker]:
    """Plays the scheduler's part: publishes dispatches and stops."""
    broker = make_broker(service_settings, "test-scheduler")
    await broker.connect()
    await declare_streams(broker, replicas=1)
    yield broker
    await broker.stop()


@pytest.fixture
async def agent(
    service_settings: ServiceSettings, tmp_path: Path, scheduler: NatsBroker
) -> AsyncIterator[WorkerAgent]:
    """A started agent; the scheduler's part declared the streams first (agents only look
    them up)."""
    settings = AgentSettings(
        **service_settings.model_dump(exclude={"data_dir"}),
        data_dir=tmp_path,
        agent_id="agent-" + secrets.token_hex(4),
        agent_host="127.0.0.2",
        fl_port_range=(23000, 23009),
        inventory=[CPU_SLOT],
        heartbeat_interval_s=0.2,
        runtime="process",  # never containers, even where a Docker engine runs
    )
    agent = WorkerAgent(settings, flare=FakeFlare())
    await agent.start()
    yield agent
    await agent.stop()


def job_files(bucket: Bucket, prefix: str) -> list[JobFile]:
    files = {"scripts/model_def.py": b"MODEL = 1\n", "requirements/requirements.txt": b""}
    return [JobFile(path=p, url=bucket.put(prefix + p, data)) for p, data in files.items()]


def kit_url(bucket: Bucket, key: str) -> str:
    return bucket.put(key, zip_bytes({"startup/sub_start.sh": "#!/bin/sh\n", "local/x": ""}))


async def test_heartbeats_and_health_reach_the_bus(agent: WorkerAgent, bus_log: BusLog) -> None:
    agent_id = agent.settings.agent_id
    beats = await bus_log.wait_for(WorkerHeartbeat, count=2, agent_id=agent_id)
    assert beats[-1].subject == f"rondo.worker.heartbeat.{agent_id}"
    assert beats[-1].slots == [CPU_SLOT]
    assert beats[-1].fl_port_range == (23000, 23009)
    assert beats[-1].host == "127.0.0.2"
    assert beats[-1].running == []

    reply = await agent.broker.request(None, f"rondo.health.worker-agent.{agent_id}", timeout=5)
    health = HealthReply.model_validate_json(reply.body)
    assert health.healthy and health.detail["agent_id"] == agent_id


async def test_dispatched_run_reports_rounds_files_logs_and_stops_cleanly(
    agent: WorkerAgent, scheduler: NatsBroker, bucket: Bucket, bus_log: BusLog
) -> None:
    agent_id, job_id, run_id = agent.settings.agent_id, "job-" + secrets.token_hex(4), "run-a"
    files = job_files(bucket, "jobs/demo/")
    shard_key = "jobs/demo/shards/shard_0.zip"
    dispatch = JobDispatched(
        job_id=job_id,
        agent_id=agent_id,
        run_id=run_id,
        server_host="127.0.0.2",
        server=ServerAssignment(
            kit_url=kit_url(bucket, "kits/server.zip"),
            admin_kit_url=kit_url(bucket, "kits/admin.zip"),
            admin_name="admin@rondo",
            fed_learn_port=23000,
            admin_port=23001,
            site_names=["site-0-0"],
            job_files=files,
            has_custom_app=False,
            config=TrainingConfig(num_rounds=1),
        ),
        clients=[
            ClientAssignment(
                slot=0,
                site_name="site-0-0",
                kit_url=kit_url(bucket, "kits/site-0-0.zip"),
                shard_key=shard_key,
                shard_url=bucket.put(
                    shard_key, zip_bytes({"manifest.ndjson": "{}\n", "images/0.png": "x"})
                ),
                job_files=files,
            )
        ],
    )
    await publish(scheduler, dispatch)
    await publish(scheduler, dispatch)  # a duplicate changes nothing

    for role in ("server", "client"):
        for phase in (ProcessPhase.PREPARING, ProcessPhase.STARTED, ProcessPhase.READY):
            await bus_log.wait_for(RunProcessChanged, run_id=run_id, role=role, phase=phase)
    [started] = await bus_log.wait_for(RunStarted, job_id=job_id)
    assert started.nvflare_job_id == "nv-fake"
    [round_0] = await bus_log.wait_for(RoundCompleted, job_id=job_id)
    assert round_0.contributions[0].slot == 0
    [ended] = await bus_log.wait_for(RunEnded, job_id=job_id)
    assert ended.completed
    [note] = await bus_log.wait_for(ArtifactStaged, job_id=job_id)
    assert note.path == "files_out/client_0/round_0/note.txt"

    def client_log_lines() -> list[str] | None:
        batches = bus_log.events(LogBatch, job_id=job_id)
        lines = [line for b in batches if b.source.role == "client" for line in b.lines]
        return lines if "trained round 0 on 2 files" in lines else None

    await wait_until(client_log_lines, 10, "the client's training line in a LogBatch")

    def running_in_heartbeat() -> list[str] | None:
        beats = bus_log.events(WorkerHeartbeat, agent_id=agent_id)
        roles = sorted(p.role for p in beats[-1].running) if beats else []
        return roles if roles == ["client", "server"] else None

    await wait_until(running_in_heartbeat, 5, "both processes in a heartbeat")
    pids = [p.pid for p in agent.manager.running()]
    run_folder = agent.settings.work_root / "runs" / job_id / run_id
    grandchild = int((run_folder / "client_0" / "kit" / "grandchild.pid").read_text())

    await publish(scheduler, RunStopRequested(job_id=job_id, agent_id=agent_id, run_id=run_id))
    for role in ("server", "client"):
        [exited] = await bus_log.wait_for(
            RunProcessChanged, run_id=run_id, role=role, phase=ProcessPhase.EXITED
        )
        assert exited.expected and exited.error is None
    for pid in [*pids, grandchild]:
        assert pid is not None
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert agent.manager.running() == []
    await wait_until(lambda: not run_folder.exists() or None, 5, "the run folder to be removed")
    assert len(bus_log.events(RunProcessChanged, run_id=run_id, phase=ProcessPhase.PREPARING)) == 2


async def test_bad_shard_and_crashing_client_are_reported_with_their_cause(
    agent: WorkerAgent, scheduler: NatsBroker, bucket: Bucket, bus_log: BusLog
) -> None:
    agent_id, job_id, run_id = agent.settings.agent_id, "job-" + secrets.token_hex(4), "run-b"
    files = job_files(bucket, "jobs/bad/")
    evil_key, good_key = "jobs/bad/shards/shard_0.zip", "jobs/bad/shards/shard_1.zip"
    missing_key = "jobs/bad/shards/shard_2.zip"
    clients = [
        ClientAssignment(
            slot=slot,
            site_name=f"site-{slot}-0",
            kit_url=kit_url(bucket, f"kits/site-{slot}-0.zip"),
            shard_key=key,
            shard_url=bucket.put(key, zip_bytes(entries)),
            job_files=files,
        )
        for slot, key, entries in [
            (0, evil_key, {"manifest.ndjson": "{}\n", "../x": "evil"}),
            (1, good_key, {"manifest.ndjson": "{}\n"}),
        ]
    ]
    clients.append(
        ClientAssignment(
            slot=2,
            site_name="site-2-0",
            kit_url=kit_url(bucket, "kits/site-2-0.zip"),
            shard_key=missing_key,
            shard_url=bucket.url(missing_key),
            job_files=files,
        )
    )
    await publish(
        scheduler,
        JobDispatched(
            job_id=job_id, agent_id=agent_id, run_id=run_id, server_host="h", clients=clients
        ),
    )

    [refused] = await bus_log.wait_for(
        RunProcessChanged, run_id=run_id, slot=0, phase=ProcessPhase.EXITED
    )
    assert not refused.expected
    assert refused.error is not None
    assert refused.error.startswith(f"shard {evil_key}: entry '../x' escapes the data folder")

    [crashed] = await bus_log.wait_for(
        RunProcessChanged, run_id=run_id, slot=1, phase=ProcessPhase.EXITED
    )
    assert (crashed.expected, crashed.exit_code) == (False, 3)
    assert crashed.error is not None
    assert "NameError: name 'torch' is not defined" in crashed.error
    assert "client process exited with code 3" in crashed.error

    [missing] = await bus_log.wait_for(
        RunProcessChanged, run_id=run_id, slot=2, phase=ProcessPhase.EXITED
    )
    assert missing.error == f"shard {missing_key}: not found in the bucket (HTTP 404)"

    await publish(scheduler, RunStopRequested(job_id=job_id, agent_id=agent_id, run_id=run_id))
    await wait_until(lambda: agent.manager.running() == [] or None, 5, "the run to be gone")
    exits = bus_log.events(RunProcessChanged, run_id=run_id, phase=ProcessPhase.EXITED)
    assert len(exits) == 3, "a process already exited is not reported again on stop"


async def test_a_newer_run_of_a_job_supersedes_its_older_runs_here(
    agent: WorkerAgent, scheduler: NatsBroker, bucket: Bucket, bus_log: BusLog
) -> None:
    agent_id, job_id = agent.settings.agent_id, "job-" + secrets.token_hex(4)
    files = job_files(bucket, "jobs/again/")
    shard_key = "jobs/again/shards/shard_0.zip"
    shard_url = bucket.put(shard_key, zip_bytes({"manifest.ndjson": "{}\n"}))
    sent = datetime.now(UTC)

    def dispatch(run_id: str, site_name: str, at: datetime) -> JobDispatched:
        client = ClientAssignment(
            slot=0,
            site_name=site_name,
            kit_url=kit_url(bucket, f"kits/{run_id}.zip"),
            shard_key=shard_key,
            shard_url=shard_url,
            job_files=files,
        )
        return JobDispatched(
            job_id=job_id,
            agent_id=agent_id,
            run_id=run_id,
            server_host="h",
            clients=[client],
            occurred_at=at,
        )

    await publish(scheduler, dispatch("run-1", "site-0-0", sent))
    await bus_log.wait_for(RunProcessChanged, run_id="run-1", phase=ProcessPhase.READY)
    await publish(scheduler, dispatch("run-2", "site-0-1", sent + timedelta(seconds=1)))
    [old] = await bus_log.wait_for(RunProcessChanged, run_id="run-1", phase=ProcessPhase.EXITED)
    assert old.expected, "the older run is stopped, not crashed"
    await bus_log.wait_for(RunProcessChanged, run_id="run-2", phase=ProcessPhase.READY)
    assert [p.site_name for p in agent.manager.running()] == ["site-0-1"]

    # A dispatch older than the job's newest (an agent cut off gets it late) is ignored;
    # dispatches are handled in order, so once run-3 is up run-0 was seen.
    await publish(scheduler, dispatch("run-0", "site-0-0", sent - timedelta(seconds=1)))
    await publish(scheduler, dispatch("run-3", "site-0-2", sent + timedelta(seconds=2)))
    await bus_log.wait_for(RunProcessChanged, run_id="run-3", phase=ProcessPhase.READY)
    assert bus_log.events(RunProcessChanged, run_id="run-0") == []
    assert [p.site_name for p in agent.manager.running()] == ["site-0-2"]
    await publish(scheduler, RunStopRequested(job_id=job_id, agent_id=agent_id, run_id="run-3"))
    await wait_until(lambda: agent.manager.running() == [] or None, 5, "every run to be gone")
