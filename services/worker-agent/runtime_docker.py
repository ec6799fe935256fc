"""Running every NVFlare process of a job in its own locked-down container, and choosing the
runtime at start.

With a Docker engine (`RONDO_AGENT_RUNTIME=docker`, or `auto` when one answers and the image
is present) each process the agent would spawn (the FL server and every client) runs in a
container from `RONDO_AGENT_IMAGE` (the agent's own image: rondo, nvflare and torch
installed), locked down:

- a non-root uid (the sandbox uid the agent lent the process, else `JOB_UID`, or the agent's
  own uid when the agent is not root), every capability dropped, `no-new-privileges`, a pids
  limit and a memory limit (no swap beyond it);
- a read-only root filesystem; writable are only the process's own folder in the run (its
  NVFlare workspace, spools, model output) and a private tmpfs at /tmp;
- the shard (`ContainerNeeds.data_root`) and the job's requirements env mounted read-only;
  nothing else of the host, never the Docker socket;
- an environment made only of what the process needs (its RONDO_* paths, thread limits, the
  job env on PYTHONPATH): none of the agent's settings or credentials (`container_env`);
- a GPU as a device request; an engine without the NVIDIA runtime fails with a clear error.

Network: host networking. The FL server listens on the agent's FL ports at `RONDO_AGENT_HOST`,
the address provisioned into every kit, and clients on other hosts dial it there; a per-job
bridge network would need those ports published and the kits' server address rewritten per
host, which NVFlare's signed kits do not allow. The platform services the host network reaches
(NATS, S3, PostgreSQL, the gateway) all require credentials, and the container holds none.

Paths are mounted at the same path inside the container, so the command, the kit's files and
the data link in the workspace mean the same thing on both sides (an agent that itself runs in
a container must see its work dir at the host's path). Every container carries the agent's
owner label: a restarted agent removes what its previous life left (`kill_leftovers`).
"""

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container
from docker.types import DeviceRequest

from rondo.worker_agent.config import AgentSettings
from rondo.worker_agent.flare_runs import ProcessSpec
from rondo.worker_agent.runtime import LocalProcessRuntime, ProcessHandle, Runtime

logger = logging.getLogger(__name__)

