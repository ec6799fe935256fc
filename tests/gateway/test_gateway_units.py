"""Gateway pieces without servers: keys, the operator command, SQLite settings, read-model
rules (unknown jobs, repeated transitions, terminal states), shard order."""

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.sse import ServerSentEvent
from sqlalchemy import Engine, text
from sqlmodel import Session
from support.databases import migrated_engine

from rondo.contracts.events import JobProgress, JobSnapshot, JobStateChanged
from rondo.contracts.states import JobState
from rondo.gateway.auth import (
    authenticate,
    bearer_token,
    generate_api_key,
    hash_api_key,
    is_well_formed_key,
)
from rondo.gateway.db import init_db, make_engine
from rondo.gateway.errors import ApiError
from rondo.gateway.job_logs import JobLogStore, prune_logs_forever
from rondo.gateway.migrations import MIGRATIONS
from rondo.gateway.models import Job, JobTransition
from rondo.gateway.pubsub import JobEventHub
from rondo.gateway.read_model import apply_progress, apply_state_changed
from rondo.gateway.users import ManageError, create_user
from rondo.gateway.validation import natural_key


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """The gateway's schema on the module's database (SQLite, then PostgreSQL)."""
    with migrated_engine(database_url, MIGRATIONS) as engine:
        yield engine


def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db' / 'gateway.db'}")
    init_db(engine)
    with engine.connect() as connection:
        pragma = {
            name: connection.execute(text(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": 5000,
        "foreign_keys": 1,
    }


def test_api_keys_are_prefixed_random_and_stored_hashed(engine: Engine) -> None:
    live, dev = generate_api_key(), generate_api_key("rsk_dev_")
    assert live.startswith("rsk_live_") and dev.startswith("rsk_dev_")
    assert is_well_formed_key(live) and is_well_formed_key(dev) and live != generate_api_key()
    assert not is_well_formed_key("rondo_abcdefghijklmnopqrstuvwxyz")
    assert not is_well_formed_key("rsk_live_short")
    with Session(engine) as session:
        created = create_user(session, "alice", "alice-bucket")
        stored = session.exec(text("SELECT key_hash FROM api_keys")).all()  # type: ignore[call-overload]
        assert [row[0] for row in stored] == [hash_api_key(created.api_key)]
        assert authenticate(session, created.api_key).id == created.user_id


@pytest.mark.parametrize(
    ("header", "code"),
    [(None, "malformed_bearer"), ("Basic abc", "malformed_bearer"), ("Bearer", "malformed_bearer")],
)
def test_bearer_header_must_be_well_formed(header: str | None, code: str) -> None:
    with pytest.raises(ApiError) as raised:
        bearer_token(header)
    assert raised.value.status_code == 401
    assert raised.value.body.code == code
    assert bearer_token("bearer  rsk_live_x ") == "rsk_live_x"


def test_create_user_is_idempotent_only_with_a_known_key(engine: Engine) -> None:
    key = "rsk_dev_" + "k" * 32
    with Session(engine) as session:
        first = create_user(session, "bob", "bob-bucket", key)
        again = create_user(session, "bob", "bob-bucket", key)
        assert again == first
        with pytest.raises(ManageError, match="cannot be shown"):
            create_user(session, "bob", "bob-bucket")
        with pytest.raises(ManageError, match="bucket"):
            create_user(session, "bob", "other-bucket", key)
        with pytest.raises(ManageError, match="another user"):
            create_user(session, "carol", "carol-bucket", key)
        with pytest.raises(ManageError, match="rsk_live_"):
            create_user(session, "dave", "dave-bucket", "rondo_" + "k" * 32)
        second_key = create_user(session, "bob", "bob-bucket", "rsk_live_" + "z" * 32)
        assert second_key.user_id == first.user_id


def test_shards_sort_in_slot_order() -> None:
    keys = ["s/shard_10.zip", "s/shard_2.zip", "s/shard_0.zip", "s/shard_1.zip"]
    assert sorted(keys, key=natural_key) == [
        "s/shard_0.zip",
        "s/shard_1.zip",
        "s/shard_2.zip",
        "s/shard_10.zip",
    ]


def _job(session: Session) -> Job:
    user = create_user(session, "frank", "frank-bucket")
    job = Job(user_id=user.user_id, name="j", bucket="b", files_prefix="jobs/j/", num_rounds=3)
    job.transitions = [JobTransition(state=JobState.PENDING, at=job.created_at)]
    session.add(job)
    session.commit()
    return job


def test_read_model_ignores_unknown_jobs_repeats_and_leaving_a_terminal_state(
    engine: Engine,
) -> None:
    now = datetime.now(UTC)
    with Session(engine) as session:
        job = _job(session)
        unknown = JobProgress(job_id="nope", snapshot=JobSnapshot(state="RUNNING", num_rounds=3))
        assert apply_progress(session, unknown) is None

        pending_again = JobStateChanged(
            job_id=job.id,
            previous_state=None,
            occurred_at=now,
            snapshot=JobSnapshot(state=JobState.PENDING, num_rounds=3, reason="placing"),
        )
        view = apply_state_changed(session, pending_again)
        assert view is not None and view.reason == "placing"
        assert [t.state for t in view.transitions] == [JobState.PENDING]

        cancelled = JobStateChanged(
            job_id=job.id,
            previous_state=JobState.PENDING,
            occurred_at=now + timedelta(seconds=1),
            snapshot=JobSnapshot(state=JobState.CANCELLED, num_rounds=3),
        )
        late_running = JobProgress(
            job_id=job.id,
            occurred_at=now + timedelta(seconds=2),
            snapshot=JobSnapshot(state=JobState.RUNNING, num_rounds=3),
        )
        assert apply_state_changed(session, cancelled) is not None
        assert apply_state_changed(session, cancelled) is None  # redelivered: no change
        assert apply_progress(session, late_running) is None
        session.refresh(job)
        assert job.state == JobState.CANCELLED
        assert job.updated_at.tzinfo is not None
        assert [t.state for t in job.transitions] == [JobState.PENDING, JobState.CANCELLED]


async def test_hub_drops_the_oldest_for_slow_listeners_and_close_ends_them() -> None:
    hub = JobEventHub(queue_size=2)
    with hub.subscribe("j") as queue, hub.subscribe("other") as other:
        for n in range(3):
            assert hub.publish("j", ServerSentEvent(event="state", data=n)) == 1
        hub.close()
        received = [queue.get_nowait() for _ in range(queue.qsize())]
        assert [e.data if e else None for e in received] == [2, None]
        assert other.get_nowait() is None
    assert hub.listener_count() == 0


class RecordingLogStore(JobLogStore):
    """Records the cutoffs it is asked to prune at; touches no database."""

    def __init__(self) -> None:
        self.cutoffs: list[datetime] = []

    def prune(self, ended_before: datetime) -> int:
        self.cutoffs.append(ended_before)
        return 0


async def test_log_pruning_starts_at_once_with_the_retention_cutoff() -> None:
    store, now = RecordingLogStore(), datetime(2026, 11, 25, tzinfo=UTC)
    pruning = asyncio.create_task(prune_logs_forever(store, 30, lambda: now))
    async with asyncio.timeout(5):
        while not store.cutoffs:
            await asyncio.sleep(0.01)
    pruning.cancel()
    assert store.cutoffs == [now - timedelta(days=30)]

    keep_forever = RecordingLogStore()
    await asyncio.wait_for(prune_logs_forever(keep_forever, 0, lambda: now), timeout=1)
    assert keep_forever.cutoffs == []
