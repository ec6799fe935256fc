"""The Docker runtime for real: a stack whose worker-agents run every NVFlare process (FL server
and clients) of a job in its own locked-down container from the locally built agent image.

- a tiny job FINISHES with its outputs, its containers locked down as `docker inspect` shows,
  and removed when the job ends;
- a hostile model_def.py, imported in every container, finds no credential, no Docker socket,
  no root, and cannot write outside its own run folder;
- an agent killed mid-job leaves its containers running; restarted, it removes them all.

Skipped (with the reason) only where no Docker engine can start.
"""

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker as dockerlib
import psutil
import pytest
from support.docker_engine import (
    MEMORY_LIMIT_MB,
    containers,
    docker,
    docker_images,
    inspect,
    start_docker_agent,
    stop_agent,
)
from support.platform import Platform, running_platform
from support.tiny_job import TINY_JOB_DIR, tiny_job_files

from rondo.contracts.states import JobState
from rondo.stack.processes import wait_until
from rondo.worker_agent.config import AgentSettings
from rondo.worker_agent.flare_runs import ContainerNeeds, ProcessSpec
from rondo.worker_agent.runtime import LocalProcessRuntime
from rondo.worker_agent.runtime_docker import (
    OWNER_LABEL,
    ROLE_LABEL,
    DockerRuntime,
    GpuRuntimeMissing,
    make_runtime,
)

pytestmark = pytest.mark.timeout(900)

# What the hostile model_def tries from inside each container; the report lands in its cwd.
HOSTILE_PROBE = """
import json as _json, os as _os, pathlib as _pathlib

def _rondo_probe():
    report = {"uid": _os.getuid(), "cwd": _os.getcwd()}
    markers = ("S3", "NATS", "SECRET", "KEY", "PASSWORD", "DATABASE", "TOKEN", "STACK")
    report["credential_env"] = sorted(k for k in _os.environ if any(m in k for m in markers))
    report["docker_socket"] = [p for p in ("/var/run/docker.sock", "/run/docker.sock")
                               if _os.path.exists(p)]
    written = []
    for target in TARGETS:
        try:
            _pathlib.Path(target).write_text("owned")
            written.append(target)
        except OSError:
            pass
    report["written_outside"] = written
    readable = []
    for secret in SECRETS:
        try:
            _pathlib.Path(secret).read_bytes()
            readable.append(secret)
        except OSError:
            pass
    report["read_secrets"] = readable
    name = f"hostile_report_{_os.getpid()}.json"
    _pathlib.Path(name).write_text(_json.dumps(report))

_rondo_probe()
"""


def hostile_model_def(data_dir: Path) -> bytes:
    """The tiny job's model_def.py with the probe run at import (server and clients)."""
    targets = [
        "/etc/rondo_owned",
        "/usr/lib/rondo_owned",
        "/opt/rondo_owned",
        "/var/lib/rondo/rondo_owned",
        str(data_dir / "rondo_owned"),
        str(data_dir / "agents" / "rondo_owned"),
    ]
    secrets = [str(data_dir / "stack.json"), "/proc/1/root/etc/shadow", "/etc/shadow"]
    probe = f"TARGETS = {targets!r}\nSECRETS = {secrets!r}\n" + HOSTILE_PROBE
    return (TINY_JOB_DIR / "scripts" / "model_def.py").read_bytes() + probe.encode()


def stack_containers(platform: Platform) -> dict[str, dict[str, Any]]:
    """Every container a Docker agent of this stack started: id -> `docker inspect`."""
    found = {}
    for container_id in containers(OWNER_LABEL):
        details = inspect(container_id)
        if details and str(platform.state.data_dir) in details["Config"]["Labels"][OWNER_LABEL]:
            found[container_id] = details
    return found


@pytest.fixture(scope="module")
def agent_image() -> str:
    return docker_images()


@pytest.fixture(scope="module")
def docker_platform(
    agent_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Platform, list[int]]]:
    """A local stack whose two agents were restarted with the Docker runtime."""
    with running_platform(tmp_path_factory.mktemp("docker-stack"), workers=2) as platform:
        pids = []
        for index, agent in enumerate(platform.state.agents):
            stop_agent(platform.state.processes[agent.part_name].pid)
            pids.append(start_docker_agent(platform, index, agent_image))
        try:
            yield platform, pids
        finally:
            for pid in pids:
                if psutil.pid_exists(pid):
                    stop_agent(pid)
            leftovers = stack_containers(platform)
            for container_id in leftovers:
                docker("rm", "-f", container_id, check=False)
            assert not leftovers, "agents stopped but their containers stayed"


def submit(
    platform: Platform, name: str, files: dict[str, Any], rounds: int, sleep_s: float
) -> str:
    platform.upload_job(name, files)
    response = platform.submit(name, num_rounds=rounds, extra={"sleep_s": sleep_s})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def wait_for_containers(platform: Platform, count: int, timeout_s: float = 120) -> dict:
    found: dict[str, dict[str, Any]] = {}

    def enough() -> bool:
        nonlocal found
        found = {cid: c for cid, c in stack_containers(platform).items() if c["State"]["Running"]}
        return len(found) >= count

    assert wait_until(enough, timeout_s, 0.5), f"{count} running containers expected: {found}"
    return found


