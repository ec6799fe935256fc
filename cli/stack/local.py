"""The local stack behind `rondo up / down / status`.

Real nats-server and SeaweedFS plus every Rondo service (one worker-agent per worker) run as
detached child processes, each in its own session, all under one data directory: state file,
logs, JetStream store, S3 data, databases, agent work dirs and spans. Nothing keeps running in
the `rondo` command itself; the state file is how a later command finds the processes.

The data dir is 0711: the sandbox uids user code runs as (see rondo.worker_agent.sandbox) pass
through it to their own run folders under `agents/` (0711 too), and list or read nothing else:
every other entry (db/, logs/, nats/, seaweedfs/, spans/, the services' folders, stack.json,
s3.json, the secrets key file) is the operator's alone (0700 folders, 0600 files).
"""

import os
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field, computed_field

from rondo.stack.bootstrap import ensure_buckets, ensure_default_user
from rondo.stack.bus_auth import write_auth_config
from rondo.stack.errors import StackError
from rondo.stack.health import NATS_PART, S3_PART, SERVER_PARTS, Probe, probe_stack
from rondo.stack.ports import free_ports, port_is_free
from rondo.stack.processes import (
    kill_trees,
    processes_marked,
    spawn,
    tree_rss,
    wait_until,
)
from rondo.stack.servers import NatsServer, SeaweedS3, write_s3_config
from rondo.stack.services import (
    SERVICE_MODULES,
    STACK_ID_ENV,
    ServicePart,
    gateway_env,
    manage_argv,
    missing_services,
    service_parts,
)
from rondo.stack.state import (
    ExternalNats,
    ProcessRecord,
    StackState,
    load_state,
    new_state,
    save_state,
)

LOG_TAIL_LINES = 15
# Folders of the data dir the services write to, made private before they start (a service
# creating one itself would make it 0755). `agents` is the only one other uids pass through.
PRIVATE_FOLDERS = ("db", "logs", "nats", "seaweedfs", "spans", "scheduler", "artifacts")
AGENTS_FOLDER = "agents"
# What a failing part, server or store raises while starting; reported as `StackError`.
STARTUP_ERRORS = (
    RuntimeError,
    OSError,
    subprocess.SubprocessError,
    BotoCoreError,
    ClientError,
)


class PartStatus(BaseModel):
    name: str
    pid: int
    running: bool
    healthy: bool
    detail: str
    rss_bytes: int = Field(description="Resident memory of the part's whole process tree")
    log_path: Path


class StackStatus(BaseModel):
    data_dir: Path
    parts: list[PartStatus]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def healthy(self) -> bool:
        """At least one part, and every part healthy."""
        return bool(self.parts) and all(part.healthy for part in self.parts)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rss_bytes(self) -> int:
        """Resident memory of all the parts' process trees together."""
        return sum(part.rss_bytes for part in self.parts)


class UpResult(BaseModel):
    state: StackState
    elapsed_s: float
    already_running: bool = False


class DownResult(BaseModel):
    stopped: list[str] = Field(default_factory=list, description="Parts that were running")
    strays: list[int] = Field(default_factory=list, description="Pids found outside the trees")
    ports_still_bound: list[int] = Field(default_factory=list)


