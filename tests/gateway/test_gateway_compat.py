"""The hosted product's routes, driven the way its SDK (0.3.0) drives them: bucket lookup, S3
uploads with the user's own key, multipart shard upload through `upload/init|complete`, task
submission with camelCase folder paths, status polling with its 404 fallback."""

import math
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from gateway_helpers import VALID_SHARD, BusProbe, Gateway, assert_error, auth

from rondo.contracts.api import MULTIPART_PART_SIZE
from rondo.contracts.events import JobSubmitted
from rondo.contracts.storage import S3Client, make_s3_client
from rondo.gateway.users import NewUser

MakeUser = Callable[[], NewUser]
Probe = Callable[[str], Awaitable[BusProbe]]
HOSTED_APP = Path(__file__).resolve().parents[1] / "flare" / "hosted_app"
SLUG = "hosted-tiny"


def user_s3(endpoint: str, user: NewUser) -> S3Client:
    """What the SDK builds from the credentials the user was given."""
    return make_s3_client(endpoint, user.s3_access_key, user.s3_secret_key)


def task_body(slug: str = SLUG) -> dict[str, object]:
    return {
        "name": "Hosted Tiny",
        "shardsDirPath": f"/jobs/{slug}/shards",
        "trainingScriptsFolderPath": f"/jobs/{slug}/scripts",
        "trainingConfigFolderPath": f"/jobs/{slug}/configs",
        "trainingRequirementsFolderPath": f"/jobs/{slug}/requirements",
        "estimatedMemoryMb": 2048,
        "autoSelectWorkers": True,
        "gpuModels": ["rtx_4090"],
        "maxPricePerGpuHourCents": 120,
    }


async def upload_shard(
    client: httpx.AsyncClient, user: NewUser, key: str, data: bytes
) -> httpx.Response:
    """The SDK's multipart path: init, PUT each part without auth, complete with the ETags."""
    init = await client.post(
        "/api/users/storage/upload/init",
        json={"key": key, "size": len(data), "contentType": "application/zip"},
        headers=auth(user),
    )
    assert init.status_code == 200, init.text
    upload = init.json()
    assert len(upload["urls"]) == math.ceil(len(data) / MULTIPART_PART_SIZE)
    parts = []
    async with httpx.AsyncClient(timeout=30) as store:
        for number, url in enumerate(upload["urls"], start=1):
            chunk = data[(number - 1) * MULTIPART_PART_SIZE : number * MULTIPART_PART_SIZE]
            put = await store.put(url, content=chunk)
            assert put.status_code == 200, put.text
            parts.append({"PartNumber": number, "ETag": put.headers["ETag"]})
    return await client.post(
        "/api/users/storage/upload/complete",
        json={"uploadId": upload["uploadId"], "key": key, "parts": parts},
        headers=auth(user),
    )


