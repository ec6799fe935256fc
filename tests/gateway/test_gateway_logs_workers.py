"""Job logs from `LogBatch` events (tail, range, live `log` events, redelivery) and the fleet
view from heartbeats, on a real nats-server; both only ever show the caller's own jobs."""

import asyncio
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
from faststream.nats import NatsBroker
from gateway_helpers import (
    Gateway,
    assert_error,
    auth,
    eventually,
    job_name,
    sse_events,
    upload_job,
)
from sqlmodel import Session

from rondo.contracts.bus import publish
from rondo.contracts.events import (
    JobSnapshot,
    JobStateChanged,
    LogBatch,
    LogSource,
    RunningProcess,
    Slot,
    WorkerHeartbeat,
)
from rondo.contracts.states import JobState
from rondo.contracts.storage import S3Client
from rondo.gateway.models import Job
from rondo.gateway.users import NewUser

MakeUser = Callable[[], NewUser]
SERVER = LogSource(role="server")


async def submitted_job(client: httpx.AsyncClient, user: NewUser, s3: S3Client) -> str:
    name = job_name()
    upload_job(s3, user.bucket, name)
    response = await client.post("/api/jobs", json={"name": name}, headers=auth(user))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def batch(job_id: str, run_id: str, first_line: int, *lines: str) -> LogBatch:
    return LogBatch(
        agent_id="agent-1",
        job_id=job_id,
        run_id=run_id,
        source=SERVER,
        first_line=first_line,
        lines=list(lines),
    )


async def test_log_lines_are_stored_once_streamed_live_and_read_by_tail_or_range(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client, publisher: NatsBroker
) -> None:
    user, stranger = make_user(), make_user()
    job_id = await submitted_job(client, user, s3)
    async with (
        asyncio.timeout(15),
        client.stream("GET", f"/api/jobs/{job_id}/events", headers=auth(user)) as response,
    ):
        events = sse_events(response)
        assert (await anext(events))[0] == "snapshot"

        await publish(publisher, batch(job_id, "run-1", 0, "a\n", "b\n", "c\n"))
        assert await anext(events) == (
            "log",
            {"source": "server", "first_line": 0, "lines": ["a", "b", "c"]},
        )
        await publish(publisher, batch(job_id, "run-1", 1, "b\n", "c\n"))  # repeated: no event
        await publish(publisher, batch(job_id, "run-1", 3, "d\n"))
        assert await anext(events) == ("log", {"source": "server", "first_line": 3, "lines": ["d"]})
        await publish(publisher, batch(job_id, "run-2", 0, "e\n"))  # a replacement run follows
        assert await anext(events) == ("log", {"source": "server", "first_line": 4, "lines": ["e"]})

    logs = f"/api/jobs/{job_id}/logs"
    everything = await client.get(logs, headers=auth(user))
    files_prefix = (await client.get(f"/api/jobs/{job_id}", headers=auth(user))).json()[
        "files_prefix"
    ]
    assert everything.json() == {
        "source": "server",
        "first_line": 0,
        "lines": ["a", "b", "c", "d", "e"],
        "total": 5,
        "file_key": f"{files_prefix}files_out/server.log",
    }
    tail = await client.get(logs, params={"tail": 2}, headers=auth(user))
    assert (tail.json()["first_line"], tail.json()["lines"]) == (3, ["d", "e"])
    window = await client.get(logs, params={"start": 1, "end": 3}, headers=auth(user))
    assert (window.json()["first_line"], window.json()["lines"]) == (1, ["b", "c"])
    client_log = await client.get(logs, params={"source": "client_0"}, headers=auth(user))
    assert client_log.json() == {
        "source": "client_0",
        "first_line": 0,
        "lines": [],
        "total": 0,
        "file_key": f"{files_prefix}files_out/client_0.log",
    }

    mixed = await client.get(logs, params={"tail": 2, "start": 0}, headers=auth(user))
    assert_error(mixed, 400, "invalid_range")
    backwards = await client.get(logs, params={"start": 3, "end": 2}, headers=auth(user))
    assert_error(backwards, 400, "invalid_range")
    bad_source = await client.get(logs, params={"source": "../server"}, headers=auth(user))
    assert_error(bad_source, 422, "validation_error")
    assert_error(await client.get(logs, headers=auth(stranger)), 404, "not_found")


