"""The compose deployment for real: deploy/compose/compose.yaml with the test override
(compose.test.yaml: SeaweedFS for Garage, locally built third-party images, two worker-agents
on the Docker runtime) comes up from the repository, runs the digits demo submitted through
the gateway to FINISHED with every output in the bucket while one worker-agent container is
killed mid-job (its restart takes over), and `down -v` leaves nothing behind. The bus runs
as deployed: users, permissions and TLS made by `rondo.stack.bus_auth` and `bus_tls`; a client
without credentials, in plain TCP, or as an agent forging a gateway event is refused.

Skipped (with the reason) only where no Docker engine can start.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from cryptography.fernet import Fernet
from dotenv import dotenv_values
from nats.errors import Error as NatsError
from security.test_bus_permissions import Connection
from support.docker_engine import IMAGE_VERSION, REPO, containers, docker, docker_images, inspect
from support.examples import digits_job_files

from rondo.contracts.bus import connect_options
from rondo.contracts.config import ServiceSettings
from rondo.contracts.states import JobState
from rondo.contracts.storage import make_s3_client
from rondo.stack.processes import wait_until
from rondo.worker_agent.runtime_docker import OWNER_LABEL

pytestmark = pytest.mark.timeout(1500)

COMPOSE_DIR = REPO / "deploy" / "compose"
PROJECT = "rondo-test"
ROUNDS = 3
GATEWAY_PORT = 8080
NATS_PORT = 4222  # nats-1 as published on the control host
AGENT_IDS = ("compose-agent-1", "compose-agent-2")  # compose.test.yaml's worker-agents


def compose_binary() -> list[str]:
    """Compose v2: the `docker compose` plugin, or the binary scripts/docker-engine fetches."""
    found = subprocess.run(
        [str(REPO / "scripts" / "docker-engine"), "compose"], capture_output=True, text=True
    )
    assert found.returncode == 0, f"no Compose v2 binary: {found.stderr}"
    return found.stdout.strip().split()


def control_host() -> str:
    """This host's address as containers on a bridge and processes on the host both reach it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
        return str(probe.getsockname()[0])


@dataclass
class ComposeStack:
    argv: list[str]
    env_file: Path
    host: str
    values: dict[str, str]
    work_root: Path
    bus_secrets: Path

    def bus_settings(self, identity: str | None) -> ServiceSettings:
        """Settings to reach the published NATS port over TLS as `identity` (None: no
        credentials), as a worker host does."""
        credentials = {}
        if identity is not None:
            found = dotenv_values(self.bus_secrets / f"{identity}.env")
            credentials = {
                "nats_user": found["RONDO_NATS_USER"],
                "nats_password": found["RONDO_NATS_PASSWORD"],
            }
        return ServiceSettings(
            nats_url=f"tls://{self.host}:{NATS_PORT}",
            nats_tls_ca=self.bus_secrets / "tls" / "ca.pem",
            **credentials,
        )

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> str:
        done = subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, timeout=timeout, cwd=COMPOSE_DIR
        )
        if check:
            assert done.returncode == 0, f"compose {' '.join(args)}:\n{done.stderr[-3000:]}"
        return done.stdout

    def container_of(self, service: str) -> str:
        return self.run("ps", "-q", service).strip()


def project_leftovers() -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={PROJECT}"
    return {
        "containers": docker("ps", "-aq", "--filter", label).split(),
        "networks": docker("network", "ls", "-q", "--filter", label).split(),
        "volumes": docker("volume", "ls", "-q", "--filter", label).split(),
    }


