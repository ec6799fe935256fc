"""A JetStream stream-leader failover in the middle of a job: the scenario that
tests/scaleout/test_nats_cluster.py checks and bench/nats_failover.py times.

A 3-node nats-server cluster on loopback, the local stack's services and worker-agents
connected to all three nodes (streams with 3 replicas), the digits demo job running; once a
round is done, the node leading `RONDO_JOBS` is killed with SIGKILL. The failover is watched
through the surviving nodes' monitor ports and the job through the gateway's API, both of
which answer while the cluster has no leader.
"""

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from rondo.contracts.events import JobFinished
from rondo.contracts.states import TERMINAL_STATES
from rondo.contracts.subjects import JOBS_STREAM
from rondo.stack.local import LocalStack
from rondo.stack.processes import wait_until
from rondo.stack.servers import NatsCluster, NatsServer
from rondo.stack.state import ExternalNats
from support.examples import digits_job_files
from support.platform import Platform

CLUSTER_SIZE = 3
JOB_NAME = "digits-failover"
POLL_S = 0.1


@dataclass
class FailoverRun:
    """What happened, for checks and timings; `platform` is still up while it is in use."""

    platform: Platform
    job: dict[str, Any]  # the job's API view once it ended
    killed_node: str
    new_leader: str
    round_at_kill: int  # rounds the API showed completed when the leader died
    new_leader_after_s: float  # kill -> a surviving node leads RONDO_JOBS
    job_resumed_after_s: float  # kill -> the next completed round visible through the API
    stored_per_subject: dict[str, int]  # messages per subject in RONDO_JOBS after the job


@contextmanager
def leader_failover_run(
    work_dir: Path, rounds: int, timeout_s: float = 300
) -> Iterator[FailoverRun]:
    """Run the digits demo with `rounds` rounds over a cluster whose RONDO_JOBS leader is
    killed after the first round; everything is stopped when the block ends."""
    with ExitStack() as cleanup:
        cluster = NatsCluster(work_dir / "nats", size=CLUSTER_SIZE)
        cleanup.callback(cluster.stop)
        cluster.start(work_dir / "nats-logs")
        external = ExternalNats(url=cluster.url, stream_replicas=CLUSTER_SIZE)
        stack = LocalStack(work_dir / "stack", external_nats=external)
        cleanup.callback(stack.down)
        platform = Platform(stack=stack, state=stack.up(workers=2).state)
        platform.upload_job(JOB_NAME, digits_job_files(work_dir / "shards"))
        response = platform.submit(JOB_NAME, num_rounds=rounds)
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]

        round_at_kill = _wait_for_round(platform, job_id, 1, timeout_s)
        leader = cluster.stream_leader(JOBS_STREAM.name)
        assert leader is not None, "RONDO_JOBS has no leader while the job runs"
        killed_at = time.monotonic()
        leader.kill()

        assert wait_until(lambda: cluster.stream_leader(JOBS_STREAM.name), 60, POLL_S)
        new_leader_after_s = time.monotonic() - killed_at
        new_leader = cluster.stream_leader(JOBS_STREAM.name)
        _wait_for_round(platform, job_id, round_at_kill + 1, timeout_s)
        job_resumed_after_s = time.monotonic() - killed_at

        job = platform.wait_for_state(job_id, TERMINAL_STATES, timeout_s)
        yield FailoverRun(
            platform=platform,
            job=job,
            killed_node=leader.name,
            new_leader=new_leader.name if new_leader else "",
            round_at_kill=round_at_kill,
            new_leader_after_s=new_leader_after_s,
            job_resumed_after_s=job_resumed_after_s,
            stored_per_subject=asyncio.run(_stored_per_subject(cluster.running())),
        )


def _wait_for_round(platform: Platform, job_id: str, at_least: int, timeout_s: float) -> int:
    """Poll the API until the job shows `at_least` completed rounds (or has ended)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = platform.job(job_id)
        if job["current_round"] >= at_least or job["state"] in TERMINAL_STATES:
            return int(job["current_round"])
        if time.monotonic() > deadline:
            raise AssertionError(f"job never reached round {at_least}: {job}")
        time.sleep(POLL_S)


async def _stored_per_subject(nodes: list[NatsServer], timeout_s: float = 30) -> dict[str, int]:
    """Messages per subject in RONDO_JOBS once `job.finished` is among them (the scheduler
    publishes it just after the FINISHED transition that the API shows)."""
    connection = await nats.connect([node.url for node in nodes])
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            js = connection.jetstream()
            info = await js.stream_info(JOBS_STREAM.name, subjects_filter=">")
            stored = dict(info.state.subjects or {})
            if JobFinished.SUBJECT in stored or time.monotonic() > deadline:
                return stored
            await asyncio.sleep(POLL_S)
    finally:
        await connection.close()
