"""Gateway hardening, each tried as an abuser would: event streams outliving their API key,
spraying guessed keys from one address, file keys that are not paths, and presigned URLs in the
worker-agent's logs. A gateway served by uvicorn (its database on SQLite, then PostgreSQL)
against the session's real nats-server and SeaweedFS.

Each protection was checked by hand to fail its test when switched off (the `StreamGuard`
watch, `FailedAuthLimiter.check`, the segment checks of `check_key`, `quiet_url_logging`).
"""

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from gateway.gateway_helpers import assert_error, bucket_listing
from opentelemetry.sdk.trace import TracerProvider
from sqlmodel import Session

from rondo.contracts.config import ServiceSettings
from rondo.contracts.storage import S3Client, make_s3_client
from rondo.gateway.app import create_app
from rondo.gateway.config import GatewaySettings
from rondo.gateway.models import Job, User
from rondo.gateway.users import NewUser, add_user, revoke_api_keys
from rondo.worker_agent.downloads import (
    DownloadError,
    download,
    make_http_client,
    redact_urls,
)

CHECK_INTERVAL_S = 0.5
# Streams must end within this of the key's revocation (a few check intervals).
STREAM_END_S = 5.0
AUTH_FAILURE_BURST = 5
AUTH_FAILURES_PER_S = 0.5


