"""Scheduler/agent events on the real bus update the gateway's read model, its metrics and the
job's live SSE stream; redelivered and stale events change nothing."""

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

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

from rondo.contracts.bus import publish
from rondo.contracts.events import (
    FailureCause,
    JobError,
    JobFailed,
    JobOutputsWritten,
    JobProgress,
    JobSnapshot,
    JobStateChanged,
    RoundCompleted,
    WorkerContribution,
)
from rondo.contracts.states import JobState, SlotStatus, WorkerPanel, WorkerSlotView
from rondo.contracts.storage import S3Client
from rondo.gateway.users import CreatedUser

MakeUser = Callable[[], CreatedUser]


async def _submit(client: httpx.AsyncClient, user: CreatedUser, s3: S3Client) -> str:
    name = job_name()
    upload_job(s3, user.bucket, name)
    response = await client.post(
        "/api/jobs", json={"name": name, "config": {"num_rounds": 2}}, headers=auth(user)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _running(job_id: str, **snapshot: object) -> JobSnapshot:
    fields: dict[str, object] = {
        "state": JobState.RUNNING,
        "num_rounds": 2,
        "run_id": "run-1",
        "workers": WorkerPanel(total=2, connected=2),
        "slots": [
            WorkerSlotView(slot=n, site_name=f"site-{n}-0", status=SlotStatus.CONNECTED)
            for n in range(2)
        ],
    }
    return JobSnapshot.model_validate({**fields, **snapshot})


def _round(job_id: str, number: int, loss: float) -> RoundCompleted:
    return RoundCompleted(
        agent_id="agent-1",
        job_id=job_id,
        run_id="run-1",
        round=number,
        num_rounds=2,
        metrics={"loss": loss},
        contributions=[
            WorkerContribution(site_name="site-0-0", slot=0, samples=10, metrics={"loss": loss})
        ],
        duration_s=1.5,
        checkpoint_object=f"{job_id}/round_{number}.pt",
        checkpoint_sha256="0" * 64,
    )


async def test_events_update_detail_metrics_and_survive_redelivery(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client, publisher: NatsBroker
) -> None:
    user = make_user()
    job_id = await _submit(client, user, s3)
    started = JobStateChanged(
        job_id=job_id, previous_state=JobState.PENDING, snapshot=_running(job_id)
    )
    progress = JobProgress(
        job_id=job_id, snapshot=_running(job_id, current_round=1, reason="round 2 of 2")
    )
    stale = JobProgress(
        job_id=job_id,
        occurred_at=progress.occurred_at - timedelta(seconds=30),
        snapshot=_running(job_id, current_round=0, reason="old news"),
    )
    first_round = _round(job_id, 0, loss=0.9)
    await publish(publisher, started)
    await publish(publisher, progress)
    await publish(publisher, stale)
    await publish(publisher, first_round)
    # A redelivery after a crash: same content, new event id (JetStream does not drop it).
    await publish(publisher, first_round.model_copy(update={"event_id": "redelivered"}))
    await publish(publisher, _round(job_id, 1, loss=0.5))

    async def detail() -> dict[str, object] | None:
        body = (await client.get(f"/api/jobs/{job_id}", headers=auth(user))).json()
        # The state and progress consumers run independently: wait for both.
        done = body["current_round"] == 1 and len(body["transitions"]) == 2
        return body if done else None

    job = await eventually(detail)
    assert job["reason"] == "round 2 of 2"
    assert job["workers"] == {"total": 2, "connected": 2, "errors": 0, "disconnected": 0}
    assert [s["site_name"] for s in job["slots"]] == ["site-0-0", "site-1-0"]
    assert [t["state"] for t in job["transitions"]] == ["PENDING", "RUNNING"]

    async def metrics() -> dict[str, object] | None:
        body = (await client.get(f"/api/jobs/{job_id}/metrics", headers=auth(user))).json()
        return body if len(body["rounds"]) == 2 else None

    rounds = (await eventually(metrics))["rounds"]
    assert [(r["round"], r["metrics"]["loss"]) for r in rounds] == [(0, 0.9), (1, 0.5)]
    assert rounds[0]["contributions"][0]["samples"] == 10
    assert rounds[0]["duration_s"] == 1.5
    await asyncio.sleep(0.3)  # let the redelivered round and the stale snapshot land too
    rounds_again = (await client.get(f"/api/jobs/{job_id}/metrics", headers=auth(user))).json()
    assert len(rounds_again["rounds"]) == 2
    assert (await client.get(f"/api/jobs/{job_id}", headers=auth(user))).json()["reason"] == (
        "round 2 of 2"
    )


async def test_failure_is_stored_and_a_finished_job_cannot_be_cancelled(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client, publisher: NatsBroker
) -> None:
    user = make_user()
    job_id = await _submit(client, user, s3)
    await publish(
        publisher,
        JobFailed(
            job_id=job_id,
            bucket=user.bucket,
            prefix="jobs/x/",
            message="CUDA out of memory",
            cause=FailureCause.OOM,
            hint="lower batch_size",
        ),
    )
    await publish(
        publisher,
        JobStateChanged(
            job_id=job_id,
            previous_state=JobState.PENDING,
            snapshot=JobSnapshot(state=JobState.FAILED, num_rounds=2, reason="worker 0 OOM"),
        ),
    )

    async def failed() -> dict[str, object] | None:
        body = (await client.get(f"/api/jobs/{job_id}", headers=auth(user))).json()
        return body if body["state"] == "FAILED" and body["error"] else None

    job = await eventually(failed)
    assert job["error"] == {
        "message": "CUDA out of memory",
        "cause": "oom",
        "hint": "lower batch_size",
    }
    assert [t["state"] for t in job["transitions"]] == ["PENDING", "FAILED"]
    assert_error(
        await client.post(f"/api/jobs/{job_id}/cancel", headers=auth(user)), 409, "job_not_active"
    )


async def test_failed_state_arrives_with_its_error(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client, publisher: NatsBroker
) -> None:
    """The snapshot of a FAILED transition carries the error: no moment shows FAILED without
    it, even before (or without) the separate `job.failed` event."""
    user = make_user()
    job_id = await _submit(client, user, s3)
    error = JobError(message="shard missing", cause=FailureCause.MISSING_FILE, hint="re-upload")
    await publish(
        publisher,
        JobStateChanged(
            job_id=job_id,
            previous_state=JobState.PENDING,
            snapshot=JobSnapshot(state=JobState.FAILED, num_rounds=2, error=error),
        ),
    )

    async def failed() -> dict[str, object] | None:
        body = (await client.get(f"/api/jobs/{job_id}", headers=auth(user))).json()
        return body if body["state"] == "FAILED" else None

    job = await eventually(failed)
    assert job["error"] == error.model_dump(mode="json")


async def test_outputs_written_is_recorded_once_and_streamed(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client, publisher: NatsBroker
) -> None:
    """An ended job says when its outputs became final: the first announcement counts (a
    redelivery with a new id changes nothing), and live listeners hear it."""
    user = make_user()
    job_id = await _submit(client, user, s3)
    await publish(
        publisher,
        JobStateChanged(
            job_id=job_id,
            previous_state=JobState.RUNNING,
            snapshot=_running(job_id, state=JobState.FINISHED, current_round=2),
        ),
    )

    async def finished() -> dict[str, object] | None:
        body = (await client.get(f"/api/jobs/{job_id}", headers=auth(user))).json()
        return body if body["state"] == "FINISHED" else None

    assert (await eventually(finished))["outputs_written_at"] is None
    written = JobOutputsWritten(job_id=job_id, rounds_written=2)
    async with (
        asyncio.timeout(15),
        client.stream("GET", f"/api/jobs/{job_id}/events", headers=auth(user)) as response,
    ):
        events = sse_events(response)
        kind, data = await anext(events)
        assert (kind, data["outputs_written_at"]) == ("snapshot", None)
        await publish(publisher, written)
        kind, data = await anext(events)
        assert kind == "progress"
        assert data["state"] == "FINISHED"
        assert data["outputs_written_at"] is not None

    later = written.model_copy(
        update={"event_id": "redelivered", "occurred_at": written.occurred_at + timedelta(1)}
    )
    await publish(publisher, later)
    await asyncio.sleep(0.3)  # let the redelivery land
    job = (await client.get(f"/api/jobs/{job_id}", headers=auth(user))).json()
    assert job["outputs_written_at"] == data["outputs_written_at"]
    assert datetime.fromisoformat(job["outputs_written_at"]) == written.occurred_at


async def test_sse_sends_a_snapshot_then_live_changes(
    client: httpx.AsyncClient,
    gateway: Gateway,
    make_user: MakeUser,
    s3: S3Client,
    publisher: NatsBroker,
) -> None:
    user = make_user()
    job_id = await _submit(client, user, s3)
    async with (
        asyncio.timeout(15),
        client.stream("GET", f"/api/jobs/{job_id}/events", headers=auth(user)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        kind, data = await anext(events)
        assert (kind, data["id"], data["state"]) == ("snapshot", job_id, "PENDING")

        await publish(
            publisher,
            JobStateChanged(
                job_id=job_id, previous_state=JobState.PENDING, snapshot=_running(job_id)
            ),
        )
        kind, data = await anext(events)
        assert (kind, data["state"]) == ("state", "RUNNING")
        assert [t["state"] for t in data["transitions"]] == ["PENDING", "RUNNING"]

        await publish(publisher, _round(job_id, 0, loss=0.7))
        kind, data = await anext(events)
        assert (kind, data["round"], data["metrics"]) == ("round", 0, {"loss": 0.7})
        assert gateway.app.state.hub.listener_count(job_id) == 1

    await eventually(lambda: gateway.app.state.hub.listener_count(job_id) == 0)