async def test_the_hosted_sdk_flow_submits_and_tracks_a_job(
    client: httpx.AsyncClient, make_user: MakeUser, probe: Probe
) -> None:
    user = make_user()
    # 1. The bucket the SDK uploads into.
    bucket = (await client.get("/api/users/storage/bucket", headers=auth(user))).json()
    assert bucket["bucketAlias"] == user.bucket and bucket["region"] == "garage"
    s3 = user_s3(bucket["endpoint"], user)
    prefix = f"jobs/{SLUG}/"

    # State left by an earlier, interrupted run of the SDK: a stale upload, a stale shard,
    # and shard_0 already there with the right size.
    s3.create_multipart_upload(Bucket=user.bucket, Key=prefix + "shards/stale.zip")
    s3.put_object(Bucket=user.bucket, Key=prefix + "shards/shard_9.zip", Body=VALID_SHARD)
    s3.put_object(Bucket=user.bucket, Key=prefix + "shards/shard_0.zip", Body=VALID_SHARD)

    # 2. Straight to S3 with the user's key: abort stale uploads, put scripts/configs/reqs.
    stale = s3.list_multipart_uploads(Bucket=user.bucket, Prefix=prefix).get("Uploads", [])
    for upload in stale:
        s3.abort_multipart_upload(
            Bucket=user.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    for folder in ("scripts", "configs"):
        for path in sorted((HOSTED_APP / folder).iterdir()):
            s3.put_object(
                Bucket=user.bucket, Key=f"{prefix}{folder}/{path.name}", Body=path.read_bytes()
            )
    s3.put_object(Bucket=user.bucket, Key=prefix + "requirements/requirements.txt", Body=b"")

    # 3. Shards: drop remote ones not present locally, skip same-size ones, upload the rest.
    local = {"shard_0.zip": VALID_SHARD, "shard_1.zip": VALID_SHARD}
    remote = s3.list_objects_v2(Bucket=user.bucket, Prefix=prefix + "shards/").get("Contents", [])
    for item in remote:
        if item["Key"].rsplit("/", 1)[-1] not in local:
            s3.delete_object(Bucket=user.bucket, Key=item["Key"])
    uploaded = []
    for name, data in local.items():
        key = prefix + "shards/" + name
        try:
            if s3.head_object(Bucket=user.bucket, Key=key)["ContentLength"] == len(data):
                continue
        except s3.exceptions.ClientError:
            pass
        completed = await upload_shard(client, user, key, data)
        assert completed.status_code == 200, completed.text
        uploaded.append(name)
    assert uploaded == ["shard_1.zip"]

    # 5. Submit; the rounds come from the app's own config_fed_server.json (2, not 5).
    submitted = await probe(JobSubmitted.SUBJECT)
    created = await client.post("/api/tasks", json=task_body(), headers=auth(user))
    assert created.status_code == 201, created.text
    task = created.json()
    assert (task["name"], task["status"]) == (SLUG, "PENDING")
    event = await submitted.wait_for(job_id=task["id"])
    assert event["config"]["num_rounds"] == 2 and event["has_custom_app"] is True
    assert event["shard_keys"] == [prefix + "shards/shard_0.zip", prefix + "shards/shard_1.zip"]
    assert event["gpu"] == {
        "gpu_models": ["rtx_4090"],
        "estimated_memory_mb": 2048,
        "worker_ids": [],
    }

    # 6. Status: the dashboard route, and the task route the SDK falls back to on 404.
    job = (
        await client.get(f"/api/customer/dashboard/jobs/{task['id']}", headers=auth(user))
    ).json()
    assert (job["jobId"], job["jobName"], job["state"], job["numRounds"]) == (
        task["id"], SLUG, "PENDING", 2
    )  # fmt: skip
    assert job["workerCounts"] == {"total": 0, "connected": 0, "errors": 0, "disconnected": 0}
    raw = (await client.get(f"/api/tasks/{task['id']}", headers=auth(user))).json()
    assert (raw["id"], raw["status"]) == (task["id"], "PENDING")
    listed = (
        await client.get("/api/customer/dashboard/jobs", params={"limit": 5}, headers=auth(user))
    ).json()
    assert [item["jobId"] for item in listed["items"]] == [task["id"]]
    stats = await client.get(
        "/api/customer/dashboard/showStatsNvflare",
        params={"job_id": task["id"]},
        headers=auth(user),
    )
    assert stats.json() == {"current_round": 0, "num_rounds": 2}
    usage = (await client.get("/api/users/storage/usage", headers=auth(user))).json()
    assert usage["objectCount"] == 9 and usage["usedBytes"] > 0 and usage["quotaBytes"] is None


async def test_fleet_and_catalog_routes_answer_in_the_hosted_shapes(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    user = make_user()
    stats = (await client.get("/api/customer/dashboard/workers/stats", headers=auth(user))).json()
    assert set(stats) == {"onlineCount", "totalFreeMemoryMb", "workers"}
    assert stats["onlineCount"] == len(stats["workers"])
    assert all(set(worker) == {"model", "free_memory_mb"} for worker in stats["workers"])
    catalog = (await client.get("/api/gpu-catalog", headers=auth(user))).json()
    assert all(gpu["pricePerGpuHourCents"] == 0 for gpu in catalog["gpus"])


async def test_compat_errors_use_the_envelope_and_never_cross_users(
    client: httpx.AsyncClient, make_user: MakeUser, gateway: Gateway
) -> None:
    owner, stranger = make_user(), make_user()
    mixed = {**task_body(), "trainingScriptsFolderPath": "/jobs/other/scripts"}
    body = assert_error(
        await client.post("/api/tasks", json=mixed, headers=auth(owner)), 400, "invalid_task_paths"
    )
    assert "different jobs" in body["message"]
    wrong_folder = {**task_body(), "shardsDirPath": f"/jobs/{SLUG}/data"}
    assert_error(
        await client.post("/api/tasks", json=wrong_folder, headers=auth(owner)),
        400,
        "invalid_task_paths",
    )
    s3 = user_s3(gateway.app.state.settings.s3_endpoint, owner)
    s3.put_object(
        Bucket=owner.bucket, Key=f"jobs/{SLUG}/configs/config_fed_server.json", Body=b"{not json"
    )
    broken = await client.post("/api/tasks", json=task_body(), headers=auth(owner))
    body = assert_error(broken, 400, "invalid_config")
    assert f"jobs/{SLUG}/configs/config_fed_server.json" in body["message"]

    missing = await client.get("/api/customer/dashboard/jobs/nope", headers=auth(owner))
    assert_error(missing, 404, "not_found")
    assert_error(await client.get("/api/tasks/nope", headers=auth(owner)), 404, "not_found")
    stats = await client.get(
        "/api/customer/dashboard/showStatsNvflare", params={"job_id": "nope"}, headers=auth(owner)
    )
    assert_error(stats, 404, "not_found")
    bad_init = await client.post(
        "/api/users/storage/upload/init", json={"key": "/jobs/x", "size": 1}, headers=auth(owner)
    )
    assert_error(bad_init, 400, "invalid_key")
    unauthenticated = await client.get("/api/users/storage/bucket")
    assert_error(unauthenticated, 401, "malformed_bearer")
    own = (await client.get("/api/users/storage/bucket", headers=auth(stranger))).json()
    assert own["bucketAlias"] == stranger.bucket != owner.bucket
