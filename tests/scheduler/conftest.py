"""Scheduler fixtures: a store (on SQLite, then on PostgreSQL), a clock, a publish collector."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from scheduler_helpers import FakeClock, Published, StubDispatcher
from support.databases import migrated_engine

from rondo.scheduler.config import SchedulerSettings
from rondo.scheduler.migrations import MIGRATIONS
from rondo.scheduler.outbox import Outbox
from rondo.scheduler.reconciler import Reconciler
from rondo.scheduler.service import Scheduler
from rondo.scheduler.state_machine import JobStateMachine
from rondo.scheduler.store import JobStore, SqlJobStore


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    """An empty store on the module's database, emptied again after the test."""
    with migrated_engine(database_url, MIGRATIONS) as engine:
        yield SqlJobStore(engine)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def machine(store: JobStore, clock: FakeClock, published: Published) -> JobStateMachine:
    return JobStateMachine(store, Outbox(store, published), clock)


@pytest.fixture
def stub_dispatcher(clock: FakeClock) -> StubDispatcher:
    return StubDispatcher(clock)


@pytest.fixture
def scheduler(
    store: JobStore,
    clock: FakeClock,
    published: Published,
    stub_dispatcher: StubDispatcher,
    tmp_path: Path,
) -> Scheduler:
    settings = SchedulerSettings(
        data_dir=tmp_path,
        placement_wait_s=60,
        server_start_s=30,
        round_progress_s=100,
    )
    return Scheduler(settings, store, stub_dispatcher, published, clock)


@pytest.fixture
def reconciler(scheduler: Scheduler) -> Reconciler:
    return Reconciler(scheduler)
