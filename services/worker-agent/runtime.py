"""Where NVFlare processes run: a small `Runtime` protocol and the local process runtime.

NVFlare starts each job's worker processes in a NEW session, and a parent's death re-parents
them to init, so following parent pids from the root is not enough to find them all later.
The local runtime therefore (1) stamps every process it starts with a unique environment
variable, which every descendant inherits, and (2) remembers every descendant it has seen.
Stopping kills the union: the whole tree, orphans included. A process started as a sandbox uid
(`ProcessSpec.user`) may clear its children's environment, so every process running as that uid
is a member of its tree too (the uid is lent to this one process only).
"""

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from typing import Protocol

import psutil

from rondo.stack.processes import spawn
from rondo.worker_agent.flare_runs import ProcessSpec
from rondo.worker_agent.sandbox import processes_of

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

    def __init__(
        self, process: subprocess.Popen[bytes], marker: str, uid: int | None = None
    ) -> None:
        self._process = process
        self._marker = marker
        self._uid = uid  # the tree's own sandbox uid: every process of it is a member
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
        if self._uid is not None:
            uid = self._uid
            for proc in processes_of(lambda candidate: candidate == uid):
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
    `memory_limit_mb` caps what each process may allocate (see `with_memory_limit`).
    """

    def __init__(self, owner: str, memory_limit_mb: int | None = None) -> None:
        self._owner = owner
        self._memory_limit_mb = memory_limit_mb

    def start(self, spec: ProcessSpec) -> LocalProcessHandle:
        marker = uuid.uuid4().hex
        env = {**spec.env, TREE_MARKER_ENV: marker, OWNER_MARKER_ENV: self._owner}
        user = (spec.user.uid, spec.user.gid) if spec.user is not None else None
        argv = spec.argv
        if self._memory_limit_mb is not None:
            argv = with_memory_limit(argv, self._memory_limit_mb)
        process = spawn(argv, spec.output_log, env=env, cwd=spec.cwd, user=user)
        return LocalProcessHandle(process, marker, spec.user.uid if spec.user else None)

    def kill_leftovers(self, timeout_s: float) -> int:
        own = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
        leftovers = [
            p for p in _marked_processes(OWNER_MARKER_ENV, self._owner) if p.pid not in own
        ]
        _terminate(leftovers, timeout_s)
        return len(leftovers)


# Sets the limit on itself, then becomes the command (same pid): lowering one's own limit
# needs no privilege, while setting another process's does (CAP_SYS_RESOURCE, which root
# lacks in some containers, or the same uid, which a sandboxed process no longer has).
_LIMIT_THEN_EXEC = (
    "import os, resource, sys; limit = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_DATA, (limit, limit)); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)


def with_memory_limit(argv: list[str], limit_mb: int) -> list[str]:
    """`argv` run under a cap on what the process, and every process it starts later, may
    allocate.

    RLIMIT_DATA (heap and private writable mappings), not RLIMIT_AS: torch and CUDA reserve
    large address ranges they never touch, and shared libraries map hundreds of MB of code;
    RLIMIT_AS would count both. Past the limit an allocation fails (MemoryError, torch's
    "can't allocate memory"), so the user's code reports it instead of the host's OOM killer
    taking something else. Set by a small launcher in the new process rather than in a
    `preexec_fn` (unsafe in a threaded agent); NVFlare's job process, where the user's code
    runs, inherits it.
    """
    limit = limit_mb * 1024 * 1024
    return [sys.executable, "-I", "-c", _LIMIT_THEN_EXEC, str(limit), *argv]


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
    """Processes whose environment has `env_name=value`: among our own user's, or every
    user's when we are root (processes started as sandbox uids; root reads any environ)."""
    uid = os.getuid()
    marked = []
    for proc in psutil.process_iter(["uids"]):
        try:
            if proc.info["uids"] is None or (uid != 0 and proc.info["uids"].real != uid):
                continue
            if proc.environ().get(env_name) == value:
                marked.append(proc)
        except psutil.Error:
            continue
    return marked
