"""Two schedulers sharing one PostgreSQL database never place two jobs on one worker slot.

Each scheduler has its own store and engine (as two processes would) and runs in its own
thread and event loop. Their dispatchers are gated so that both have planned, on the same free
slot, before either commits its run: the store's placement lock and check let one commit win.
(SQLite serves a single scheduler, so this runs on PostgreSQL only.)
"""

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from scheduler_helpers import FakeClock, Published, StubDispatcher, cpu_heartbeat, submitted
from support.databases import migrated_engine, new_database

from rondo.contracts.events import JobDispatched
from rondo.contracts.states import JobState
from rondo.scheduler.config import SchedulerSettings
from rondo.scheduler.dispatch import RunPlan
from rondo.scheduler.migrations import MIGRATIONS
from rondo.scheduler.service import Scheduler
from rondo.scheduler.store import JobStore, SqlJobStore
from rondo.stack.processes import wait_until


class GatedDispatcher(StubDispatcher):
    """Builds a run only when the other scheduler is building one too."""

    def __init__(self, clock: FakeClock, gate: threading.Barrier) -> None:
        super().__init__(clock)
        self._gate = gate

    def create_run(self, *args: Any, **kwargs: Any) -> RunPlan:
        self._gate.wait(timeout=30)
        return super().create_run(*args, **kwargs)


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> str:
    return new_database(request, "postgresql")


@pytest.fixture
def stores(postgres_url: str) -> Iterator[list[JobStore]]:
    """Two stores on the one database, each with its own engine."""
    with ExitStack() as engines:
        yield [
            SqlJobStore(engines.enter_context(migrated_engine(postgres_url, MIGRATIONS)))
            for _ in range(2)
        ]


def test_two_schedulers_racing_for_one_slot_place_one_job(
    stores: list[JobStore], tmp_path: Path
) -> None:
    gate = threading.Barrier(2)
    published = Published()
    clocks = [FakeClock(), FakeClock()]
    first, second = (
        Scheduler(
            SchedulerSettings(data_dir=tmp_path / str(n)),
            store,
            GatedDispatcher(clock, gate),
            published,
            clock,
        )
        for n, (store, clock) in enumerate(zip(stores, clocks, strict=True))
    )
    heartbeat = cpu_heartbeat("agent-a")  # one agent with one CPU slot
    for scheduler in (first, second):
        scheduler.on_heartbeat(heartbeat)

    # The first scheduler plans the only job it knows onto the slot and waits at the gate; an
    # older job reaches the second scheduler, which plans that one onto the same slot.
    asyncio.run(first.on_submitted(submitted("job-late", shards=1)))
    clocks[1].advance(-60)
    with ThreadPoolExecutor(max_workers=2) as pool:
        placing = [pool.submit(asyncio.run, first.place_pending())]
        assert wait_until(lambda: gate.n_waiting == 1, timeout_s=10)
        asyncio.run(second.on_submitted(submitted("job-early", shards=1)))
        placing.append(pool.submit(asyncio.run, second.place_pending()))
        for placed in placing:
            placed.result(timeout=30)

    store = stores[0]
    held = Counter((slot.agent_id, slot.device_index) for slot in store.list_active_slots())
    assert held == {("agent-a", 0): 1}
    assert len(store.list_active_runs()) == 1
    dispatched = {event.event_id for event in published.of(JobDispatched)}
    assert len(dispatched) == 1, "the losing scheduler dispatched nothing"
    jobs = store.list_jobs([JobState.PENDING])
    assert sorted(job.run_id is None for job in jobs) == [False, True]
