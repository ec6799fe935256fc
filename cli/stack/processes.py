"""Starting child processes in their own session and killing whole process trees."""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import psutil


def spawn(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: tuple[int, int] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a process in a new session, its output appended to `log_path` (opened by the
    caller's user). `user` (uid, gid): run it as that uid and gid, with no supplementary
    groups (the caller must be root; the ids need no passwd entry)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    identity: dict[str, object] = {}
    if user is not None:
        identity = {"user": user[0], "group": user[1], "extra_groups": []}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            **identity,  # type: ignore[arg-type]
        )


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and every descendant (NVFlare starts some in new sessions: follow ppids)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int, timeout_s: float = 5.0) -> None:
    """SIGTERM the whole tree, then SIGKILL whatever is still alive after `timeout_s`."""
    kill_trees([pid], timeout_s)


def kill_trees(pids: Iterable[int], timeout_s: float = 5.0) -> None:
    """`kill_tree` for several roots at once, with one shared grace period. Every tree is
    listed before the first signal, so children reparented when their parent dies still go."""
    tree = {proc.pid: proc for pid in pids for proc in process_tree(pid)}
    procs = list(tree.values())
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout_s)


def processes_marked(
    marker_name: str, marker_value: str, path_prefix: Path, env_prefix: str = "RONDO_"
) -> list[psutil.Process]:
    """What a stack started, even outside its process trees: every process whose environment
    has `marker_name=marker_value` (inherited by all descendants), and every process without a
    terminal whose command line, or an `env_prefix*` variable, names `path_prefix` (absolute)
    or a path under it (children started with a cleaned environment).

    Processes with a terminal (someone's shell in that folder) are matched by the marker only;
    the calling process and its ancestors never."""
    own = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
    folder = str(path_prefix.resolve())

    def names_folder(value: str) -> bool:
        return value == folder or value.startswith(folder + os.sep)

    found: list[psutil.Process] = []
    for proc in psutil.process_iter():
        if proc.pid in own:
            continue
        with contextlib.suppress(psutil.Error):
            environ = proc.environ()
            marked = environ.get(marker_name) == marker_value
            detached_in_folder = proc.terminal() is None and (
                any(names_folder(arg) for arg in proc.cmdline())
                or any(names_folder(v) for k, v in environ.items() if k.startswith(env_prefix))
            )
            if marked or detached_in_folder:
                found.append(proc)
    return found


def pid_alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(predicate, timeout_s: float, interval_s: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    """Poll `predicate` until it is truthy or `timeout_s` passes; returns the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def current_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    return env


def tree_rss(pid: int) -> int:
    """Resident memory of the process and all its descendants, in bytes."""
    total = 0
    for proc in process_tree(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total
