"""The dashboard's server side: every page path answers the page shell under a strict
Content-Security-Policy, its assets and Monaco are served, and `GET /api/events` streams the
changes of the caller's own jobs only."""

import asyncio
from collections.abc import Callable

import httpx
from faststream.nats import NatsBroker
from gateway_helpers import assert_error, auth, sse_events, submitted_job

from rondo.contracts.bus import publish
from rondo.contracts.events import JobSnapshot, JobStateChanged
from rondo.contracts.states import JobState, WorkerPanel
from rondo.contracts.storage import S3Client
from rondo.gateway.dashboard import PAGE_PATHS
from rondo.gateway.users import NewUser

MakeUser = Callable[[], NewUser]


def _started(job_id: str) -> JobStateChanged:
    snapshot = JobSnapshot(
        state=JobState.RUNNING, num_rounds=5, run_id="run-1", workers=WorkerPanel(total=2)
    )
    return JobStateChanged(job_id=job_id, previous_state=JobState.PENDING, snapshot=snapshot)


async def test_every_page_path_answers_the_shell_under_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    paths = [path.replace("{job_id}", "0b7f2c4e") for path in PAGE_PATHS]
    for path in paths:
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/static/js/app.js">' in response.text
        policy = response.headers["content-security-policy"]
        assert "script-src 'self';" in policy
        assert "frame-ancestors 'none'" in policy

    for asset in ("/static/js/app.js", "/static/css/app.css", "/monaco/vs/loader.js"):
        response = await client.get(asset)
        assert response.status_code == 200, asset
    assert (await client.get("/static/js/no-such-module.js")).status_code == 404


async def test_user_stream_needs_a_key(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/events"), 401, "malformed_bearer")


async def test_user_stream_carries_only_the_callers_own_jobs(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client, publisher: NatsBroker
) -> None:
    alice, bob = make_user(), make_user()
    alices_job = await submitted_job(client, alice, s3)
    bobs_job = await submitted_job(client, bob, s3)
    async with (
        asyncio.timeout(15),
        client.stream("GET", "/api/events", headers=auth(alice)) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        assert await anext(events) == ("ready", {})

        # Bob's change is applied first (one consumer, in order): had it leaked, it came first.
        await publish(publisher, _started(bobs_job))
        await publish(publisher, _started(alices_job))
        kind, job = await anext(events)
        assert (kind, job["id"], job["state"]) == ("state", alices_job, "RUNNING")