@pytest.fixture(scope="module")
def gateway_settings(
    service_settings: ServiceSettings, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> GatewaySettings:
    return GatewaySettings(
        **service_settings.model_dump(exclude={"data_dir"}),
        data_dir=tmp_path_factory.mktemp("hardened-gateway"),
        gateway_database_url=database_url,
        gateway_stream_auth_check_s=CHECK_INTERVAL_S,
        gateway_auth_failure_burst=AUTH_FAILURE_BURST,
        gateway_auth_failures_per_s=AUTH_FAILURES_PER_S,
    )


@pytest.fixture(scope="module")
async def gateway(gateway_settings: GatewaySettings) -> AsyncIterator[tuple[str, Any]]:
    """(URL, app) of `create_app` served by uvicorn on a free loopback port."""
    app = create_app(gateway_settings, tracer_provider=TracerProvider())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(20):
        while not server.started:
            assert not task.done(), "uvicorn exited while starting"
            await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    app.state.hub.close()
    server.should_exit = True
    await task
    sock.close()


def client_from(url: str, address: str) -> httpx.AsyncClient:
    """A client whose connections come from `address` (any 127.x.y.z is this machine), so the
    gateway sees a client address of its own."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=10)


@pytest.fixture
async def client(gateway: tuple[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_from(gateway[0], "127.0.0.1") as http:
        yield http


@pytest.fixture
def make_user(gateway: tuple[str, Any]) -> Callable[[], NewUser]:
    app = gateway[1]

    def make() -> NewUser:
        name = f"tenant-{secrets.token_hex(4)}"
        with Session(app.state.engine) as session:
            return add_user(
                session,
                app.state.storage_admin,
                app.state.secret_box,
                name,
                name,
                platform_bucket=app.state.settings.platform_bucket,
            )

    return make


def auth(user: NewUser) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.api_key}"}


def stored_job(app: Any, user: NewUser) -> str:
    """A PENDING job of `user` in the read model (what a submission leaves)."""
    with Session(app.state.engine) as session:
        job = Job(
            user_id=user.user_id,
            name=f"job-{secrets.token_hex(3)}",
            bucket=user.bucket,
            files_prefix="jobs/x/",
            num_rounds=1,
        )
        session.add(job)
        session.commit()
        return job.id


class OpenStream:
    """An SSE response being read line by line."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def first_event(self) -> str:
        async with asyncio.timeout(5):
            async for line in self._lines:
                if line.startswith("event:"):
                    return line.removeprefix("event:").strip()
        raise AssertionError("the stream ended before its first event")

    async def ends_within(self, seconds: float) -> bool:
        """Whether the server ends the stream within `seconds` (lines before the end are
        skipped)."""
        try:
            async with asyncio.timeout(seconds):
                async for _line in self._lines:
                    pass
        except TimeoutError:
            return False
        return True


async def _open(client: httpx.AsyncClient, path: str, user: NewUser) -> OpenStream:
    request = client.build_request("GET", path, headers=auth(user))
    response = await client.send(request, stream=True)
    assert response.status_code == 200, await response.aread()
    return OpenStream(response)


@pytest.mark.parametrize("path", ["/api/events", "/api/jobs/{job}/events"])
async def test_streams_end_once_their_key_is_revoked_others_stay_open(
    client: httpx.AsyncClient, gateway: tuple[str, Any], make_user: Callable[[], NewUser], path: str
) -> None:
    app = gateway[1]
    revoked, kept = make_user(), make_user()
    revoked_stream = await _open(client, path.format(job=stored_job(app, revoked)), revoked)
    kept_stream = await _open(client, path.format(job=stored_job(app, kept)), kept)
    try:
        assert await revoked_stream.first_event() in ("ready", "snapshot")
        assert await kept_stream.first_event() in ("ready", "snapshot")
        with Session(app.state.engine) as session:
            revoke_api_keys(session, revoked.name, None)
        revoked_at = time.monotonic()
        assert await revoked_stream.ends_within(STREAM_END_S), "the revoked key's stream is open"
        print(f"{path}: stream ended {time.monotonic() - revoked_at:.2f} s after the revocation")
        assert not await kept_stream.ends_within(3 * CHECK_INTERVAL_S), "a valid stream ended"
        again = await client.get(path.format(job="x"), headers=auth(revoked))
        assert_error(again, 401, "invalid_api_key")
    finally:
        await revoked_stream.response.aclose()
        await kept_stream.response.aclose()


async def test_streams_end_once_their_user_is_removed(
    client: httpx.AsyncClient, gateway: tuple[str, Any], make_user: Callable[[], NewUser]
) -> None:
    app = gateway[1]
    user = make_user()
    stream = await _open(client, f"/api/jobs/{stored_job(app, user)}/events", user)
    try:
        assert await stream.first_event() == "snapshot"
        with Session(app.state.engine) as session:
            row = session.get(User, user.user_id)
            assert row is not None
            session.delete(row)  # the database removes the user's keys and jobs with it
            session.commit()
        assert await stream.ends_within(STREAM_END_S), "the removed user's stream is open"
    finally:
        await stream.response.aclose()
    async with asyncio.timeout(5):  # the other tests' streams close as their clients leave
        while app.state.stream_guard.stream_count():
            await asyncio.sleep(0.05)


async def test_spraying_keys_from_one_address_is_stopped_there_only(
    gateway: tuple[str, Any], make_user: Callable[[], NewUser]
) -> None:
    """Every guess is a new key, so the per-key limit never trips; the per-address one does:
    after the burst, 429 with Retry-After for any key from that address (a right guess too),
    also when the guesser claims other addresses in X-Forwarded-For; other addresses are
    served; after Retry-After the address is served again."""
    url, _app = gateway
    user = make_user()
    async with client_from(url, "127.0.0.2") as sprayer, client_from(url, "127.0.0.3") as other:
        for _ in range(AUTH_FAILURE_BURST):
            guess = {"Authorization": f"Bearer rsk_live_{secrets.token_urlsafe(32)}"}
            assert_error(await sprayer.get("/api/jobs", headers=guess), 401, "invalid_api_key")
        spoofed = {
            "Authorization": f"Bearer rsk_live_{secrets.token_urlsafe(32)}",
            "X-Forwarded-For": "203.0.113.7",
        }
        limited = await sprayer.get("/api/jobs", headers=spoofed)
        body = assert_error(limited, 429, "auth_rate_limited")
        assert "API key" in body["hint"]
        retry_after = int(limited.headers["Retry-After"])
        assert 1 <= retry_after <= 1 / AUTH_FAILURES_PER_S + 1
        assert_error(await sprayer.get("/api/jobs", headers=auth(user)), 429, "auth_rate_limited")
        assert (await other.get("/api/jobs", headers=auth(user))).status_code == 200

        await asyncio.sleep(retry_after)
        assert (await sprayer.get("/api/jobs", headers=auth(user))).status_code == 200


UNSAFE_KEYS = (
    "./x",
    ".",
    "jobs/./x",
    "jobs/a/.",
    "jobs/a/..",
    "../x",
    "a//b",
    "//x",
    "jobs\\a\\x.txt",
    "jobs/a/x\x85.txt",
    "jobs/a/\x1b[31mx",
)


async def test_keys_that_are_not_paths_are_400_saying_what_to_fix_and_touch_nothing(
    client: httpx.AsyncClient, make_user: Callable[[], NewUser], s3: S3Client
) -> None:
    user = make_user()
    for key in ("x", "jobs/x", "jobs/a/x.txt"):
        s3.put_object(Bucket=user.bucket, Key=key, Body=b"keep me")
    before = bucket_listing(s3, user.bucket)
    for key in UNSAFE_KEYS:
        answers = [
            await client.get("/api/files/text", params={"key": key}, headers=auth(user)),
            await client.delete("/api/files", params={"key": key}, headers=auth(user)),
            await client.post("/api/files/download-url", json={"key": key}, headers=auth(user)),
            await client.post(
                "/api/files/upload-url",
                json={"key": key, "content_type": "text/plain"},
                headers=auth(user),
            ),
            await client.get("/api/files", params={"prefix": key}, headers=auth(user)),
        ]
        for answer in answers:
            body = assert_error(answer, 400, "invalid_key")
            assert "relative to your bucket" in body["hint"], body
    assert bucket_listing(s3, user.bucket) == before

    # Dots inside a name, and folders (a trailing '/'), are paths like any other.
    for key in ("jobs/a/model..v2.pt", ".hidden", "jobs/a/"):
        answer = await client.post(
            "/api/files/upload-url",
            json={"key": key, "content_type": "text/plain"},
            headers=auth(user),
        )
        assert answer.status_code == 200, (key, answer.text)


async def test_agent_downloads_log_no_presigned_url_secrets(
    service_settings: ServiceSettings,
    s3: S3Client,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker-agent's download path, at DEBUG, against real SeaweedFS: a fetched object,
    a missing one, a refused signature and an unreachable store leave no signature or
    credential in any log line or error message."""
    for name in ("httpx", "httpcore"):  # as a fresh agent process starts
        logging.getLogger(name).setLevel(logging.NOTSET)
    bucket = f"agent-logs-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="shards/shard_0.zip", Body=b"shard")
    presigner = make_s3_client(
        service_settings.s3_endpoint, service_settings.s3_access_key, service_settings.s3_secret_key
    )

    def url(key: str) -> str:
        return str(
            presigner.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300
            )
        )

    good, missing = url("shards/shard_0.zip"), url("shards/nope.zip")
    tampered = good.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        unreachable = good.replace(
            service_settings.s3_endpoint, f"http://127.0.0.1:{closed.getsockname()[1]}"
        )
    secrets_in_urls = [
        part.split("=", 1)[1]
        for u in (good, missing, tampered)
        for part in u.split("?", 1)[1].split("&")
        if part.startswith(("X-Amz-Signature=", "X-Amz-Credential="))
    ]

    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    client = make_http_client()
    try:
        target = await download(client, good, tmp_path / "shard.zip", "shard shards/shard_0.zip")
        assert target.read_bytes() == b"shard"
        for bad in (missing, tampered, unreachable):
            with pytest.raises(DownloadError) as failed:
                await download(client, bad, tmp_path / "bad.zip", "shard shards/nope.zip")
            errors.append(str(failed.value))
            logging.getLogger("rondo.worker_agent.run_manager").warning(
                "fetch failed: %s", errors[-1]
            )
    finally:
        await client.aclose()
    logged = caplog.text + "\n".join(errors)
    assert "X-Amz-Signature" not in logged and "X-Amz-Credential" not in logged
    assert not [secret for secret in secrets_in_urls if secret in logged]
    assert any("HTTP 404" in error for error in errors) and any("403" in e for e in errors)


def test_redact_urls_keeps_where_and_drops_the_credential() -> None:
    url = (
        "http://s3:8333/b/shards/s.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIA%2F20261204&X-Amz-Signature=abc123"
    )
    assert redact_urls(f"GET {url} failed") == "GET http://s3:8333/b/shards/s.zip?<redacted> failed"
    assert "abc123" not in redact_urls("cut: X-Amz-Signature=abc123&x=1")
