"""Running one NVFlare run on this agent: what to spawn, and submitting/aborting the job.

The agent prepares the folders (unzipped kits, job files, data root), spawns the
`ProcessSpec`s this module returns as single commands, supervises and kills their whole
process trees. Each command is what the kit's `startup/sub_start.sh --once` runs (no watchdog
loop), with the agent's interpreter. The workspace of a participant is its kit folder.
"""

import json
import os
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvflare.fuel.flare_api.flare_api import Session, new_secure_session

from rondo.contracts.events import ServerAssignment
from rondo.worker_agent.flare_app import CLIENT_DATA_LINK, build_job_folder
from rondo.worker_agent.sandbox import SandboxUser, process_env

# The command's stdout and stderr: the participant's log lines and those of every NVFlare job
# process it starts (they inherit its stdout). NVFlare's own files split them: <ws>/log.txt
# (participant only) and <ws>/<nvflare job id>/log.txt (deleted on the server when a job ends).
OUTPUT_LOG = "rondo_output.log"
JOB_FOLDER = "nvflare_job"
HOSTED_MODEL_FILENAME = "GLOBAL_MODEL.pt"
SESSION_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.2
# NVFlare connectors wait 1, 2, 4, 8 s between failed connection attempts, and a client that
# could not register retries after `client_register_interval` (default 2 s). Server and
# clients start together, so the first attempts often come too early: the admin session waits
# until the server's port accepts connections, and clients retry registration sooner.
LISTENER_PROBE_INTERVAL_S = 0.05
CLIENT_REGISTER_RETRY_S = 0.2
MIN_HEARTBEAT_INTERVAL_S = 2.0
# The process's HOME (and TMPDIR under it), beside its workspace: torch, getpass and friends
# write caches there instead of the agent's home.
HOME_FOLDER = "home"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Components of ours named in apps; kept allowed even for jobs without custom code.
PLATFORM_COMPONENT_PREFIX = "rondo."


@dataclass(frozen=True)
class ContainerNeeds:
    """What running a client's command in a container takes beyond the command itself (a
    process runtime ignores it): the folders to mount, the device, the job's requirements."""

    data_root: Path  # the unpacked shard: mounted read-only
    out_spool: Path  # where the executor writes the user's out_dir files
    device: str  # 'cpu' or 'cuda:N', N as this host numbers its GPUs
    requirements_file: Path | None  # the job's requirements.txt; None or empty: none
    requirements_sha256: str | None  # names the cached environment; None: no requirements


@dataclass
class ProcessSpec:
    """One command for the agent to spawn (its own session) and supervise: send its stdout
    and stderr to `output_log`, tail `log_files`, kill its whole process tree."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    log_files: list[Path]
    output_log: Path
    container: ContainerNeeds | None = None  # set for clients: they may run in a container
    user: SandboxUser | None = None  # run as this uid/gid; None: as the agent's own user


@dataclass
class ServerRunSpec:
    """The FL server of one run; every path is already prepared by the agent."""

    kit_dir: Path  # unzipped server startup kit (startup/, local/)
    admin_kit_dir: Path  # unzipped admin startup kit
    admin_name: str
    job_files_dir: Path  # the user's job folder: scripts/, configs/?, model/?, requirements/
    work_dir: Path  # scratch for this run: the job folder to submit
    spool_dir: Path  # RONDO_SPOOL_DIR: where the RoundReporter writes
    assignment: ServerAssignment
    initial_checkpoint: Path | None  # plain state dict to start from (resume / warm start)
    python: str  # interpreter that runs NVFlare (rondo and torch importable)
    torch_threads: int = 1
    job_id: str = ""  # the Rondo job id, shown to the user's code as JOB_ID
    model_out_dir: Path | None = None  # hosted-format persistors write their model here
    extra_pythonpath: list[Path] = field(default_factory=list)  # e.g. the job's requirements env
    user: SandboxUser | None = None  # the sandbox uid it runs as; None: the agent's user


@dataclass
class ClientRunSpec:
    """One NVFlare client (one worker slot) of a run."""

    kit_dir: Path
    site_name: str
    slot: int
    data_root: Path  # the unpacked shard
    out_spool: Path  # RONDO_OUT_SPOOL: user out_dir files land in round_<r>/ here
    device: str  # 'cpu' or 'cuda:N'
    python: str
    torch_threads: int = 1
    extra_pythonpath: list[Path] = field(default_factory=list)
    heartbeat_interval_s: float = 2.0  # to the FL server; the server's timeout is per job
    requirements_file: Path | None = None  # the job's requirements.txt (for containers)
    requirements_sha256: str | None = None  # None: the job has no requirements
    user: SandboxUser | None = None  # the sandbox uid it runs as; None: the agent's user


class RunSubmitError(RuntimeError):
    """The run could not be submitted (clients missing, server unreachable, app rejected)."""


# --- processes ------------------------------------------------------------------------------


def server_process(spec: ServerRunSpec) -> ProcessSpec:
    """The FL server command; also writes the server's local/resources.json."""
    workspace = spec.kit_dir.resolve()
    resources = _kit_resources(workspace)
    # Job store and snapshots stay in this workspace: NVFlare's default, /tmp/nvflare, is
    # shared by every server on the host.
    resources["snapshot_persistor"]["args"]["storage"]["args"]["root_dir"] = str(
        workspace / "snapshot-storage"
    )
    for component in resources["components"]:
        if component.get("id") == "job_manager":
            component["args"]["uri_root"] = str(workspace / "jobs-storage")
    for server in resources["servers"]:  # the parent process drops silent clients
        server["heart_beat_timeout"] = spec.assignment.timing.worker_lost_after_s
    _write_resources(workspace, resources)

    model_out = spec.model_out_dir or spec.work_dir / "model_out"
    model_out.mkdir(parents=True, exist_ok=True)
    spec.spool_dir.mkdir(parents=True, exist_ok=True)
    env = _process_env(
        workspace,
        spec.user,
        spec.torch_threads,
        spec.extra_pythonpath,
        malloc_arenas=4,
        job_variables={
            "RONDO_SPOOL_DIR": str(spec.spool_dir.resolve()),
            "RESONTECH_OUT_DIR": str(model_out.resolve()),
            "RESONTECH_OUT_FILENAME": HOSTED_MODEL_FILENAME,
        },
    )
    process = _process_spec(workspace, _kit_command(workspace, spec.python), env)
    process.user = spec.user
    return process


