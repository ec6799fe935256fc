"""Run the digits demo job end to end on a Rondo stack.

Makes the shards, uploads the job folder to the bucket, submits the job, follows it until it
ends, then prints the best validation accuracy from ``files_out/metrics.json``.

    python examples/digits/run_demo.py [--workers 2] [--rounds 5] [--name digits]

Connection settings come from the environment: RONDO_URL, RONDO_API_KEY, RONDO_S3_ENDPOINT,
RONDO_S3_ACCESS_KEY, RONDO_S3_SECRET_KEY and RONDO_BUCKET (default ``rondo-default``).
Exits 0 only when the job FINISHED.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from make_shards import make_shards
from pydantic import BaseModel, SecretStr

HERE = Path(__file__).resolve().parent
TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELLED"})
POLL_INTERVAL_S = 1.0
DEFAULT_TIMEOUT_S = 600.0
METRICS_WAIT_S = 15.0
DEFAULT_BUCKET = "rondo-default"

# Environment variable -> DemoTarget field.
ENV_FIELDS = {
    "RONDO_URL": "url",
    "RONDO_API_KEY": "api_key",
    "RONDO_S3_ENDPOINT": "s3_endpoint",
    "RONDO_S3_ACCESS_KEY": "s3_access_key",
    "RONDO_S3_SECRET_KEY": "s3_secret_key",
    "RONDO_BUCKET": "bucket",
}


class DemoTarget(BaseModel):
    """Where the demo runs: the gateway, the user's API key and the user's bucket."""

    url: str
    api_key: SecretStr
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: SecretStr
    bucket: str = DEFAULT_BUCKET
    s3_region: str = "garage"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "DemoTarget":
        """Read the RONDO_* variables; raises ValueError naming every missing one."""
        source = os.environ if env is None else env
        values = {field: source[name] for name, field in ENV_FIELDS.items() if source.get(name)}
        missing = [
            name
            for name, field in ENV_FIELDS.items()
            if field not in values and cls.model_fields[field].is_required()
        ]
        if missing:
            raise ValueError("missing environment variables: " + ", ".join(missing))
        return cls(**values)

    @property
    def api_url(self) -> str:
        return self.url.rstrip("/") + "/api"

    def s3_client(self) -> Any:
        """A boto3 S3 client for the user's bucket: SigV4, path-style addressing."""
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.s3_access_key,
            aws_secret_access_key=self.s3_secret_key.get_secret_value(),
            region_name=self.s3_region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def http_client(self, transport: httpx.BaseTransport | None = None) -> httpx.Client:
        """An HTTP client for the gateway's API that sends the Bearer key."""
        return httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.api_key.get_secret_value()}"},
            timeout=10.0,
            transport=transport,
        )


# --------------------------------------------------------------------------- bucket


def job_prefix(name: str) -> str:
    return f"jobs/{name}/"


def delete_stale_shards(s3: Any, bucket: str, name: str) -> None:
    """Remove shards of an earlier run: the number of shards is the number of workers."""
    prefix = job_prefix(name) + "shards/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])


def job_files(name: str, shards: list[Path]) -> dict[str, Path]:
    """Bucket key -> local file, for everything the job folder needs."""
    prefix = job_prefix(name)
    files = {
        prefix + "scripts/model_def.py": HERE / "model_def.py",
        prefix + "requirements/requirements.txt": HERE / "requirements.txt",
    }
    files.update({prefix + "shards/" + shard.name: shard for shard in shards})
    return files


def upload_job(s3: Any, bucket: str, name: str, workers: int) -> list[str]:
    """Make ``workers`` shards and upload the whole job folder; returns the keys written."""
    delete_stale_shards(s3, bucket, name)
    with tempfile.TemporaryDirectory(prefix="rondo-digits-") as tmp:
        files = job_files(name, make_shards(workers, tmp))
        for key, path in files.items():
            s3.upload_file(str(path), bucket, key)
            print(f"uploaded s3://{bucket}/{key}")
    return list(files)


def read_metrics(s3: Any, bucket: str, name: str) -> dict[str, Any] | None:
    """``files_out/metrics.json`` of the job, or None while it does not exist."""
    key = job_prefix(name) + "files_out/metrics.json"
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
            return None
        raise
    return json.loads(body)


def best_accuracy(metrics: Mapping[str, Any]) -> tuple[float, int | None] | None:
    """(best accuracy, its round) from metrics.json: ``best_accuracy`` or the rounds' maximum."""
    if metrics.get("best_accuracy") is not None:
        return float(metrics["best_accuracy"]), metrics.get("best_round")
    scored = [
        (float(r["metrics"]["accuracy"]), r.get("round"))
        for r in metrics.get("rounds") or []
        if isinstance(r.get("metrics"), Mapping) and "accuracy" in r["metrics"]
    ]
    return max(scored, key=lambda item: item[0]) if scored else None


