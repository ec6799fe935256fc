"""The gateway's HTTP API against a real nats-server and SeaweedFS: auth, submission checks,
idempotency, isolation between users, cancel/stop, and the error envelope."""

from collections.abc import Awaitable, Callable

import httpx
import nats
from gateway_helpers import (
    BusProbe,
    Gateway,
    assert_error,
    auth,
    bucket_listing,
    job_name,
    upload_job,
)

from rondo.contracts.api import JobPublic
from rondo.contracts.events import HealthReply, JobCancelRequested, JobSubmitted
from rondo.contracts.storage import S3Client
from rondo.contracts.telemetry import JOB_ID_ATTRIBUTE
from rondo.gateway.config import GatewaySettings
from rondo.gateway.users import CreatedUser

MakeUser = Callable[[], CreatedUser]
Probe = Callable[[str], Awaitable[BusProbe]]


async def test_healthz_needs_no_auth_and_the_bus_health_answers(
    client: httpx.AsyncClient, gateway_settings: GatewaySettings
) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}

    nc = await nats.connect(gateway_settings.nats_url)
    try:
        reply = await nc.request("rondo.health.gateway", b"", timeout=5)
    finally:
        await nc.close()
    health = HealthReply.model_validate_json(reply.data)
    assert health.service == "gateway"
    assert health.healthy