def test_tiny_job_runs_in_locked_down_containers_that_go_away(
    docker_platform: tuple[Platform, list[int]],
) -> None:
    platform, _ = docker_platform
    data_dir = platform.state.data_dir
    files = tiny_job_files(shards=2)
    files["scripts/model_def.py"] = hostile_model_def(data_dir)
    started = time.monotonic()
    job_id = submit(platform, "docker-tiny", files, rounds=3, sleep_s=1.0)

    running = wait_for_containers(platform, 3)  # the FL server and two clients
    roles = sorted(c["Config"]["Labels"][ROLE_LABEL] for c in running.values())
    assert roles == ["client", "client", "server"]
    for details in running.values():
        host = details["HostConfig"]
        uid, _, gid = details["Config"]["User"].partition(":")
        assert int(uid) > 0 and int(gid) > 0, details["Config"]["User"]
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["PidsLimit"] and host["PidsLimit"] > 0
        assert host["Memory"] == MEMORY_LIMIT_MB * 1024 * 1024
        assert host["Privileged"] is False
        assert "/tmp" in host["Tmpfs"]
        mounts = {m["Destination"]: m for m in details["Mounts"]}
        assert not any("docker.sock" in m["Source"] for m in details["Mounts"])
        writable = [d for d, m in mounts.items() if m["RW"]]
        assert len(writable) == 1, f"only the process's own folder is writable: {writable}"
        if details["Config"]["Labels"][ROLE_LABEL] == "client":
            data = [m for d, m in mounts.items() if d.endswith("/data")]
            assert data and not data[0]["RW"], "the shard is mounted read-only"

    job = platform.wait_for_state(job_id, timeout_s=300)
    print(f"docker runtime: tiny job of 3 rounds ended in {time.monotonic() - started:.1f} s")
    assert job["state"] == JobState.FINISHED, job
    platform.wait_for_outputs(job_id)
    out = "jobs/docker-tiny/"
    assert not platform.wait_for_objects(
        {
            f"{out}files_out/metrics.json",
            f"{out}model_out/global_model.pt",
            # the containers' output reaches the logs (the agent tails it)
            f"{out}files_out/server.log",
            f"{out}files_out/client_0.log",
            f"{out}files_out/client_1.log",
        }
    )
    assert wait_until(lambda: not stack_containers(platform), 60, 0.5), "containers outlived job"

    reports = [json.loads(p.read_text()) for p in data_dir.rglob("hostile_report_*.json")]
    assert len(reports) >= 3, f"the probe ran in the server and both clients: {reports}"
    for report in reports:
        assert report["uid"] != 0, report
        assert report["credential_env"] == [], report
        assert report["docker_socket"] == [], report
        assert report["written_outside"] == [], report
        assert report["read_secrets"] == [], report


def test_agent_killed_mid_job_removes_its_containers_when_restarted(
    docker_platform: tuple[Platform, list[int]], agent_image: str
) -> None:
    platform, pids = docker_platform
    job_id = submit(platform, "docker-kill", tiny_job_files(shards=2), rounds=30, sleep_s=1.0)
    wait_for_containers(platform, 3)
    agent = platform.state.agents[0]
    owner_prefix = f"{agent.agent_id}@"
    theirs = [
        cid
        for cid, c in stack_containers(platform).items()
        if c["Config"]["Labels"][OWNER_LABEL].startswith(owner_prefix)
    ]
    assert theirs, "agent 0 runs a container of the job"

    stop_agent(pids[0], signal.SIGKILL)
    time.sleep(1)
    alive = set(stack_containers(platform))
    assert set(theirs) <= alive, "a SIGKILLed agent cannot remove its containers itself"

    pids[0] = start_docker_agent(platform, 0, agent_image)
    assert wait_until(lambda: not set(theirs) & set(stack_containers(platform)), 60, 0.5), (
        "the restarted agent left its previous life's containers running"
    )
    platform.api.post(f"/api/jobs/{job_id}/cancel")
    platform.wait_for_state(job_id, timeout_s=120)
    assert wait_until(lambda: not stack_containers(platform), 60, 0.5), (
        f"containers outlived the cancelled job: {list(stack_containers(platform))}"
    )


def test_gpu_request_without_nvidia_runtime_is_a_clear_error_and_leaves_nothing(
    agent_image: str, tmp_path: Path
) -> None:
    if "nvidia" in docker("info", "--format", "{{json .Runtimes}}"):
        pytest.skip("this engine has the NVIDIA runtime: the GPU request would succeed")
    workspace = tmp_path / "client_0" / "kit"
    workspace.mkdir(parents=True)
    (tmp_path / "client_0" / "data").mkdir()
    spec = ProcessSpec(
        argv=["python", "-c", "print('never')"],
        cwd=workspace,
        env={},
        log_files=[],
        output_log=workspace / "out.log",
        container=ContainerNeeds(
            data_root=tmp_path / "client_0" / "data",
            out_spool=tmp_path / "client_0" / "out_spool",
            device="cuda:0",
            requirements_file=None,
            requirements_sha256=None,
        ),
    )
    owner = f"gpu-test@{tmp_path}"
    runtime = DockerRuntime(
        dockerlib.from_env(),
        owner=owner,
        image=agent_image,
        memory_limit="512m",
        processes=LocalProcessRuntime(owner=owner),
    )
    with pytest.raises(GpuRuntimeMissing, match="NVIDIA Container Toolkit"):
        runtime.start(spec)
    assert not containers(f"{OWNER_LABEL}={owner}"), "the container that failed to start stayed"


def test_auto_takes_docker_only_when_the_job_image_is_here(
    agent_image: str, tmp_path: Path
) -> None:
    def runtime_for(image: str) -> object:
        settings = AgentSettings(agent_id="auto-1", data_dir=tmp_path, runtime="auto", image=image)
        return make_runtime(settings, owner=f"auto-1@{tmp_path}")

    assert isinstance(runtime_for(agent_image), DockerRuntime)
    assert isinstance(runtime_for("rondo/absent:none"), LocalProcessRuntime)
