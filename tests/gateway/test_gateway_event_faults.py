"""The gateway's side of "no event lost, no job stuck" (issue 14), on the real bus:

- a read-model handler that fails (its SQLite database locked past the busy timeout) has its
  event redelivered until it is applied, where it used to be dropped;
- an event dated far in the future (a forged "round 9999 in 2099") is ignored, so it cannot
  shadow the real snapshots after it;
- a job the scheduler never acknowledged is handed over again from the gateway's outbox;
- a training config or timing with a non-finite number (`Infinity`, `NaN`, which JSON parsers
  accept) or a timing beyond its bound is refused, naming the field, rather than submitted as a
  job no service could ever read.
"""

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from faststream.nats import NatsBroker
from gateway_helpers import (
    BusProbe,
    Gateway,
    assert_error,
    auth,
    eventually,
    job_name,
    upload_job,
)
from sqlalchemy.engine import make_url

from rondo.contracts.bus import publish
from rondo.contracts.database import SQLITE_BUSY_TIMEOUT_MS
from rondo.contracts.events import (
    JobProgress,
    JobSnapshot,
    JobStateChanged,
    JobSubmitted,
    utc_now,
)
from rondo.contracts.states import JobState
from rondo.contracts.storage import S3Client
from rondo.gateway.submissions import (
    REPUBLISH_AFTER_S,
    republish_unacknowledged,
    unacknowledged,
)
from rondo.gateway.users import CreatedUser

MakeUser = Callable[[], CreatedUser]


async def _submit(client: httpx.AsyncClient, user: CreatedUser, s3: S3Client) -> str:
    name = job_name()
    upload_job(s3, user.bucket, name)
    response = await client.post(
        "/api/jobs", json={"name": name, "config": {"num_rounds": 3}}, headers=auth(user)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _progress(job_id: str, current_round: int, reason: str, **fields: object) -> JobProgress:
    snapshot = JobSnapshot(
        state=JobState.RUNNING, reason=reason, current_round=current_round, num_rounds=3
    )
    return JobProgress.model_validate({"job_id": job_id, "snapshot": snapshot, **fields})


@asynccontextmanager
async def locked(database: Path, hold_s: float) -> AsyncIterator[None]:
    """Hold SQLite's write lock on `database` for `hold_s` from another connection (what a
    long write elsewhere, or a backup, does); the event loop runs on meanwhile."""
    ready = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(database, isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            ready.set()
            time.sleep(hold_s)
            connection.execute("COMMIT")
        finally:
            connection.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert await asyncio.to_thread(ready.wait, 10), "could not take the database's lock"
    try:
        yield
    finally:
        await asyncio.to_thread(thread.join)


async def test_a_progress_event_that_meets_a_locked_database_is_applied_later(
    gateway: Gateway,
    client: httpx.AsyncClient,
    make_user: MakeUser,
    s3: S3Client,
    publisher: NatsBroker,
) -> None:
    url = make_url(gateway.app.state.settings.database_url)
    if url.get_backend_name() != "sqlite":
        pytest.skip("PostgreSQL waits on a lock rather than failing")
    user = make_user()
    job_id = await _submit(client, user, s3)
    hold_s = SQLITE_BUSY_TIMEOUT_MS / 1000 + 1.5  # the handler's write times out once
    async with locked(Path(str(url.database)), hold_s):
        await publish(publisher, _progress(job_id, 2, "round 3 of 3"))

    async def applied() -> bool:
        response = await client.get(f"/api/jobs/{job_id}", headers=auth(user))
        body = response.json() if response.status_code == 200 else {}
        return bool(body.get("current_round") == 2 and body.get("reason") == "round 3 of 3")

    # The first try failed with "database is locked"; the redelivery (2 s later) lands.
    await eventually(applied, timeout=20)


async def test_an_event_dated_in_the_future_is_ignored(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client, publisher: NatsBroker
) -> None:
    user = make_user()
    job_id = await _submit(client, user, s3)
    forged = _progress(
        job_id, 9999, "forged", occurred_at=utc_now().replace(year=2099), event_id="forged"
    )
    await publish(publisher, forged)
    # Within the allowed clock skew: applied.
    real = _progress(job_id, 1, "round 2 of 3", occurred_at=utc_now() + timedelta(seconds=5))
    await publish(publisher, real)

    job = await eventually(_reason(client, user, job_id, "round 2 of 3"), timeout=10)
    assert job["current_round"] == 1
    # The forged date shadows nothing: a real snapshot after it still applies.
    later = _progress(
        job_id, 2, "round 3 of 3", occurred_at=real.occurred_at + timedelta(seconds=1)
    )
    await publish(publisher, later)
    job = await eventually(_reason(client, user, job_id, "round 3 of 3"), timeout=10)
    assert job["current_round"] == 2


def _reason(
    client: httpx.AsyncClient, user: CreatedUser, job_id: str, reason: str
) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/api/jobs/{job_id}", headers=auth(user))).json()
        return body if body["reason"] == reason else None

    return check


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"timing": {"worker_lost_after_s": Infinity}}', "timing.worker_lost_after_s"),
        ('{"timing": {"heartbeat_interval_s": NaN}}', "timing.heartbeat_interval_s"),
        ('{"timing": {"import_limit_s": 1e12}}', "timing.import_limit_s"),
        ('{"timing": {"below_min_clients_grace_s": 90000}}', "timing.below_min_clients_grace_s"),
        ('{"config": {"learning_rate": -Infinity}}', "config.learning_rate"),
        ('{"config": {"extra": {"decay": [0.5, NaN]}}}', "extra.decay[1]"),
    ],
)
async def test_a_non_finite_or_unbounded_timing_is_refused_naming_the_field(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client, body: str, field: str
) -> None:
    user = make_user()
    name = job_name()
    upload_job(s3, user.bucket, name)
    raw = body.replace("{", f'{{"name": "{name}", ', 1)
    response = await client.post(
        "/api/jobs",
        content=raw.encode(),
        headers={**auth(user), "Content-Type": "application/json"},
    )
    error = assert_error(response, 422, "validation_error")
    assert field in error["message"], error
    jobs = (await client.get("/api/jobs", headers=auth(user))).json()
    assert jobs["items"] == []


