"""Where NVFlare processes run: a small `Runtime` protocol and the local process runtime.

NVFlare starts each job's worker processes in a NEW session, and a parent's death re-parents
them to init, so following parent pids from the root is not enough to find them all later.
The local runtime therefore (1) stamps every process it starts with a unique environment
variable, which every descendant inherits, and (2) remembers every descendant it has seen.
Stopping kills the union: the whole tree, orphans included.
"""

import contextlib
import os
import resource
import signal
import subprocess
import uuid
from typing import Protocol

import psutil

from rondo.stack.processes import spawn
from rondo.worker_agent.flare_runs import ProcessSpec

# Inherited by every descendant of a started process: the tree it belongs to, and the agent
# that started it (so an agent restarted after a crash can end what its last life left).
TREE_MARKER_ENV = "RONDO_PROCESS_TREE"
OWNER_MARKER_ENV = "RONDO_PROCESS_OWNER"


class ProcessHandle(Protocol):
    """One started process tree."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None:
        """The root process's exit code, or None while it runs."""
        ...

    def track(self) -> None:
        """Note the tree's current members (call it now and then while it runs)."""
        ...

    def kill_tree(self, timeout_s: float) -> int | None:
        """SIGTERM every member, SIGKILL what survives `timeout_s`; returns the exit code."""
        ...


class Runtime(Protocol):
    """Starts process specs (locally now; in containers later)."""

    def start(self, spec: ProcessSpec) -> ProcessHandle:
        """Spawn `spec`, its stdout and stderr appended to `spec.output_log`."""
        ...

    def kill_leftovers(self, timeout_s: float) -> int:
        """End every process a previous life of this agent started; returns how many."""
        ...


class LocalProcessHandle:
    """A process tree started by `LocalProcessRuntime`."""

    def __init__(self, process: subprocess.Popen[bytes], marker: str) -> None:
        self._process = process
        self._marker = marker
        self._seen: dict[int, float] = {}  # pid -> create_time, so a reused pid is not killed
        self.track()

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self) -> int | None:
        return self._process.poll()

    def track(self) -> None:
        for proc in _descendants_of([self.pid, *self._seen]):
            with contextlib.suppress(psutil.Error):
                self._seen.setdefault(proc.pid, proc.create_time())

    def members(self) -> list[psutil.Process]:
        """Every live process of the tree: descendants, remembered ones, and marked orphans."""
        self.track()
        found: dict[int, psutil.Process] = {}
        for pid, created in self._seen.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    found[pid] = proc
        for proc in _marked_processes(TREE_MARKER_ENV, self._marker):
            found.setdefault(proc.pid, proc)
        found.pop(os.getpid(), None)  # never the agent itself
        return list(found.values())

    def kill_tree(self, timeout_s: float) -> int | None:
        _terminate(self.members(), timeout_s)
        try:
            return self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None


class LocalProcessRuntime:
    """Runs each spec as a local process in its own session (no container).

    `owner` (the agent id) is stamped on every process so `kill_leftovers` finds them later.
    `memory_limit_mb` caps what each process may allocate (see `limit_memory`).
    """

    def __init__(self, owner: str, memory_limit_mb: int | None = None) -> None:
        self._owner = owner
        self._memory_limit_mb = memory_limit_mb

    def start(self, spec: ProcessSpec) -> LocalProcessHandle:
        marker = uuid.uuid4().hex
        env = {**spec.env, TREE_MARKER_ENV: marker, OWNER_MARKER_ENV: self._owner}
        process = spawn(spec.argv, spec.output_log, env=env, cwd=spec.cwd)
        if self._memory_limit_mb is not None:
            limit_memory(process.pid, self._memory_limit_mb)
        return LocalProcessHandle(process, marker)

    def kill_leftovers(self, timeout_s: float) -> int:
        own = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
        leftovers = [
            p for p in _marked_processes(OWNER_MARKER_ENV, self._owner) if p.pid not in own
        ]
        _terminate(leftovers, timeout_s)
        return len(leftovers)


def limit_memory(pid: int, limit_mb: int) -> None:
    """Cap what the process, and every process it starts later, may allocate.

    RLIMIT_DATA (heap and private writable mappings), not RLIMIT_AS: torch and CUDA reserve
    large address ranges they never touch, and shared libraries map hundreds of MB of code;
    RLIMIT_AS would count both. Past the limit an allocation fails (MemoryError, torch's
    "can't allocate memory"), so the user's code reports it instead of the host's OOM killer
    taking something else. Set on the running process rather than in a `preexec_fn` (unsafe
    in a threaded agent): it starts NVFlare's job process, where the user's code runs, seconds
    later, and a child inherits its parent's limits.
    """
    limit = limit_mb * 1024 * 1024
    with contextlib.suppress(ProcessLookupError):  # exited already: its exit is reported
        resource.prlimit(pid, resource.RLIMIT_DATA, (limit, limit))


def _terminate(processes: list[psutil.Process], timeout_s: float) -> None:
    """SIGTERM all, then SIGKILL whatever is still alive after `timeout_s`."""
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout_s)


def _descendants_of(pids: list[int]) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            found += [root, *root.children(recursive=True)]
    return found


def _marked_processes(env_name: str, value: str) -> list[psutil.Process]:
    """Processes whose environment has `env_name=value` (readable for our own user only)."""
    uid = os.getuid()
    marked = []
    for proc in psutil.process_iter(["uids"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            if proc.environ().get(env_name) == value:
                marked.append(proc)
        except psutil.Error:
            continue
    return marked