OWNER_LABEL = "rondo.owner"
ROLE_LABEL = "rondo.role"
DEFAULT_CONTAINER_MEMORY_MB = 16 * 1024  # when RONDO_AGENT_MEMORY_LIMIT_MB is unset
# NVFlare's participant, its job process, their threads (torch, gRPC) all count as pids.
PIDS_LIMIT = 1024
TMPFS_SIZE = "512m"
# The uid job containers run as when the agent is root; it owns nothing on the host.
JOB_UID = 10001
CONTAINER_PYTHON = "python"  # the image's interpreter (the agent's own in the agent image)
# What a process's environment may pass into its container: its own paths and settings
# (RONDO_DATA_ROOT, RONDO_SLOT, RONDO_DEVICE, RONDO_OUT_SPOOL, RONDO_SPOOL_DIR, the hosted
# persistor's RESONTECH_OUT_*), thread limits. Anything naming a credential is dropped even
# then: the agent's own settings never reach user code.
PASSED_PREFIXES = ("RONDO_", "RESONTECH_")
PASSED_VARIABLES = frozenset(
    {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_ARENA_MAX"}
)
CREDENTIAL_MARKERS = (
    "KEY",
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "CREDENTIAL",
    "NATS",
    "S3",
    "DATABASE",
    "_URL",
    "STACK_ID",
)
# The container's own stdout and stderr go to the log file the agent tails.
ENTRYPOINT = ["sh", "-c", 'exec >>"$RONDO_OUTPUT_LOG" 2>&1; exec "$@"', "rondo-process"]
NO_NVIDIA_RUNTIME = "could not select device driver"


class GpuRuntimeMissing(RuntimeError):
    """A GPU was requested but the Docker engine has no NVIDIA runtime."""


def container_env(spec: ProcessSpec) -> dict[str, str]:
    """The environment of `spec`'s container: see PASSED_PREFIXES and CREDENTIAL_MARKERS."""
    environment = {
        name: value
        for name, value in spec.env.items()
        if (name.startswith(PASSED_PREFIXES) or name in PASSED_VARIABLES)
        and not any(marker in name.upper() for marker in CREDENTIAL_MARKERS)
    }
    environment["RONDO_OUTPUT_LOG"] = str(spec.output_log)
    for name in ("USER", "LOGNAME"):  # getpass and torch read them (the uid has no passwd)
        if name in spec.env:
            environment[name] = spec.env[name]
    # HOME and TMPDIR: the process's own folder when the spec has one there, else the tmpfs.
    for name in ("HOME", "TMPDIR"):
        value = spec.env.get(name)
        inside = value is not None and Path(value).resolve().is_relative_to(process_folder(spec))
        environment[name] = value if inside and value else "/tmp"
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    return environment


def job_site_packages(python: str) -> Path | None:
    """The site-packages of the job env whose interpreter is `python` (RequirementsEnvs builds
    `<env>/bin/python` with `<env>/lib/pythonX.Y/site-packages`), or None for a base one."""
    env_dir = Path(python).parent.parent
    if not (env_dir / "pyvenv.cfg").is_file():
        return None
    found = sorted((env_dir / "lib").glob("python3*/site-packages"))
    return found[0] if found else None


def process_folder(spec: ProcessSpec) -> Path:
    """The folder of this process in the run (workspace, spools, model output, shard)."""
    return spec.cwd.resolve().parent


def container_spec(
    spec: ProcessSpec, *, image: str, owner: str, memory_limit: str, user: tuple[int, int]
) -> dict[str, Any]:
    """The keyword arguments of `DockerClient.containers.create` for `spec`."""
    folder = process_folder(spec)
    environment = container_env(spec)
    volumes: dict[str, dict[str, str]] = {str(folder): {"bind": str(folder), "mode": "rw"}}
    # Paths the process writes that live outside its folder (none today) stay writable.
    for name in ("RONDO_SPOOL_DIR", "RONDO_OUT_SPOOL", "RESONTECH_OUT_DIR"):
        path = environment.get(name)
        if path and not Path(path).resolve().is_relative_to(folder):
            volumes[str(Path(path).resolve())] = {"bind": str(Path(path).resolve()), "mode": "rw"}
    device_requests: list[DeviceRequest] = []
    needs = spec.container
    if needs is not None:
        # Nested inside the writable folder: Docker mounts it over that, read-only.
        volumes[str(needs.data_root)] = {"bind": str(needs.data_root), "mode": "ro"}
        if needs.device.startswith("cuda:"):
            # The container sees only the GPU it is given, as its first one.
            device_requests.append(
                DeviceRequest(
                    device_ids=[needs.device.removeprefix("cuda:")], capabilities=[["gpu"]]
                )
            )
            environment["RONDO_DEVICE"] = "cuda:0"
    site_packages = job_site_packages(spec.argv[0])
    if site_packages is not None:
        volumes[str(site_packages)] = {"bind": str(site_packages), "mode": "ro"}
        environment["PYTHONPATH"] = str(site_packages)
    return {
        "image": image,
        "entrypoint": ENTRYPOINT,
        "command": [CONTAINER_PYTHON, *spec.argv[1:]],  # the image's interpreter
        "working_dir": str(spec.cwd.resolve()),
        "environment": environment,
        "volumes": volumes,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={TMPFS_SIZE}"},
        "read_only": True,
        "user": f"{user[0]}:{user[1]}",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": PIDS_LIMIT,
        "device_requests": device_requests,
        "mem_limit": memory_limit,
        "memswap_limit": memory_limit,  # no swap beyond the limit
        "network_mode": "host",  # see the module's docstring
        "labels": {OWNER_LABEL: owner, ROLE_LABEL: "client" if needs else "server"},
    }


def container_user(spec: ProcessSpec, default_uid: int) -> tuple[int, int]:
    """The uid and gid the container runs as: the spec's sandbox user when the agent lent it
    one (its folders are already that user's), else `default_uid` (and gid of that number)."""
    if spec.user is not None:
        return spec.user.uid, spec.user.gid
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    return default_uid, default_uid


def give_to(folder: Path, uid: int, gid: int) -> None:
    """Make `folder` (the process's folder, made by the agent as root) the container user's;
    used only when no sandbox user was lent (the sandbox sets its own modes)."""
    for root, dirs, files in os.walk(folder):
        os.lchown(root, uid, gid)
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(root, name), uid, gid)


