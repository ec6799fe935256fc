"""Heartbeats at fleet scale: the registry writes an agent to the store only when a restarted
scheduler would need it, in one write per batch, and the intake takes heartbeats off a real
NATS in batches, in arrival order."""

import asyncio

import nats
import pytest
from scheduler_helpers import FakeClock, cpu_heartbeat

from rondo.contracts.events import WorkerHeartbeat
from rondo.contracts.heartbeats import HeartbeatIntake
from rondo.scheduler.models import WorkerPublic
from rondo.scheduler.store import JobStore
from rondo.scheduler.workers import PERSIST_EVERY_S, WorkerRegistry
from rondo.stack.servers import NatsServer

LOST_AFTER_S = 10.0


def saved(store: JobStore) -> dict[str, WorkerPublic]:
    return {worker.agent_id: worker for worker in store.list_workers()}


def with_free_memory(heartbeat: WorkerHeartbeat, free_mb: int) -> WorkerHeartbeat:
    slot = heartbeat.slots[0].model_copy(update={"free_memory_mb": free_mb})
    return heartbeat.model_copy(update={"slots": [slot]})


def test_a_batch_saves_each_new_or_changed_agent_once_with_its_latest_word(
    store: JobStore, clock: FakeClock
) -> None:
    registry = WorkerRegistry(store, clock)
    first = cpu_heartbeat("agent-a")
    moved = cpu_heartbeat("agent-a", host="10.0.0.7")

    assert registry.observe_all([first, cpu_heartbeat("agent-b"), moved], LOST_AFTER_S)

    workers = saved(store)
    assert set(workers) == {"agent-a", "agent-b"}
    assert workers["agent-a"].host == "10.0.0.7"


def test_moving_free_memory_is_kept_in_memory_and_saved_only_now_and_then(
    store: JobStore, clock: FakeClock
) -> None:
    registry = WorkerRegistry(store, clock)
    beat = cpu_heartbeat("agent-a")
    registry.observe(beat, LOST_AFTER_S)
    clock.advance(2)

    # Not a change for placement to wake up for: its next pass reads the registry anyway.
    assert not registry.observe(with_free_memory(beat, 100), LOST_AFTER_S)
    heard = registry.get("agent-a")
    assert heard is not None and heard.slots[0].free_memory_mb == 100
    assert saved(store)["agent-a"].slot_list[0].free_memory_mb == 6000

    clock.advance(PERSIST_EVERY_S)
    registry.observe(with_free_memory(beat, 200), LOST_AFTER_S)
    assert saved(store)["agent-a"].slot_list[0].free_memory_mb == 200


def test_a_restarted_scheduler_wakes_for_its_known_fleet_without_rewriting_it(
    store: JobStore, clock: FakeClock
) -> None:
    beat = cpu_heartbeat("agent-a")
    WorkerRegistry(store, clock).observe(beat, LOST_AFTER_S)
    registry = WorkerRegistry(store, clock)
    assert registry.restore() == 1
    clock.advance(1)

    assert registry.observe(with_free_memory(beat, 100), LOST_AFTER_S)  # fresh again
    assert saved(store)["agent-a"].slot_list[0].free_memory_mb == 6000
    assert [hb.agent_id for hb in registry.online(LOST_AFTER_S)] == ["agent-a"]


@pytest.mark.timeout(60)
async def test_intake_hands_heartbeats_over_in_batches_and_drops_malformed_ones(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    beats = [cpu_heartbeat(f"agent-{index:03d}") for index in range(300)]
    batches: list[list[WorkerHeartbeat]] = []
    all_in = asyncio.Event()

    def handle(batch: list[WorkerHeartbeat]) -> None:
        batches.append(batch)
        if sum(map(len, batches)) == len(beats):
            all_in.set()

    intake = HeartbeatIntake(handle)
    listener = await nats.connect(nats_server.url)
    agents = await nats.connect(nats_server.url)
    try:
        await intake.start(listener)
        await agents.publish("rondo.worker.heartbeat.agent-bad", b'{"agent_id": 1}')
        for beat in beats:
            await agents.publish(beat.subject, beat.model_dump_json().encode())
        await agents.flush()
        await asyncio.wait_for(all_in.wait(), timeout=30)
    finally:
        await intake.stop()
        await agents.close()
        await listener.close()

    assert [hb.agent_id for batch in batches for hb in batch] == [b.agent_id for b in beats]
    assert len(batches) < len(beats)
    assert "dropped a malformed heartbeat on rondo.worker.heartbeat.agent-bad" in caplog.text