async def test_a_submission_the_scheduler_never_acknowledged_is_handed_over_again(
    gateway: Gateway,
    client: httpx.AsyncClient,
    make_user: MakeUser,
    s3: S3Client,
    publisher: NatsBroker,
    probe: Callable[[str], Awaitable[BusProbe]],
) -> None:
    """The job is stored with its `job.submitted` (an outbox): until the scheduler's first
    snapshot of it arrives, the outbox hands it over again (same event id, so JetStream and
    the scheduler take it once), as after a submission that met an unreachable bus."""
    submissions = await probe(JobSubmitted.SUBJECT)
    user = make_user()
    job_id = await _submit(client, user, s3)
    first = await submissions.wait_for(job_id=job_id)
    engine = gateway.app.state.engine

    later = utc_now() + timedelta(seconds=REPUBLISH_AFTER_S + 1)
    assert await republish_unacknowledged(engine, publisher, later) >= 1
    await eventually(lambda: len(submissions.matching(job_id=job_id)) == 2)
    again = submissions.matching(job_id=job_id)[1]
    assert again == first  # the very event, event_id and all

    # The scheduler acknowledges the job (its PENDING snapshot): no more hand-overs.
    pending = JobSnapshot(state=JobState.PENDING, num_rounds=3)
    await publish(publisher, JobStateChanged(job_id=job_id, previous_state=None, snapshot=pending))

    await eventually(lambda: job_id not in {j.id for j in unacknowledged(engine, later)})
    await republish_unacknowledged(engine, publisher, later)
    await asyncio.sleep(0.3)
    assert len(submissions.matching(job_id=job_id)) == 2
