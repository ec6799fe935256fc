"""A real Docker engine and Rondo's images for tests, through scripts/docker-engine.

`docker_images()` starts the engine when none answers (root only), builds the local base images
and rondo/service + rondo/agent from this working tree (layer-cached), and returns the agent
image. Where no engine can be made to answer it skips the calling test with the reason.
"""

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from rondo.stack.health import probe_stack
from rondo.stack.processes import spawn, wait_until
from rondo.stack.services import agent_part
from support.platform import Platform

REPO = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = REPO / "scripts" / "docker-engine"
IMAGE_VERSION = "test"
AGENT_IMAGE = f"rondo/agent:{IMAGE_VERSION}"
MEMORY_LIMIT_MB = 2048
SERVICE_IMAGE = f"rondo/service:{IMAGE_VERSION}"


def docker_images() -> str:
    """The agent image, built from this tree; skips when no engine can start."""
    up = subprocess.run([str(ENGINE_SCRIPT), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        pytest.skip(f"no Docker engine can start here: {up.stderr.strip()[-500:]}")
    built = subprocess.run(
        [str(ENGINE_SCRIPT), "images", IMAGE_VERSION], capture_output=True, text=True, timeout=1800
    )
    assert built.returncode == 0, f"image build failed:\n{built.stderr[-3000:]}"
    return AGENT_IMAGE


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout


def containers(label: str) -> list[str]:
    """Ids of every container (running or not) with this label (`key` or `key=value`)."""
    return docker("ps", "-aq", "--no-trunc", "--filter", f"label={label}").split()


def inspect(container_id: str) -> dict | None:
    """`docker inspect` of the container, or None when it is gone (removed meanwhile)."""
    found = docker("inspect", container_id, check=False)
    return json.loads(found)[0] if found.strip() else None


def start_docker_agent(platform: Platform, index: int, image: str) -> int:
    """Run the stack's agent `index` with the Docker runtime (keeping its run folders, so a
    test can read what user code left); returns its pid once healthy."""
    state = platform.state
    part = agent_part(state, state.agents[index])
    env = {
        **part.env,
        "RONDO_AGENT_RUNTIME": "docker",
        "RONDO_AGENT_IMAGE": image,
        "RONDO_AGENT_MEMORY_LIMIT_MB": str(MEMORY_LIMIT_MB),
        "RONDO_AGENT_KEEP_RUN_DIRS": "true",  # the hostile reports are read after the job
    }
    process = spawn(
        [sys.executable, "-m", part.module],
        state.logs_dir / f"{part.name}.docker.log",
        env=env,
        cwd=state.data_dir,
    )
    healthy = wait_until(lambda: probe_stack(state, [part])[part.name].healthy, 90, 0.25)
    assert healthy, f"{part.name} (Docker runtime) did not become healthy"
    return process.pid


def stop_agent(pid: int, sig: int = signal.SIGTERM) -> None:
    process = psutil.Process(pid)
    process.send_signal(sig)
    process.wait(timeout=60)