def job_containers(work_root: Path) -> list[str]:
    found = []
    for container_id in containers(OWNER_LABEL):
        details = inspect(container_id)
        if details and str(work_root) in details["Config"]["Labels"].get(OWNER_LABEL, ""):
            found.append(container_id)
    return found


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    docker_images()  # engine, base images, rondo/service:test and rondo/agent:test
    folder = tmp_path_factory.mktemp("compose")
    work_root = folder / "agents"
    work_root.mkdir()
    host = control_host()
    bus_secrets = folder / "nats"
    # As an operator deploys (compose.yaml's header): identities, then the nodes' certificate
    # for every name a client dials (the services: nats-N; the agents: the control host).
    for module, args in (
        ("rondo.stack.bus_auth", [str(bus_secrets), *AGENT_IDS]),
        ("rondo.stack.bus_tls", [str(bus_secrets / "tls"), "nats-1", "nats-2", "nats-3", host]),
    ):
        subprocess.run([sys.executable, "-m", module, *args], check=True, capture_output=True)
    values = {
        "RONDO_VERSION": IMAGE_VERSION,
        "RONDO_CONTROL_HOST": host,
        "RONDO_S3_ACCESS_KEY": "GK" + secrets.token_hex(12),
        "RONDO_S3_SECRET_KEY": secrets.token_hex(32),
        "GARAGE_RPC_SECRET": secrets.token_hex(32),
        "GARAGE_ADMIN_TOKEN": secrets.token_hex(16),
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "RONDO_GATEWAY_SECRETS_KEY": Fernet.generate_key().decode(),
        "RONDO_TEST_WORK_ROOT": str(work_root),
        "RONDO_NATS_SECRETS": str(bus_secrets),
        # compose.yaml's own worker-agent (profile `worker`, not started) insists on these.
        "RONDO_AGENT_ID": "unused",
        "RONDO_AGENT_HOST": "127.0.0.1",
    }
    env_file = folder / "compose.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    argv = [
        *compose_binary(),
        "-p",
        PROJECT,
        "--env-file",
        str(env_file),
        "-f",
        "compose.yaml",
        "-f",
        "compose.test.yaml",
        "--profile",
        "test",
    ]
    stack = ComposeStack(argv, env_file, host, values, work_root, bus_secrets)
    stack.run("down", "-v", "--remove-orphans", check=False)
    started = time.monotonic()
    stack.run("build", "postgres")
    built = time.monotonic()
    stack.run("up", "-d", "--no-build")
    healthy = wait_until(
        lambda: _http_ok(f"http://{stack.host}:{GATEWAY_PORT}/healthz"), 300, interval_s=1
    )
    if not healthy:
        logs = stack.run("logs", "--tail", "40", check=False)
        stack.run("down", "-v", "--remove-orphans", check=False)
        pytest.fail(f"the compose stack did not become healthy:\n{logs[-6000:]}")
    print(
        f"compose: postgres image {built - started:.1f} s, "
        f"up -> gateway healthy {time.monotonic() - built:.1f} s"
    )
    try:
        yield stack
    finally:
        logs = stack.run("logs", "--tail", "60", check=False)
        (folder / "compose.log").write_text(logs)
        stack.run("down", "-v", "--remove-orphans", check=False)
        # Job containers of an agent that died for good (a failed test) are nobody's to clean.
        for container_id in job_containers(work_root):
            docker("rm", "-f", container_id, check=False)


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def create_user(stack: ComposeStack) -> dict[str, Any]:
    out = stack.run(
        "exec", "-T", "gateway", "python", "-m", "rondo.gateway.manage", "create-user", "tester",
        "--json",
    )  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


async def test_the_published_bus_refuses_plain_anonymous_and_forging_clients(
    compose_stack: ComposeStack,
) -> None:
    """Runs first, against the stack the demo then uses (its services are connected)."""
    stack = compose_stack
    # Plain TCP: the node's greeting demands TLS before anything else.
    with socket.create_connection((stack.host, NATS_PORT), timeout=5) as raw:
        greeting = raw.makefile("rb").readline().decode()
    assert greeting.startswith("INFO ") and json.loads(greeting[5:]).get("tls_required"), greeting

    # TLS with the deployment's CA but without credentials.
    anonymous = stack.bus_settings(None)
    with pytest.raises(NatsError, match=r"(?i)authorization violation"):
        await nats.connect(
            anonymous.nats_servers,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            **connect_options(anonymous),
        )

    # An agent's own identity: it connects, and may not cancel anybody's job.
    agent = stack.bus_settings(f"agent-{AGENT_IDS[0]}")
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error))

    client = await nats.connect(
        agent.nats_servers, error_cb=on_error, allow_reconnect=False, **connect_options(agent)
    )
    try:
        connection = Connection(client, errors)
        await client.publish("rondo.job.cancel_requested", b'{"job_id": "any"}')
        await client.flush()
        assert await connection.refused("rondo.job.cancel_requested"), errors
    finally:
        await client.close()