def wait_for_metrics(
    s3: Any, bucket: str, name: str, num_rounds: int, wait_s: float = METRICS_WAIT_S
) -> dict[str, Any] | None:
    """metrics.json once it lists every round (the artifacts service may lag the job state)."""
    deadline = time.monotonic() + wait_s
    metrics = read_metrics(s3, bucket, name)
    while time.monotonic() < deadline:
        if metrics is not None and len(metrics.get("rounds") or []) >= num_rounds:
            break
        time.sleep(POLL_INTERVAL_S)
        metrics = read_metrics(s3, bucket, name)
    return metrics


# --------------------------------------------------------------------------- API


class ApiError(RuntimeError):
    """The gateway refused a request; the message holds its error envelope."""


def raise_for_api_error(response: httpx.Response) -> None:
    """Turn a non-2xx response into an ApiError with the envelope's code, message and hint."""
    if response.is_success:
        return
    try:
        body = response.json()
        detail = f"{body.get('code')}: {body.get('message')}"
        if body.get("hint"):
            detail += f" (hint: {body['hint']})"
    except (ValueError, AttributeError):
        detail = response.text
    raise ApiError(f"HTTP {response.status_code} from {response.request.url}: {detail}")


def submit_job(client: httpx.Client, name: str, rounds: int) -> dict[str, Any]:
    """POST /api/jobs; returns the created job."""
    response = client.post("/jobs", json={"name": name, "config": {"num_rounds": rounds}})
    raise_for_api_error(response)
    return response.json()


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """GET /api/jobs/{id}."""
    response = client.get(f"/jobs/{job_id}")
    raise_for_api_error(response)
    return response.json()


def progress_line(job: Mapping[str, Any]) -> str:
    """One human line of a job's state, round, worker panel and reason."""
    workers = job.get("workers") or {}
    line = (
        f"{job.get('state', '?'):<9} round {job.get('current_round', 0)}/"
        f"{job.get('num_rounds', '?')}  workers {workers.get('connected', 0)}/"
        f"{workers.get('total', 0)} connected"
    )
    if workers.get("errors"):
        line += f", {workers['errors']} errors"
    if workers.get("disconnected"):
        line += f", {workers['disconnected']} disconnected"
    if job.get("reason"):
        line += f"  ({job['reason']})"
    return line


def follow_job(
    client: httpx.Client,
    job_id: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any] | None:
    """Poll the job, printing each change, until a terminal state; None on timeout."""
    started = time.monotonic()
    last_line = ""
    while time.monotonic() - started < timeout_s:
        try:
            job = get_job(client, job_id)
        except httpx.TransportError as error:
            print(f"  (gateway unreachable, retrying: {error})")
        else:
            line = progress_line(job)
            if line != last_line:
                print(f"[{time.monotonic() - started:6.1f}s] {line}")
                last_line = line
            if job.get("state") in TERMINAL_STATES:
                return job
        sleep(interval_s)
    return None


# --------------------------------------------------------------------------- main


def report_outcome(job: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> None:
    """Print the job's error (if any) and the best accuracy it reached."""
    error = job.get("error")
    if error:
        print(f"error ({error.get('cause')}): {error.get('message')}")
        if error.get("hint"):
            print(f"hint: {error['hint']}")
    best = best_accuracy(metrics) if metrics else None
    if best is None:
        print("no accuracy found in files_out/metrics.json")
    else:
        accuracy, best_round = best
        where = f" (round {best_round})" if best_round is not None else ""
        print(f"best accuracy: {accuracy:.4f}{where}")


def run(
    target: DemoTarget,
    name: str,
    workers: int,
    rounds: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Upload, submit, follow and report; returns the process exit code."""
    s3 = target.s3_client()
    upload_job(s3, target.bucket, name, workers)
    with target.http_client(transport) as client:
        job = submit_job(client, name, rounds)
        print(f"submitted job {job['id']} ({name}, {workers} workers, {rounds} rounds)")
        final = follow_job(client, job["id"], timeout_s)
    if final is None:
        print(f"timed out after {timeout_s:.0f}s; job {job['id']} is still running")
        return 1
    finished = final["state"] == "FINISHED"
    if finished:
        metrics = wait_for_metrics(s3, target.bucket, name, rounds)
    else:
        metrics = read_metrics(s3, target.bucket, name)
    report_outcome(final, metrics)
    print(f"outputs: s3://{target.bucket}/{job_prefix(name)}files_out/ and model_out/")
    return 0 if finished else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="shards = workers (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="FedAvg rounds (default 5)")
    parser.add_argument("--name", default="digits", help="job folder name (default digits)")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait (default 600)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        target = DemoTarget.from_env()
        return run(target, args.name, args.workers, args.rounds, args.timeout)
    except (ValueError, ApiError, httpx.HTTPError, BotoCoreError, ClientError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