def secure_data_dir(data_dir: Path) -> None:
    """Make the data dir 0711 and `agents/` 0711, the known private folders 0700, and every
    other entry of the data dir unreadable to other users (not recursive: a private folder
    hides its content). Symbolic links are left alone."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o711)
    for name in PRIVATE_FOLDERS:
        (data_dir / name).mkdir(mode=0o700, exist_ok=True)
    (data_dir / AGENTS_FOLDER).mkdir(exist_ok=True)
    for entry in data_dir.iterdir():
        mode = entry.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        if entry.name == AGENTS_FOLDER:
            os.chmod(entry, 0o711)
        elif stat.S_IMODE(mode) & 0o077:
            os.chmod(entry, stat.S_IMODE(mode) & 0o700)


class LocalStack:
    """Up, down and status of the stack whose data directory is `data_dir`; `progress`
    receives one line per step of `up`."""

    def __init__(
        self,
        data_dir: Path,
        progress: Callable[[str], None] = lambda _: None,
        *,
        host: str = "127.0.0.1",
        external_nats: ExternalNats | None = None,
        trust_user_code: bool = False,
    ) -> None:
        """`host`: the address a new stack's servers and services bind (a stack started
        before keeps its own). `external_nats`: connect the services to this NATS (a cluster,
        say) instead of starting a nats-server. `trust_user_code`: workers run user code as
        their own user, unsandboxed (else sandboxed as root, and refused where not root)."""
        self.data_dir = data_dir.resolve()
        self.progress = progress
        self.host = host
        self.external_nats = external_nats
        self.trust_user_code = trust_user_code

    # --- up -----------------------------------------------------------------------------

    def up(self, workers: int, timeout_s: float = 120) -> UpResult:
        """Start every part (reusing the persisted ports, credentials, key and databases) and
        return once all are healthy. An already healthy stack of the same size is left as is.
        On failure everything started is stopped again and `StackError` is raised."""
        started = time.monotonic()
        state = load_state(self.data_dir)
        if state is not None and state.processes:
            if (
                len(state.agents) == workers
                and state.trust_user_code == self.trust_user_code
                and self.status().healthy
            ):
                return UpResult(state=state, elapsed_s=0.0, already_running=True)
            self.progress("stopping the previous, incomplete stack")
            self.down()
            state = load_state(self.data_dir)
        missing = missing_services()
        if missing:
            names = ", ".join(f"{SERVICE_MODULES[s]} ({s})" for s in missing)
            raise StackError(f"cannot run {names}: module or its __main__ not installed")

        state = (
            state.reallocated(workers) if state else new_state(self.data_dir, workers, self.host)
        )
        state.external_nats = self.external_nats
        state.ensure_bus_passwords()
        state.trust_user_code = self.trust_user_code
        secure_data_dir(self.data_dir)
        save_state(state)
        try:
            self._start(state, deadline=started + timeout_s)
        except STARTUP_ERRORS as error:
            self.progress("start failed: stopping what was started")
            self.down()
            if isinstance(error, StackError):
                raise
            raise StackError(f"{type(error).__name__}: {error}") from error
        except BaseException:  # interrupted, or a bug: still leave nothing running
            self.down()
            raise
        return UpResult(state=state, elapsed_s=time.monotonic() - started)

    def _start(self, state: StackState, deadline: float) -> None:
        state.logs_dir.mkdir(parents=True, exist_ok=True)
        write_s3_config(state.s3_config_path, [state.s3_admin])
        if state.external_nats is None:
            write_auth_config(state.nats_auth_config_path, state.bus_passwords)
            self._start_server(state, NATS_PART, self._nats_server(state), deadline)
        self._start_s3(state, deadline)
        ensure_buckets(state, timeout_s=max(1.0, deadline - time.monotonic()))
        self.progress("buckets ready")

        (state.data_dir / "db").mkdir(exist_ok=True)
        parts = service_parts(state)
        for part in parts:
            self._spawn(state, part)
        save_state(state)
        self._wait_healthy(state, parts, deadline)

        manage_timeout = max(5.0, deadline - time.monotonic())
        access = ensure_default_user(
            state, manage_argv(), gateway_env(state), timeout_s=manage_timeout
        )
        state.user.user_id, state.s3_user = access.user_id, access.s3
        save_state(state)
        secure_data_dir(state.data_dir)  # what the services made while starting
        self.progress(f"default user {state.user.name!r} ready")

    def _start_s3(self, state: StackState, deadline: float) -> None:
        """SeaweedFS; once more on fresh ports if it exited while starting: a port found free
        a moment ago can be taken before it binds it (it binds each port + 10000 too). One
        still starting when time ran out keeps its record (so `down` stops it) and no twin."""
        try:
            self._start_server(state, S3_PART, self._seaweed(state), deadline)
        except StackError:
            first = state.processes.get(S3_PART)
            if first is None or first.process() is not None:
                raise
            self.progress("SeaweedFS exited while starting: retrying on fresh ports")
            fresh = free_ports(len(SeaweedS3.PORT_NAMES), state.host, with_grpc_twin=True)
            state.ports.seaweed = dict(zip(SeaweedS3.PORT_NAMES, fresh, strict=True))
            self._start_server(state, S3_PART, self._seaweed(state), deadline)

    @staticmethod
    def _nats_server(state: StackState) -> NatsServer:
        return NatsServer(
            store_dir=state.data_dir / "nats",
            port=state.ports.nats,
            monitor_port=state.ports.nats_monitor,
            host=state.host,
            config_file=state.nats_auth_config_path,
        )

    @staticmethod
    def _seaweed(state: StackState) -> SeaweedS3:
        return SeaweedS3(
            data_dir=state.data_dir / "seaweedfs",
            s3_config=state.s3_config_path,
            ports=dict(state.ports.seaweed),
            host=state.host,
        )

    def _spawn(self, state: StackState, part: ServicePart) -> None:
        log_path = self._log_path(state, part.name)
        process = spawn(part.argv, log_path, env=part.env, cwd=state.data_dir)
        state.processes[part.name] = ProcessRecord.of(process.pid, log_path)

    def _start_server(
        self, state: StackState, name: str, server: NatsServer | SeaweedS3, deadline: float
    ) -> None:
        log_path = self._log_path(state, name)
        try:
            server.start(log_path, timeout_s=max(1.0, deadline - time.monotonic()))
        except (RuntimeError, TimeoutError) as error:
            raise StackError(f"{error}\n{self._log_tail(state, name)}") from error
        finally:
            if server.process is not None:
                state.processes[name] = ProcessRecord.of(server.process.pid, log_path)
                save_state(state)
        self.progress(f"{name} healthy")

    def _wait_healthy(
        self, state: StackState, parts: Sequence[ServicePart], deadline: float
    ) -> None:
        """Poll until every part answers healthy; a part that exits fails at once."""
        pending = {part.name: part for part in parts}
        probes: dict[str, Probe] = {}
        while pending:
            for name in pending:
                if state.processes[name].process() is None:
                    raise StackError(f"{name} exited while starting\n{self._log_tail(state, name)}")
            probes = probe_stack(state, list(pending.values()))
            for name, probe in probes.items():
                if probe.healthy and pending.pop(name, None) is not None:
                    self.progress(f"{name} healthy")
            if not pending:
                return
            if time.monotonic() > deadline:
                lines = [f"{name}: {probes[name].detail}" for name in pending]
                tails = "\n".join(self._log_tail(state, name) for name in pending)
                raise StackError("not healthy in time:\n" + "\n".join(lines) + "\n" + tails)
            time.sleep(0.25)

    @staticmethod
    def _log_path(state: StackState, part: str) -> Path:
        return state.logs_dir / f"{part}.console.log"

    def _log_tail(self, state: StackState, part: str) -> str:
        path = self._log_path(state, part)
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return f"--- {path}: unreadable"
        return f"--- last lines of {path}:\n" + "\n".join(lines[-LOG_TAIL_LINES:])

    # --- one part -----------------------------------------------------------------------

    def restart_part(self, name: str, timeout_s: float = 60, grace_s: float = 5) -> None:
        """Start one part of the stack again, on its ports with its data and environment, and
        return once it answers healthy. A part still running is stopped first (SIGTERM, then
        SIGKILL after `grace_s`, its whole process tree); one that died is just started."""
        state = load_state(self.data_dir)
        if state is None or name not in state.processes:
            raise StackError(f"{name!r} is not a part of the stack in {self.data_dir}")
        record = state.processes[name]
        if record.process() is not None:
            kill_trees([record.pid], grace_s)
        deadline = time.monotonic() + timeout_s
        if name == NATS_PART:
            self._start_server(state, name, self._nats_server(state), deadline)
        elif name == S3_PART:
            self._start_server(state, name, self._seaweed(state), deadline)
        else:
            [part] = [part for part in service_parts(state) if part.name == name]
            self._spawn(state, part)
            save_state(state)
            self._wait_healthy(state, [part], deadline)
        self.progress(f"{name} restarted")

    # --- down ---------------------------------------------------------------------------

    def down(self, grace_s: float = 5) -> DownResult:
        """Stop every process the stack started: the services' process trees first (NVFlare
        included) while NATS and S3 still serve their last flush, then the servers, then any
        process still marked with the stack's id or naming its data dir (NVFlare processes
        that left the trees). Each step gives SIGTERM `grace_s` before SIGKILL. Waits until no
        recorded port is bound."""
        state = load_state(self.data_dir)
        if state is None:
            return DownResult()
        running = {
            name: record.pid
            for name, record in state.processes.items()
            if record.process() is not None
        }
        kill_trees([pid for name, pid in running.items() if name not in SERVER_PARTS], grace_s)
        kill_trees([pid for name, pid in running.items() if name in SERVER_PARTS], grace_s)
        strays = processes_marked(STACK_ID_ENV, state.stack_id, state.data_dir)
        kill_trees([proc.pid for proc in strays], grace_s)
        ports = state.recorded_ports()
        wait_until(lambda: all(port_is_free(p, state.host) for p in ports), grace_s, 0.1)
        state.processes = {}
        save_state(state)
        return DownResult(
            stopped=sorted(running),
            strays=[proc.pid for proc in strays],
            ports_still_bound=[p for p in ports if not port_is_free(p, state.host)],
        )

    # --- status -------------------------------------------------------------------------

    def status(self) -> StackStatus:
        """Each started part: running, healthy (per its probe) and its tree's memory."""
        state = load_state(self.data_dir)
        if state is None or not state.processes:
            return StackStatus(data_dir=self.data_dir, parts=[])
        services = [p for p in service_parts(state) if p.name in state.processes]
        probes = probe_stack(state, services)
        parts: list[PartStatus] = []
        for name in (*SERVER_PARTS, *(p.name for p in services)):
            record = state.processes.get(name)
            if record is None:
                continue
            running = record.process() is not None
            probe = probes.get(name, Probe(False, "not probed"))
            parts.append(
                PartStatus(
                    name=name,
                    pid=record.pid,
                    running=running,
                    healthy=running and probe.healthy,
                    detail=probe.detail if running else "not running",
                    rss_bytes=tree_rss(record.pid) if running else 0,
                    log_path=record.log_path,
                )
            )
        return StackStatus(data_dir=self.data_dir, parts=parts)
