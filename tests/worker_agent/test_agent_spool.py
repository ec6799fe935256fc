"""Spool watchers against the real nats-server: events published once, bytes in the object store."""

import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker
from nats.js.object_store import ObjectStore

from rondo.contracts.bus import declare_streams, make_broker, publish
from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import ArtifactStaged, Event, RoundCompleted, RunEnded, RunStarted
from rondo.worker_agent.spool import OutSpoolStager, ServerSpoolWatcher

from .conftest import BusLog


@pytest.fixture
async def broker(service_settings: ServiceSettings) -> AsyncIterator[NatsBroker]:
    broker = make_broker(service_settings, "test-agent-spool")
    await broker.connect()
    await declare_streams(broker, replicas=1)
    yield broker
    await broker.stop()


@pytest.fixture
async def store(broker: NatsBroker) -> ObjectStore:
    return await declare_streams(broker, replicas=1)  # idempotent; the store as declared


def write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def server_watcher(
    tmp_path: Path, job_id: str, store: ObjectStore, broker: NatsBroker
) -> ServerSpoolWatcher:
    async def send(event: Event) -> None:
        await publish(broker, event)

    return ServerSpoolWatcher(
        spool_dir=tmp_path / "spool",
        ledger_path=tmp_path / "spool.ledger",
        agent_id="agent-1",
        job_id=job_id,
        run_id="run-1",
        site_names=["site-0-0", "site-1-1"],
        num_rounds=2,
        store=store,
        publish=send,
    )


async def test_round_files_become_events_once_with_the_checkpoint_staged(
    tmp_path: Path, store: ObjectStore, broker: NatsBroker, bus_log: BusLog
) -> None:
    job_id = f"job-spool-{os.getpid()}"
    spool = tmp_path / "spool"
    spool.mkdir()
    watcher = server_watcher(tmp_path, job_id, store, broker)

    await watcher.scan()  # empty spool: nothing
    write_json(spool / "run_started.json", {"nvflare_job_id": "nv-42"})
    checkpoint = os.urandom(300_000)  # several object-store chunks
    (spool / "round_00000.pt").write_bytes(checkpoint)
    (spool / "round_00001.pt").write_bytes(b"half-written")  # its .json is not there yet
    write_json(
        spool / "round_00000.json",
        {
            "round": 0,
            "num_rounds": 2,
            "metrics": {"loss": 0.5},
            "contributions": [
                {"site_name": "site-0-0", "samples": 10, "metrics": {"loss": 0.4}},
                {"site_name": "site-1-1", "samples": 30, "metrics": {"loss": 0.53}},
            ],
            "duration_s": 1.25,
        },
    )
    await watcher.scan()
    await watcher.scan()

    [started] = await bus_log.wait_for(RunStarted, job_id=job_id)
    assert started.nvflare_job_id == "nv-42"
    [completed] = await bus_log.wait_for(RoundCompleted, job_id=job_id)
    assert completed.round == 0 and completed.num_rounds == 2
    assert completed.metrics == {"loss": 0.5}
    assert [(c.site_name, c.slot, c.samples) for c in completed.contributions] == [
        ("site-0-0", 0, 10),
        ("site-1-1", 1, 30),
    ]
    assert completed.checkpoint_object == f"{job_id}/run-1/round_0.pt"
    assert completed.checkpoint_sha256 == hashlib.sha256(checkpoint).hexdigest()
    staged = await store.get(completed.checkpoint_object)
    assert staged.data == checkpoint

    # A watcher of a restarted agent reads the ledger: nothing is published twice.
    write_json(spool / "run_ended.json", {"completed": False, "error": "aborted"})
    restarted = server_watcher(tmp_path, job_id, store, broker)
    await restarted.scan()
    [ended] = await bus_log.wait_for(RunEnded, job_id=job_id)
    assert (ended.completed, ended.error) == (False, "aborted")
    assert len(bus_log.events(RunStarted, job_id=job_id)) == 1
    assert len(bus_log.events(RoundCompleted, job_id=job_id)) == 1


async def test_out_spool_files_are_staged_as_artifacts(
    tmp_path: Path, store: ObjectStore, broker: NatsBroker, bus_log: BusLog
) -> None:
    job_id = f"job-out-{os.getpid()}"
    out_spool = tmp_path / "out_spool"
    (out_spool / "round_1" / "plots").mkdir(parents=True)
    (out_spool / "round_1" / "plots" / "loss.png").write_bytes(b"\x89PNG...")
    (out_spool / "round_1" / "passwd").symlink_to("/etc/passwd")
    (out_spool / ".staging" / "round_2_x").mkdir(parents=True)
    (out_spool / ".staging" / "round_2_x" / "partial.txt").write_text("not yet")

    async def send(event: Event) -> None:
        await publish(broker, event)

    stager = OutSpoolStager(
        out_spool=out_spool,
        ledger_path=tmp_path / "out.ledger",
        agent_id="agent-1",
        job_id=job_id,
        run_id="run-1",
        slot=3,
        generation=2,
        store=store,
        publish=send,
    )
    await stager.scan()
    await stager.scan()

    [staged] = await bus_log.wait_for(ArtifactStaged, job_id=job_id)
    assert staged.path == "files_out/client_3/round_1/plots/loss.png"
    assert staged.object_name == f"{job_id}/run-1/client_3/round_1/plots/loss.png"
    assert staged.size == len(b"\x89PNG...")
    assert staged.generation == 2
    assert staged.sha256 == hashlib.sha256(b"\x89PNG...").hexdigest()
    assert (await store.get(staged.object_name)).data == b"\x89PNG..."
    assert len(bus_log.events(ArtifactStaged, job_id=job_id)) == 1
