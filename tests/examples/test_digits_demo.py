"""run_demo.py against a real SeaweedFS bucket and a scripted gateway (httpx.MockTransport)."""

import json
import secrets
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

from rondo.stack.servers import S3Credentials, SeaweedS3

ENV = {
    "RONDO_URL": "http://gateway.test/",
    "RONDO_API_KEY": "rondo_secret",
    "RONDO_S3_ENDPOINT": "http://s3.test",
    "RONDO_S3_ACCESS_KEY": "access",
    "RONDO_S3_SECRET_KEY": "secret",
}


def job_view(state: str, current_round: int = 0, connected: int = 0, **extra: Any) -> dict:
    """A GET /api/jobs/{id} body with just the fields the demo reads."""
    return {
        "id": "job-1",
        "name": "digits",
        "state": state,
        "current_round": current_round,
        "num_rounds": 5,
        "workers": {"total": 2, "connected": connected, "errors": 0, "disconnected": 0},
        "reason": "",
        **extra,
    }


class ScriptedGateway:
    """Answers POST /api/jobs once, then each GET with the next job view of a script."""

    def __init__(self, views: list[dict]) -> None:
        self.views = iter(views)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST" and request.url.path == "/api/jobs":
            return httpx.Response(201, json=job_view("PENDING"))
        if request.method == "GET" and request.url.path == "/api/jobs/job-1":
            return httpx.Response(200, json=next(self.views))
        return httpx.Response(404, json={"code": "not_found", "message": "no such route"})


# --------------------------------------------------------------------------- pure parts


def test_target_from_env(run_demo: ModuleType) -> None:
    target = run_demo.DemoTarget.from_env(ENV)
    assert target.api_url == "http://gateway.test/api"
    assert target.bucket == "rondo-default"
    assert "rondo_secret" not in repr(target)
    with pytest.raises(ValueError, match="RONDO_API_KEY, RONDO_S3_SECRET_KEY"):
        run_demo.DemoTarget.from_env(
            {k: v for k, v in ENV.items() if k not in {"RONDO_API_KEY", "RONDO_S3_SECRET_KEY"}}
        )


def test_best_accuracy_from_either_metrics_form(run_demo: ModuleType) -> None:
    rounds = [{"round": r, "metrics": {"accuracy": a}} for r, a in enumerate([0.5, 0.9, 0.8])]
    assert run_demo.best_accuracy({"rounds": rounds}) == (0.9, 1)
    assert run_demo.best_accuracy({"rounds": rounds, "best_accuracy": 0.95, "best_round": 4}) == (
        0.95,
        4,
    )
    assert run_demo.best_accuracy({"rounds": []}) is None


def test_follow_job_prints_each_change_until_terminal(
    run_demo: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    views = [
        job_view("PENDING", reason="waiting for 2 workers, 0 online"),
        job_view("PENDING", reason="waiting for 2 workers, 0 online"),
        job_view("RUNNING", 1, 2),
        job_view("RUNNING", 1, 2),
        job_view("RUNNING", 5, 2),
        job_view("FINISHED", 5, 0),
    ]
    gateway = ScriptedGateway(views)
    target = run_demo.DemoTarget.from_env(ENV)
    with target.http_client(httpx.MockTransport(gateway)) as client:
        final = run_demo.follow_job(client, "job-1", sleep=lambda _: None)
    assert final["state"] == "FINISHED"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert "PENDING" in lines[0] and "waiting for 2 workers" in lines[0]
    assert "round 1/5" in lines[1] and "workers 2/2 connected" in lines[1]
    assert all(r.headers["Authorization"] == "Bearer rondo_secret" for r in gateway.requests)


def test_api_errors_show_the_envelope(run_demo: ModuleType) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        body = {"code": "missing_file", "message": "jobs/x/scripts/model_def.py", "hint": "upload"}
        return httpx.Response(422, json=body)

    target = run_demo.DemoTarget.from_env(ENV)
    with (
        target.http_client(httpx.MockTransport(refuse)) as client,
        pytest.raises(run_demo.ApiError, match=r"422.*missing_file.*hint: upload"),
    ):
        run_demo.submit_job(client, "x", 5)


# --------------------------------------------------------------------------- with a bucket


@pytest.fixture
def s3_target(run_demo: ModuleType, s3_server: SeaweedS3, s3_admin: S3Credentials) -> Iterator[Any]:
    """A DemoTarget on the session's SeaweedFS, with a fresh bucket."""
    bucket = "digits-" + secrets.token_hex(4)
    target = run_demo.DemoTarget.from_env(
        ENV
        | {
            "RONDO_S3_ENDPOINT": s3_server.endpoint,
            "RONDO_S3_ACCESS_KEY": s3_admin.access_key,
            "RONDO_S3_SECRET_KEY": s3_admin.secret_key,
            "RONDO_BUCKET": bucket,
        }
    )
    target.s3_client().create_bucket(Bucket=bucket)
    yield target


def bucket_keys(target: Any) -> set[str]:
    listing = target.s3_client().list_objects_v2(Bucket=target.bucket)
    return {item["Key"] for item in listing.get("Contents", [])}


def test_upload_writes_the_job_folder_and_drops_stale_shards(
    run_demo: ModuleType, s3_target: Any
) -> None:
    s3 = s3_target.s3_client()
    s3.put_object(Bucket=s3_target.bucket, Key="jobs/digits/shards/shard_2.zip", Body=b"old")
    run_demo.upload_job(s3, s3_target.bucket, "digits", 2)
    assert bucket_keys(s3_target) == {
        "jobs/digits/scripts/model_def.py",
        "jobs/digits/requirements/requirements.txt",
        "jobs/digits/shards/shard_0.zip",
        "jobs/digits/shards/shard_1.zip",
    }


def test_run_exits_zero_on_finished_and_prints_best_accuracy(
    run_demo: ModuleType, s3_target: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = {
        "rounds": [{"round": r, "metrics": {"accuracy": 0.8 + r / 100}} for r in range(5)],
        "best_round": 4,
        "best_accuracy": 0.84,
    }
    s3_target.s3_client().put_object(
        Bucket=s3_target.bucket,
        Key="jobs/digits/files_out/metrics.json",
        Body=json.dumps(metrics).encode(),
    )
    gateway = ScriptedGateway([job_view("FINISHED", 5, 0)])
    code = run_demo.run(s3_target, "digits", 2, 5, transport=httpx.MockTransport(gateway))
    assert code == 0
    out = capsys.readouterr().out
    assert "submitted job job-1" in out
    assert "best accuracy: 0.8400 (round 4)" in out
    submitted = json.loads(gateway.requests[0].content)
    assert submitted == {"name": "digits", "config": {"num_rounds": 5}}


def test_run_exits_one_on_failed(
    run_demo: ModuleType, s3_target: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    error = {"message": "NameError: torch", "cause": "name_error", "hint": "put every import"}
    gateway = ScriptedGateway([job_view("FAILED", 0, 0, error=error)])
    code = run_demo.run(s3_target, "digits", 2, 5, transport=httpx.MockTransport(gateway))
    assert code == 1
    out = capsys.readouterr().out
    assert "NameError: torch" in out and "hint: put every import" in out