def client_process(spec: ClientRunSpec) -> ProcessSpec:
    """The FL client command; also writes local/resources.json and links the data root where
    custom apps look for it (`<workspace>/rondo_data`)."""
    workspace = spec.kit_dir.resolve()
    _write_resources(workspace, _kit_resources(workspace))
    _set_register_retry(workspace, CLIENT_REGISTER_RETRY_S)
    link = workspace / CLIENT_DATA_LINK
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(spec.data_root.resolve(), target_is_directory=True)
    spec.out_spool.mkdir(parents=True, exist_ok=True)

    env = _process_env(
        workspace,
        spec.user,
        spec.torch_threads,
        spec.extra_pythonpath,
        malloc_arenas=2,
        job_variables={
            "RONDO_DATA_ROOT": str(spec.data_root.resolve()),
            "RONDO_SLOT": str(spec.slot),
            "RONDO_DEVICE": spec.device,
            "RONDO_OUT_SPOOL": str(spec.out_spool.resolve()),
        },
    )
    # NVFlare's heartbeat loop sleeps in 2 s steps: shorter intervals would spin.
    heartbeat_s = max(MIN_HEARTBEAT_INTERVAL_S, spec.heartbeat_interval_s)
    argv = [*_kit_command(workspace, spec.python), f"heart_beat_interval={heartbeat_s}"]
    process = _process_spec(workspace, argv, env)
    process.user = spec.user
    process.container = ContainerNeeds(
        data_root=spec.data_root.resolve(),
        out_spool=spec.out_spool.resolve(),
        device=spec.device,
        requirements_file=spec.requirements_file,
        requirements_sha256=spec.requirements_sha256,
    )
    return process


# --- admin ----------------------------------------------------------------------------------


def submit_run(spec: ServerRunSpec, timeout_s: float) -> str:
    """Wait until every site of the run is registered, build the job folder, submit it and
    return the NVFlare job id. Raises RunSubmitError (or AppBuildError) on failure."""
    deadline = time.monotonic() + timeout_s
    job_dir = build_job_folder(
        spec.job_files_dir,
        (spec.work_dir / JOB_FOLDER).resolve(),
        spec.assignment,
        spec.initial_checkpoint.resolve() if spec.initial_checkpoint else None,
        job_name=f"rondo-{spec.job_id}" if spec.job_id else "rondo",
        spool_dir=spec.spool_dir.resolve(),
        job_id=spec.job_id,
    )
    session = _open_session(spec, deadline)
    try:
        _wait_for_sites(session, spec.assignment.site_names, deadline)
        # A relative path makes submit_job hang: always absolute.
        return session.submit_job(str(job_dir))
    finally:
        session.close()


