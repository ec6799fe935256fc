"""Latency of the job list and job detail routes with 1,000 jobs in the gateway's database.

Starts real servers in a temporary folder (nats-server, SeaweedFS) and the gateway as
`python -m rondo.gateway` (uvicorn, SQLite), makes one user with the operator function, stores
the jobs for that user straight into the database (the read model the routes answer from;
submitting 1,000 real jobs would measure validation and the bus instead), then calls each route
again and again over HTTP, one request at a time, and prints p50 / p99 / max in milliseconds.

    .venv/bin/python bench/api_latency.py [--jobs 1000] [--requests 500]
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlmodel import Session

from rondo.contracts.states import JobState, WorkerPanel, WorkerSlotView
from rondo.contracts.training import TrainingConfig
from rondo.gateway.config import GatewaySettings
from rondo.gateway.db import init_db, make_engine
from rondo.gateway.models import Job, JobTransition
from rondo.gateway.secret_box import load_secret_box
from rondo.gateway.storage_admin import SeaweedIamAdmin
from rondo.gateway.users import add_user
from rondo.stack.ports import free_port
from rondo.stack.processes import kill_tree, spawn, wait_until
from rondo.stack.servers import NatsServer, S3Credentials, SeaweedS3, http_ok, write_s3_config

STATES = (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED, JobState.RUNNING)


def store_jobs(settings: GatewaySettings, user_id: str, bucket: str, count: int) -> list[str]:
    """`count` jobs of the user, spread over states, each with its transitions and slots."""
    engine = make_engine(settings.database_url)
    start = datetime.now(UTC) - timedelta(days=30)
    config = TrainingConfig(num_rounds=5, min_clients=2).model_dump(mode="json")
    slots = [
        WorkerSlotView(slot=n, site_name=f"site-{n}-0", agent_id=f"agent-{n}").model_dump(
            mode="json"
        )
        for n in range(2)
    ]
    ids = []
    with Session(engine) as session:
        for n in range(count):
            created = start + timedelta(minutes=n)
            state = STATES[n % len(STATES)]
            job = Job(
                user_id=user_id,
                name=f"job-{n:04d}",
                bucket=bucket,
                files_prefix=f"jobs/job-{n:04d}/",
                state=state,
                num_rounds=5,
                current_round=5 if state == JobState.FINISHED else 2,
                workers=WorkerPanel(total=2, connected=2).model_dump(),
                slots=slots,
                config=config,
                created_at=created,
                updated_at=created + timedelta(minutes=3),
            )
            job.transitions = [
                JobTransition(state=JobState.PENDING, at=created),
                JobTransition(state=JobState.RUNNING, at=created + timedelta(seconds=30)),
            ]
            if state != JobState.RUNNING:
                job.transitions.append(
                    JobTransition(state=state, at=created + timedelta(minutes=3))
                )
            session.add(job)
            ids.append(job.id)
        session.commit()
    engine.dispose()
    return ids


def measure(call: Callable[[], httpx.Response], requests: int) -> list[float]:
    """Milliseconds per call, after a few warm-up calls."""
    for _ in range(10):
        call().raise_for_status()
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        call().raise_for_status()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def report(name: str, timings: list[float]) -> None:
    ordered = sorted(timings)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]
    print(
        f"{name:<34} p50 {statistics.median(ordered):6.1f} ms   p99 {p99:6.1f} ms   "
        f"max {ordered[-1]:6.1f} ms   ({len(ordered)} requests)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rondo-api-latency-") as scratch:
        folder = Path(scratch)
        admin = S3Credentials(access_key="BENCHADMIN", secret_key="bench-secret", name="admin")
        write_s3_config(folder / "s3.json", [admin])
        nats = NatsServer(store_dir=folder / "nats")
        seaweed = SeaweedS3(data_dir=folder / "seaweed", s3_config=folder / "s3.json")
        gateway = None
        try:
            nats.start(folder / "nats.log")
            seaweed.start(folder / "seaweed.log")
            settings = GatewaySettings(
                nats_url=nats.url,
                s3_endpoint=seaweed.endpoint,
                s3_access_key=admin.access_key,
                s3_secret_key=admin.secret_key,
                data_dir=folder,
                gateway_port=free_port(),
                gateway_rate_limit_per_s=100_000,
                gateway_rate_limit_burst=100_000,
            )
            engine = make_engine(settings.database_url)
            init_db(engine)
            with Session(engine) as session:
                box = load_secret_box(settings)  # the gateway started below reads the same key
                user = add_user(session, SeaweedIamAdmin(settings), box, "bench", "bench-bucket")
            engine.dispose()
            ids = store_jobs(settings, user.user_id, user.bucket, args.jobs)

            env = {
                **os.environ,
                "RONDO_NATS_URL": settings.nats_url,
                "RONDO_S3_ENDPOINT": settings.s3_endpoint,
                "RONDO_S3_ACCESS_KEY": settings.s3_access_key,
                "RONDO_S3_SECRET_KEY": settings.s3_secret_key,
                "RONDO_DATA_DIR": str(folder),
                "RONDO_GATEWAY_PORT": str(settings.gateway_port),
                "RONDO_GATEWAY_RATE_LIMIT_PER_S": "100000",
                "RONDO_GATEWAY_RATE_LIMIT_BURST": "100000",
                "RONDO_LOG_LEVEL": "WARNING",
            }
            gateway = spawn(
                [sys.executable, "-m", "rondo.gateway"], folder / "gateway.log", env=env
            )
            url = f"http://127.0.0.1:{settings.gateway_port}"
            if not wait_until(lambda: http_ok(f"{url}/healthz"), timeout_s=60, interval_s=0.1):
                sys.exit(f"the gateway did not start; see {folder / 'gateway.log'}")

            headers = {"Authorization": f"Bearer {user.api_key}"}
            pick = random.Random(7)
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                total = client.get("/api/jobs").json()["total"]
                print(f"{total} jobs in the database; {os.cpu_count()} CPU cores\n")
                report(
                    "GET /api/jobs (first 50)",
                    measure(lambda: client.get("/api/jobs"), args.requests),
                )
                report(
                    "GET /api/jobs?limit=50&offset=900",
                    measure(
                        lambda: client.get("/api/jobs", params={"limit": 50, "offset": 900}),
                        args.requests,
                    ),
                )
                report(
                    "GET /api/jobs?state=FAILED",
                    measure(
                        lambda: client.get("/api/jobs", params={"state": "FAILED"}), args.requests
                    ),
                )
                report(
                    "GET /api/jobs/{id}",
                    measure(lambda: client.get(f"/api/jobs/{pick.choice(ids)}"), args.requests),
                )
        finally:
            if gateway is not None:
                kill_tree(gateway.pid)
            seaweed.stop()
            nats.stop()


if __name__ == "__main__":
    main()