def test_digits_demo_finishes_through_a_killed_agent_and_down_leaves_nothing(
    compose_stack: ComposeStack, tmp_path: Path
) -> None:
    stack = compose_stack
    user = create_user(stack)
    bucket = user["bucket"]
    s3 = make_s3_client(
        f"http://{stack.host}:3900",
        stack.values["RONDO_S3_ACCESS_KEY"],
        stack.values["RONDO_S3_SECRET_KEY"],
    )
    for relative, content in digits_job_files(tmp_path / "shards").items():
        body = content.read_bytes() if isinstance(content, Path) else content
        s3.put_object(Bucket=bucket, Key=f"jobs/digits/{relative}", Body=body)

    api = httpx.Client(
        base_url=f"http://{stack.host}:{GATEWAY_PORT}",
        headers={"Authorization": f"Bearer {user['api_key']}"},
        timeout=30,
    )
    submitted = time.monotonic()
    response = api.post("/api/jobs", json={"name": "digits", "config": {"num_rounds": ROUNDS}})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]

    def job() -> dict[str, Any]:
        return api.get(f"/api/jobs/{job_id}").json()

    assert wait_until(lambda: job()["state"] == JobState.RUNNING, 300, 0.5), job()
    print(f"compose: submit -> RUNNING {time.monotonic() - submitted:.1f} s")
    assert wait_until(lambda: len(job_containers(stack.work_root)) >= 3, 300, 0.5), (
        "the FL server and both clients run in job containers"
    )

    # One worker host's agent dies: its restart policy brings it back, and the new life removes
    # the containers the old one left before the scheduler places the lost slot again.
    victim = stack.container_of("worker-agent-2")
    orphans = [c for c in job_containers(stack.work_root) if "compose-agent-2@" in _owner(c)]
    assert orphans, "agent 2 runs a process of the job"
    # SIGKILL of its process from the host, as a crash (`docker kill` counts as a manual stop,
    # which the restart policy respects).
    os.kill(int(docker("inspect", "-f", "{{.State.Pid}}", victim)), signal.SIGKILL)
    assert wait_until(lambda: _restarts(victim) >= 1, 60, 0.5), "the agent was not restarted"
    assert wait_until(lambda: not set(orphans) & set(job_containers(stack.work_root)), 180, 1), (
        "the restarted agent left its previous life's job containers running"
    )

    assert wait_until(lambda: job()["state"] in ("FINISHED", "FAILED", "CANCELLED"), 900, 2)
    final = job()
    print(f"compose: submit -> {final['state']} {time.monotonic() - submitted:.1f} s")
    assert final["state"] == JobState.FINISHED, final
    assert wait_until(lambda: job()["outputs_written_at"] is not None, 120, 1), job()

    def keys() -> set[str]:
        listing = s3.list_objects_v2(Bucket=bucket, Prefix="jobs/digits/")
        return {item["Key"] for item in listing.get("Contents", [])}

    expected = {
        f"jobs/digits/files_out/{name}"
        for name in (
            "server.log",
            "client_0.log",
            "client_1.log",
            "metrics.json",
            "training_log.txt",
            "fl_round_complete.json",
        )
    } | {f"jobs/digits/model_out/{name}" for name in ("global_model.pt", "best_model.pt")}
    # The clients' and logs' files are staged on their own: they may come after the reports.
    wait_until(lambda: expected <= keys(), 60, 1)
    assert expected <= keys(), (sorted(expected - keys()), sorted(keys()))
    assert wait_until(lambda: not job_containers(stack.work_root), 60, 1), "job containers stayed"

    # The deployed dashboard carries Monaco (not the plain-text fallback).
    monaco = httpx.get(f"http://{stack.host}:{GATEWAY_PORT}/monaco/vs/loader.js", timeout=10)
    assert monaco.status_code == 200, monaco.status_code

    stack.run("down", "-v", "--remove-orphans")
    assert project_leftovers() == {"containers": [], "networks": [], "volumes": []}
    assert not job_containers(stack.work_root)


def _owner(container_id: str) -> str:
    return docker("inspect", "-f", f'{{{{index .Config.Labels "{OWNER_LABEL}"}}}}', container_id)


def _restarts(container_id: str) -> int:
    return int(docker("inspect", "-f", "{{.RestartCount}}", container_id))