class ContainerHandle:
    """One process container; the container is its whole process tree."""

    def __init__(self, container: Container) -> None:
        self._container = container
        self._container.reload()

    @property
    def id(self) -> str:
        return str(self._container.id)

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
        """Nothing to track: every process of the job lives in the container."""

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
    """Every process spec in its own container (see the module's docstring)."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        owner: str,
        image: str,
        memory_limit: str,
        processes: LocalProcessRuntime,
        uid: int | None = None,
    ) -> None:
        self._client = client
        self._owner = owner
        self._image = image
        self._memory_limit = memory_limit
        self._processes = processes  # only to end leftovers of an earlier process runtime
        self._uid = uid if uid is not None else JOB_UID

    def start(self, spec: ProcessSpec) -> ProcessHandle:
        user = container_user(spec, self._uid)
        spec.output_log.parent.mkdir(parents=True, exist_ok=True)
        spec.output_log.touch()
        if os.geteuid() == 0:
            if spec.user is None:
                give_to(process_folder(spec), *user)
            # The agent keeps owning the log (its tailer reads only files it owns, so user code
            # cannot swap in a link); the container appends to it through its group.
            os.chown(spec.output_log, 0, user[1])
            os.chmod(spec.output_log, 0o660)
        kwargs = container_spec(
            spec,
            image=self._image,
            owner=self._owner,
            memory_limit=self._memory_limit,
            user=user,
        )
        # Created, then started: a container that fails to start (no NVIDIA runtime) is
        # removed here instead of lingering as "created".
        container = self._client.containers.create(**kwargs)
        try:
            container.start()
        except APIError as error:
            with contextlib.suppress(APIError):
                container.remove(force=True)
            if NO_NVIDIA_RUNTIME in str(error):
                raise GpuRuntimeMissing(
                    f"a GPU ({spec.container.device if spec.container else '?'}) was requested "
                    "but this Docker engine has no NVIDIA runtime: install the NVIDIA "
                    "Container Toolkit on the agent's host, or declare CPU slots only "
                    f"(RONDO_AGENT_INVENTORY) [{error.explanation}]"
                ) from error
            raise
        return ContainerHandle(container)

    def kill_leftovers(self, timeout_s: float) -> int:
        killed = self._processes.kill_leftovers(timeout_s)
        leftovers = self._client.containers.list(
            all=True, filters={"label": f"{OWNER_LABEL}={self._owner}"}
        )
        for container in leftovers:
            with contextlib.suppress(NotFound):
                container.remove(force=True)
        return killed + len(leftovers)


def make_runtime(settings: AgentSettings, owner: str) -> Runtime:
    """The runtime `settings.runtime` asks for. `auto` takes Docker when an engine answers
    and the job image is present, and says at start which one it took; `docker` without an
    engine is an error."""
    processes = LocalProcessRuntime(owner=owner, memory_limit_mb=settings.memory_limit_mb)
    if settings.runtime == "process":
        return processes
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as error:
        if settings.runtime == "docker":
            raise RuntimeError(
                f"RONDO_AGENT_RUNTIME=docker but no Docker engine answers ({error}); start "
                "the engine, or set RONDO_AGENT_RUNTIME=process to run NVFlare as processes"
            ) from error
        logger.warning("no Docker engine answers (%s): NVFlare runs as local processes", error)
        return processes
    if settings.runtime == "auto":
        # `auto` takes Docker only when the job image is already here: an engine that merely
        # runs on the host (CI, a developer's laptop) must not change how jobs run.
        try:
            client.images.get(settings.image)
        except DockerException:
            logger.warning(
                "a Docker engine answers but image %s is not here: NVFlare runs as local "
                "processes (set RONDO_AGENT_RUNTIME=docker to require containers)",
                settings.image,
            )
            return processes
    memory_limit = f"{settings.memory_limit_mb or DEFAULT_CONTAINER_MEMORY_MB}m"
    logger.info(
        "Docker engine found: NVFlare processes run in containers from %s (memory limit %s)",
        settings.image,
        memory_limit,
    )
    return DockerRuntime(
        client, owner=owner, image=settings.image, memory_limit=memory_limit, processes=processes
    )