async def test_bad_credentials_get_401_envelopes(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/jobs")
    assert_error(missing, 401, "malformed_bearer")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    not_bearer = await client.get("/api/jobs", headers={"Authorization": "Basic dTpw"})
    assert_error(not_bearer, 401, "malformed_bearer")
    wrong_prefix = await client.get("/api/jobs", headers={"Authorization": "Bearer sk_123456"})
    assert_error(wrong_prefix, 401, "invalid_api_key")
    unknown = await client.get(
        "/api/jobs", headers={"Authorization": "Bearer rsk_live_" + "a" * 43}
    )
    assert_error(unknown, 401, "invalid_api_key")


async def test_submit_stores_pending_and_publishes_job_submitted(
    client: httpx.AsyncClient, gateway: Gateway, make_user: MakeUser, s3: S3Client, probe: Probe
) -> None:
    user = make_user()
    name = job_name()
    upload_job(
        s3,
        user.bucket,
        name,
        shards=("shard_0.zip", "shard_1.zip", "shard_10.zip", "shard_2.zip", "notes.txt"),
        extra=(
            "configs/config_fed_server.json",
            "configs/config_fed_client.json",
            "configs/meta.json",
            "model/b.pt",
            "model/a.pt",
        ),
    )
    submitted = await probe(JobSubmitted.SUBJECT)

    response = await client.post(
        "/api/jobs",
        json={"name": name, "config": {"num_rounds": 3}, "gpu": {"gpu_models": ["rtx_4090"]}},
        headers=auth(user),
    )

    assert response.status_code == 201, response.text
    job = JobPublic.model_validate(response.json())
    assert job.state == "PENDING"
    assert job.name == name
    assert job.num_rounds == 3
    assert job.files_prefix == f"jobs/{name}/"
    assert [t.state for t in job.transitions] == ["PENDING"]
    assert job.config.min_clients == 4  # defaults to the number of shards

    event = JobSubmitted.model_validate(await submitted.wait_for(job_id=job.id))
    assert event.user_id == user.user_id
    assert event.bucket == user.bucket
    assert event.name == name
    assert event.prefix == f"jobs/{name}/"
    shards = ["shard_0.zip", "shard_1.zip", "shard_2.zip", "shard_10.zip"]
    assert event.shard_keys == [f"jobs/{name}/shards/{s}" for s in shards]
    assert event.has_custom_app
    assert event.warm_start_key == f"jobs/{name}/model/a.pt"
    assert event.config.num_rounds == 3
    assert event.gpu.gpu_models == ["rtx_4090"]

    tagged = [
        span
        for span in gateway.spans.get_finished_spans()
        if (span.attributes or {}).get(JOB_ID_ATTRIBUTE) == job.id
    ]
    assert tagged, "the submit request's span carries the job id"

    again = await client.get(f"/api/jobs/{job.id}", headers=auth(user))
    assert again.status_code == 200
    assert JobPublic.model_validate(again.json()) == job


async def test_missing_model_def_is_400_naming_the_key_and_changes_nothing(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client
) -> None:
    user = make_user()
    name = job_name()
    upload_job(s3, user.bucket, name, model_def=False)
    before = bucket_listing(s3, user.bucket)

    response = await client.post("/api/jobs", json={"name": name}, headers=auth(user))

    body = assert_error(response, 400, "invalid_job")
    assert [problem["code"] for problem in body["problems"]] == ["missing_file"]
    assert f"jobs/{name}/scripts/model_def.py" in body["message"]
    assert "upload" in body["hint"]
    assert bucket_listing(s3, user.bucket) == before
    listed = await client.get("/api/jobs", headers=auth(user))
    assert listed.json()["total"] == 0


async def test_folder_checks_name_the_missing_prefix_and_config_errors(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client
) -> None:
    user = make_user()
    no_shards = job_name()
    upload_job(s3, user.bucket, no_shards, shards=("readme.txt",))
    response = await client.post("/api/jobs", json={"name": no_shards}, headers=auth(user))
    body = assert_error(response, 400, "invalid_job")
    assert body["problems"][0]["code"] == "missing_shards"
    assert f"jobs/{no_shards}/shards/" in body["message"]

    too_few = job_name()
    upload_job(s3, user.bucket, too_few)
    response = await client.post(
        "/api/jobs", json={"name": too_few, "config": {"min_clients": 3}}, headers=auth(user)
    )
    body = assert_error(response, 400, "invalid_job")
    assert body["problems"][0]["code"] == "invalid_config"

    half_app = job_name()
    upload_job(s3, user.bucket, half_app, extra=("configs/config_fed_server.json",))
    response = await client.post("/api/jobs", json={"name": half_app}, headers=auth(user))
    body = assert_error(response, 400, "invalid_job")
    assert body["problems"][0]["code"] == "missing_file"
    assert f"jobs/{half_app}/configs/config_fed_client.json" in body["message"]


async def test_idempotency_key_returns_the_same_job_and_active_names_conflict(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client, probe: Probe
) -> None:
    user = make_user()
    name = job_name()
    upload_job(s3, user.bucket, name)
    submitted = await probe(JobSubmitted.SUBJECT)
    headers = {**auth(user), "Idempotency-Key": "retry-1"}

    first = await client.post("/api/jobs", json={"name": name}, headers=headers)
    second = await client.post("/api/jobs", json={"name": name}, headers=headers)

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    await submitted.wait_for(job_id=first.json()["id"])

    other_key = {**auth(user), "Idempotency-Key": "retry-2"}
    conflict = await client.post("/api/jobs", json={"name": name}, headers=other_key)
    assert_error(conflict, 409, "job_name_in_use")
    assert len(submitted.matching(job_id=first.json()["id"])) == 1


async def test_other_users_jobs_are_404_everywhere(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client
) -> None:
    owner, stranger = make_user(), make_user()
    name = job_name()
    upload_job(s3, owner.bucket, name)
    created = await client.post("/api/jobs", json={"name": name}, headers=auth(owner))
    job_id = created.json()["id"]

    for method, path in [
        ("GET", f"/api/jobs/{job_id}"),
        ("GET", f"/api/jobs/{job_id}/metrics"),
        ("GET", f"/api/jobs/{job_id}/logs"),
        ("GET", f"/api/tasks/{job_id}"),
        ("GET", f"/api/customer/dashboard/jobs/{job_id}"),
        ("GET", f"/api/jobs/{job_id}/events"),
        ("POST", f"/api/jobs/{job_id}/cancel"),
        ("POST", f"/api/jobs/{job_id}/stop"),
        ("GET", "/api/jobs/no-such-job"),
    ]:
        response = await client.request(method, path, headers=auth(stranger))
        assert_error(response, 404, "not_found")
    listed = await client.get("/api/jobs", headers=auth(stranger))
    assert listed.json() == {"items": [], "total": 0}


async def test_cancel_and_stop_publish_requests(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client, probe: Probe
) -> None:
    user = make_user()
    name = job_name()
    upload_job(s3, user.bucket, name)
    job_id = (await client.post("/api/jobs", json={"name": name}, headers=auth(user))).json()["id"]
    requests = await probe(JobCancelRequested.SUBJECT)

    stopped = await client.post(f"/api/jobs/{job_id}/stop", headers=auth(user))
    cancelled = await client.post(f"/api/jobs/{job_id}/cancel", headers=auth(user))

    assert stopped.status_code == cancelled.status_code == 202
    assert stopped.json()["id"] == job_id
    stop = await requests.wait_for(job_id=job_id, mode="stop")
    cancel = await requests.wait_for(job_id=job_id, mode="cancel")
    assert stop["requested_by"] == cancel["requested_by"] == user.user_id


async def test_list_filters_and_pages_newest_first(
    client: httpx.AsyncClient, make_user: MakeUser, s3: S3Client
) -> None:
    user = make_user()
    ids = []
    for _ in range(3):
        name = job_name()
        upload_job(s3, user.bucket, name)
        response = await client.post("/api/jobs", json={"name": name}, headers=auth(user))
        ids.append(response.json()["id"])

    page = await client.get("/api/jobs", params={"limit": 2}, headers=auth(user))
    assert page.json()["total"] == 3
    assert [j["id"] for j in page.json()["items"]] == ids[::-1][:2]
    rest = await client.get("/api/jobs", params={"limit": 2, "offset": 2}, headers=auth(user))
    assert [j["id"] for j in rest.json()["items"]] == [ids[0]]
    running = await client.get("/api/jobs", params={"state": "RUNNING"}, headers=auth(user))
    assert running.json() == {"items": [], "total": 0}


async def test_every_error_uses_the_envelope(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    user = make_user()
    bad_name = await client.post("/api/jobs", json={"name": "Bad Name!"}, headers=auth(user))
    body = assert_error(bad_name, 422, "validation_error")
    assert "name" in body["message"]
    bad_state = await client.get("/api/jobs", params={"state": "DONE"}, headers=auth(user))
    assert_error(bad_state, 422, "validation_error")
    assert_error(await client.get("/api/nowhere"), 404, "not_found")
    assert_error(await client.delete("/healthz"), 405, "method_not_allowed")
