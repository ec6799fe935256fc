"""Running NVFlare clients in Docker containers, and choosing the runtime at start.

With a Docker engine (`RONDO_AGENT_RUNTIME=docker`, or `auto` when one answers) each client
runs in a container from `RONDO_AGENT_IMAGE`: its GPU passed as a device request, its shard
mounted read-only, its memory limited, the container removed when it is stopped. The FL server
has no shard or GPU and stays a local process. A job's requirements are installed once per
distinct requirements file into a Docker volume named after its sha256, as a venv that sees
the image's packages (torch and nvflare are never reinstalled).

Paths are mounted at the same path inside the container, so the command, the kit's files and
the data link in the workspace mean the same thing on both sides (an agent that itself runs in
a container must see its work dir at the host's path).
"""

import logging
import math
from typing import Any

import docker
from docker.errors import DockerException, NotFound
from docker.models.containers import Container
from docker.types import DeviceRequest

from rondo.worker_agent.config import AgentSettings
from rondo.worker_agent.flare_runs import ProcessSpec
from rondo.worker_agent.runtime import LocalProcessRuntime, ProcessHandle, Runtime

logger = logging.getLogger(__name__)

OWNER_LABEL = "rondo.owner"
DEFAULT_CONTAINER_MEMORY_MB = 16 * 1024  # when RONDO_AGENT_MEMORY_LIMIT_MB is unset
JOB_ENV_DIR = "/opt/rondo/job-env"  # made writable for the image's user in Dockerfile.agent
REQUIREMENTS_IN_CONTAINER = "/opt/rondo/requirements.txt"
# The container's environment: the client's own RONDO_* variables (the agent's settings never
# reach it) and the thread limits; nothing of the host's PATH or PYTHONPATH.
PASSED_PREFIX = "RONDO_"
PASSED_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MALLOC_ARENA_MAX",
)
# Installs the job's requirements into the per-job volume once (a lock, as two clients of a
# job may start together on one host), then runs the client; all output goes to the log the
# agent tails.
ENTRYPOINT_SCRIPT = f"""set -eu
exec >>"$RONDO_OUTPUT_LOG" 2>&1
python=python
if [ -n "${{RONDO_REQUIREMENTS:-}}" ]; then
  exec 9>"{JOB_ENV_DIR}/.lock"
  flock 9
  if [ ! -f "{JOB_ENV_DIR}/.ready" ]; then
    python -m venv --system-site-packages "{JOB_ENV_DIR}"
    "{JOB_ENV_DIR}/bin/python" -m pip install --no-input --disable-pip-version-check \\
      --progress-bar off -r "$RONDO_REQUIREMENTS"
    touch "{JOB_ENV_DIR}/.ready"
  fi
  flock -u 9
  python="{JOB_ENV_DIR}/bin/python"
fi
exec "$python" "$@"
"""


def job_env_volume(requirements_sha256: str) -> str:
    """The Docker volume holding the environment for one requirements file."""
    return f"rondo-job-env-{requirements_sha256[:24]}"


def container_spec(
    spec: ProcessSpec, *, image: str, owner: str, memory_limit: str
) -> dict[str, Any]:
    """The keyword arguments of `DockerClient.containers.run` for a client's `spec`."""
    needs = spec.container
    if needs is None:
        raise ValueError("only client specs (with container needs) run in containers")
    environment = {
        name: value
        for name, value in spec.env.items()
        if name.startswith(PASSED_PREFIX) or name in PASSED_VARIABLES
    }
    environment["RONDO_OUTPUT_LOG"] = str(spec.output_log)
    # The workspace holds the kit, NVFlare's files and the output log.
    volumes: dict[str, dict[str, str]] = {
        str(spec.cwd): {"bind": str(spec.cwd), "mode": "rw"},
        str(needs.out_spool): {"bind": str(needs.out_spool), "mode": "rw"},
        str(needs.data_root): {"bind": str(needs.data_root), "mode": "ro"},
    }
    if needs.requirements_sha256 and needs.requirements_file is not None:
        volumes[job_env_volume(needs.requirements_sha256)] = {"bind": JOB_ENV_DIR, "mode": "rw"}
        volumes[str(needs.requirements_file)] = {"bind": REQUIREMENTS_IN_CONTAINER, "mode": "ro"}
        environment["RONDO_REQUIREMENTS"] = REQUIREMENTS_IN_CONTAINER
    device_requests: list[DeviceRequest] = []
    if needs.device.startswith("cuda:"):
        # The container sees only the GPU it is given, as its first one.
        device_requests.append(
            DeviceRequest(device_ids=[needs.device.removeprefix("cuda:")], capabilities=[["gpu"]])
        )
        environment["RONDO_DEVICE"] = "cuda:0"
    return {
        "image": image,
        "entrypoint": ["sh", "-c", ENTRYPOINT_SCRIPT, "rondo-client"],
        "command": spec.argv[1:],  # the agent's interpreter is replaced by the image's
        "working_dir": str(spec.cwd),
        "environment": environment,
        "volumes": volumes,
        "device_requests": device_requests,
        "mem_limit": memory_limit,
        "memswap_limit": memory_limit,  # no swap beyond the limit
        "network_mode": "host",  # the FL server is dialled at its configured host address
        "labels": {OWNER_LABEL: owner},
        "detach": True,
    }