def abort_run(spec: ServerRunSpec, nvflare_job_id: str, timeout_s: float) -> None:
    """Ask the FL server to abort the NVFlare job (the processes stay up)."""
    session = _open_session(spec, time.monotonic() + timeout_s)
    try:
        session.abort_job(nvflare_job_id)
    finally:
        session.close()


def registered_sites(session: Session) -> set[str]:
    return {client.name for client in session.get_system_info().client_info}


def _open_session(spec: ServerRunSpec, deadline: float) -> Session:
    """An admin session, retried until the server answers or the deadline passes. The first
    try waits until the admin port accepts connections (see LISTENER_PROBE_INTERVAL_S)."""
    port = spec.assignment.admin_port
    if not _wait_for_listener("localhost", port, deadline):
        raise RunSubmitError(f"FL server's admin port {port} did not open in time")
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return new_secure_session(
                spec.admin_name,
                str(spec.admin_kit_dir.resolve()),
                timeout=max(1.0, min(SESSION_TIMEOUT_S, deadline - time.monotonic())),
            )
        except Exception as error:  # server not listening yet
            last_error = error
            time.sleep(POLL_INTERVAL_S)
    raise RunSubmitError(f"FL server's admin port did not answer: {last_error}")


def _wait_for_listener(host: str, port: int, deadline: float) -> bool:
    """Whether something accepted a TCP connection on host:port before the deadline."""
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            return True
        except OSError:
            time.sleep(LISTENER_PROBE_INTERVAL_S)
    return False


def _wait_for_sites(session: Session, sites: list[str], deadline: float) -> None:
    missing = set(sites)
    while time.monotonic() < deadline:
        missing = set(sites) - registered_sites(session)
        if not missing:
            return
        time.sleep(POLL_INTERVAL_S)
    raise RunSubmitError(f"clients not registered in time: {', '.join(sorted(missing))}")


# --- workspace files ------------------------------------------------------------------------


def _process_spec(workspace: Path, argv: list[str], env: dict[str, str]) -> ProcessSpec:
    output_log = workspace / OUTPUT_LOG
    return ProcessSpec(
        argv=argv, cwd=workspace, env=env, log_files=[output_log], output_log=output_log
    )


def _kit_command(workspace: Path, python: str) -> list[str]:
    """The python command of the kit's `sub_start.sh --once`, run by `python`."""
    script = (workspace / "startup" / "sub_start.sh").read_text()
    for line in script.splitlines():
        if line.strip().startswith("exec python3 -u -m "):
            words = shlex.split(line)[2:]  # drop `exec python3`
            return [python, *(str(workspace) if w == "$WORKSPACE" else w for w in words)]
    raise RunSubmitError(f"no start command in {workspace}/startup/sub_start.sh")


def _process_env(
    workspace: Path,
    user: SandboxUser | None,
    threads: int,
    pythonpath: list[Path],
    malloc_arenas: int,
    job_variables: dict[str, str],
) -> dict[str, str]:
    """The process's whole environment, built from an allowlist (`sandbox.process_env`): the
    agent's settings (S3 and NATS credentials, database URLs, RONDO_*) never reach user code.
    HOME (TMPDIR inside it) is `<workspace>/../home`, the process's own folder."""
    home = workspace.parent / HOME_FOLDER
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    variables = {name: str(threads) for name in THREAD_VARIABLES}
    variables["MALLOC_ARENA_MAX"] = str(malloc_arenas)
    variables.update(job_variables)
    env = process_env(variables, home, user)
    paths = [str(p.resolve()) for p in pythonpath]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _kit_resources(workspace: Path) -> dict[str, Any]:
    """The kit's default resources, with our components allowed (NVFlare 2.9 only lets jobs
    without custom code build classes from its allow-list)."""
    resources = json.loads((workspace / "local" / "resources.json.default").read_text())
    allow_list = resources.get("class_allow_list")
    if isinstance(allow_list, list) and "*" not in allow_list:
        allow_list.append(PLATFORM_COMPONENT_PREFIX)
    return resources


def _set_register_retry(workspace: Path, retry_s: float) -> None:
    """Set how soon the kit's client retries a failed registration (startup/fed_client.json)."""
    path = workspace / "startup" / "fed_client.json"
    config = json.loads(path.read_text())
    config["client"]["client_register_interval"] = retry_s
    path.write_text(json.dumps(config, indent=2))


def _write_resources(workspace: Path, resources: dict[str, Any]) -> None:
    (workspace / "local" / "resources.json").write_text(json.dumps(resources, indent=2))