async def test_lines_of_jobs_ended_before_the_retention_are_pruned(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    s3: S3Client,
    publisher: NatsBroker,
    gateway: Gateway,
) -> None:
    user = make_user()
    old_ended, new_ended, old_running = [await submitted_job(client, user, s3) for _ in range(3)]
    for job_id in (old_ended, new_ended):
        await publish(
            publisher,
            JobStateChanged(
                job_id=job_id,
                previous_state=JobState.PENDING,
                snapshot=JobSnapshot(state=JobState.CANCELLED, num_rounds=1),
            ),
        )
    for job_id in (old_ended, new_ended, old_running):
        await publish(publisher, batch(job_id, "run-1", 0, "a\n", "b\n"))

    async def stored(job_id: str) -> int | None:
        logs = await client.get(f"/api/jobs/{job_id}/logs", headers=auth(user))
        total = int(logs.json()["total"])
        return total or None

    for job_id in (old_ended, new_ended, old_running):
        assert await eventually(lambda job_id=job_id: stored(job_id)) == 2
    for job_id in (old_ended, new_ended):
        await eventually(lambda job_id=job_id: _state_is(client, user, job_id, "CANCELLED"))
    now = datetime.now(UTC)
    with Session(gateway.app.state.engine) as session:
        for job_id in (old_ended, old_running):
            job = session.get(Job, job_id)
            assert job is not None
            job.updated_at = now - timedelta(days=31)
            session.add(job)
        session.commit()

    pruned = gateway.app.state.log_store.prune(now - timedelta(days=30))

    assert pruned == 2
    assert await stored(old_ended) is None
    assert await stored(new_ended) == 2, "ended within the retention: kept"
    assert await stored(old_running) == 2, "still running: kept"


async def _state_is(
    client: httpx.AsyncClient, user: NewUser, job_id: str, state: str
) -> bool | None:
    job = (await client.get(f"/api/jobs/{job_id}", headers=auth(user))).json()
    return True if job["state"] == state else None


def heartbeat(agent_id: str, *running: RunningProcess) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        agent_id=agent_id,
        host="10.0.0.7",
        slots=[
            Slot(
                index=0, kind="gpu", model="rtx_4090", total_memory_mb=24000, free_memory_mb=20000
            ),
            Slot(index=1, kind="gpu", model="rtx_4090", total_memory_mb=24000, free_memory_mb=1000),
        ],
        fl_port_range=(20000, 20019),
        running=list(running),
        started_at=datetime.now(UTC),
    )


def client_process(job_id: str) -> RunningProcess:
    return RunningProcess(job_id=job_id, run_id="r", role="client", site_name="site-0-0", slot=0)


async def test_workers_view_shows_capacity_and_only_the_callers_jobs(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client, publisher: NatsBroker
) -> None:
    user, stranger = make_user(), make_user()
    own_job = await submitted_job(client, user, s3)
    their_job = await submitted_job(client, stranger, s3)
    agent_id = f"agent-{secrets.token_hex(3)}"
    beat = heartbeat(agent_id, client_process(own_job), client_process(their_job))

    async def worker(key: NewUser) -> dict[str, object] | None:
        fleet = (await client.get("/api/workers", headers=auth(key))).json()
        return next((w for w in fleet["workers"] if w["agent_id"] == agent_id), None)

    await publisher.publish(beat, subject=beat.subject)
    seen = await eventually(lambda: worker(user))
    assert seen["online"] is True and seen["host"] == "10.0.0.7"
    assert [slot["free_memory_mb"] for slot in seen["slots"]] == [20000, 1000]
    assert seen["jobs"] == [own_job]
    assert (await worker(stranger))["jobs"] == [their_job]  # type: ignore[index]

    fleet = (await client.get("/api/workers", headers=auth(user))).json()
    online = [w for w in fleet["workers"] if w["online"]]
    assert fleet["online_count"] == len(online)
    assert fleet["total_free_memory_mb"] == sum(
        s["free_memory_mb"] for w in online for s in w["slots"]
    )

    # Silent for longer than RONDO_GATEWAY_WORKER_ONLINE_S: still listed, offline.
    async def offline() -> dict[str, object] | None:
        found = await worker(user)
        return found if found is not None and found["online"] is False else None

    assert (await eventually(offline, timeout=5))["jobs"] == [own_job]