class ContainerHandle:
    """One client container; the container is its whole process tree."""

    def __init__(self, container: Container) -> None:
        self._container = container
        self._container.reload()

    @property
    def pid(self) -> int:
        return int(self._container.attrs["State"].get("Pid") or 0)

    def poll(self) -> int | None:
        try:
            self._container.reload()
        except NotFound:  # removed behind our back
            return -1
        state = self._container.attrs["State"]
        if state["Status"] in ("exited", "dead"):
            return int(state["ExitCode"])
        return None

    def track(self) -> None:
        """Nothing to track: every process of the client lives in the container."""

    def kill_tree(self, timeout_s: float) -> int | None:
        """Stop (SIGTERM, SIGKILL after `timeout_s`), then remove the container."""
        try:
            self._container.stop(timeout=math.ceil(timeout_s))
            exit_code = self.poll()
            self._container.remove(force=True)
        except NotFound:
            return None
        return exit_code


class DockerRuntime:
    """Clients in containers; everything else (the FL server) through `processes`."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        owner: str,
        image: str,
        memory_limit: str,
        processes: LocalProcessRuntime,
    ) -> None:
        self._client = client
        self._owner = owner
        self._image = image
        self._memory_limit = memory_limit
        self._processes = processes

    def start(self, spec: ProcessSpec) -> ProcessHandle:
        if spec.container is None:
            return self._processes.start(spec)
        spec.output_log.parent.mkdir(parents=True, exist_ok=True)
        spec.output_log.touch()
        kwargs = container_spec(
            spec, image=self._image, owner=self._owner, memory_limit=self._memory_limit
        )
        return ContainerHandle(self._client.containers.run(**kwargs))

    def kill_leftovers(self, timeout_s: float) -> int:
        killed = self._processes.kill_leftovers(timeout_s)
        leftovers = self._client.containers.list(
            all=True, filters={"label": f"{OWNER_LABEL}={self._owner}"}
        )
        for container in leftovers:
            container.remove(force=True)
        return killed + len(leftovers)


def make_runtime(settings: AgentSettings, owner: str) -> Runtime:
    """The runtime `settings.runtime` asks for. `auto` takes Docker when an engine answers
    and says at start which one it took; `docker` without an engine is an error."""
    processes = LocalProcessRuntime(owner=owner, memory_limit_mb=settings.memory_limit_mb)
    if settings.runtime == "process":
        return processes
    try:
        client = docker.from_env()
    except DockerException as error:
        if settings.runtime == "docker":
            raise RuntimeError(
                f"RONDO_AGENT_RUNTIME=docker but no Docker engine answers ({error}); start "
                "the engine, or set RONDO_AGENT_RUNTIME=process to run NVFlare as processes"
            ) from error
        logger.warning(
            "no Docker engine answers (%s): NVFlare clients run as local processes", error
        )
        return processes
    memory_limit = f"{settings.memory_limit_mb or DEFAULT_CONTAINER_MEMORY_MB}m"
    logger.info(
        "Docker engine found: NVFlare clients run in containers from %s (memory limit %s)",
        settings.image,
        memory_limit,
    )
    return DockerRuntime(
        client, owner=owner, image=settings.image, memory_limit=memory_limit, processes=processes
    )
