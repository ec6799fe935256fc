"""Running user code as an unprivileged uid: which uid, which environment, which folders.

Every NVFlare process that imports a job's `model_def.py` (the FL server and each client) is
hostile. On a host where the agent can switch users (it runs as root), each such process runs
as its own uid claimed from the agent's range (`RONDO_AGENT_SANDBOX_UIDS`), with a group of the
same number and no supplementary groups. Those ids need no /etc/passwd entry. The kernel then
keeps it out of other processes' `/proc/<pid>/environ`, and file modes keep it out of the data
dir, other runs' folders and the interpreter's site-packages:

    <work_root>, runs/, runs/<job>/, runs/<job>/<run>/   root 0711: traverse, never list
    <run>/job_files/, <process>/admin_kit/              root 0700
    <process>/                                           root:<gid> 0710
    <process>/{kit,data,spool,out_spool,home,           <uid>:<gid> 0700 (the process writes;
               work/model_out}                           hosted apps write under data/)
    <process>/initial_checkpoint.pt                      root:<gid> 0640 (reads only)

Where it cannot switch users, user code runs as the agent's own user only if the operator said
so (`RONDO_AGENT_TRUST_USER_CODE=1`, `rondo up --trust-user-code`); otherwise every run is
refused with `SandboxRefused`, whose message is shown to the job's owner.
"""

import contextlib
import getpass
import logging
import os
import shutil
import signal
import stat
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

# What a sandboxed process may inherit from the agent's environment: host settings that are
# not secrets. Everything else (RONDO_*, AWS_*, credentials, database URLs) is dropped.
INHERITED_VARIABLES = frozenset(
    {"PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "LANG", "LC_ALL", "LC_CTYPE", "TZ"}
    | {"LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH"}
)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# Folders every user may write to: what a released uid left there is deleted.
SHARED_SCRATCH_DIRS = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))
PROBE_TIMEOUT_S = 60.0


class SandboxRefused(Exception):
    """This agent will not run the job's code (message written for the job's owner)."""


class SandboxMode(StrEnum):
    SANDBOXED = "sandboxed"  # each process as its own uid
    TRUSTED = "trusted"  # as the agent's own user: the operator trusts every job
    REFUSED = "refused"  # cannot switch users and not trusted: no run starts


@dataclass(frozen=True)
class SandboxUser:
    """The uid (and gid of the same number) one NVFlare process runs as."""

    uid: int
    gid: int

    @property
    def name(self) -> str:
        """USER / LOGNAME (getpass and torch read them; the uid has no passwd entry)."""
        return f"rondo-{self.uid}"


def can_switch_users() -> bool:
    """Whether this process may start children as other uids (root on a POSIX host)."""
    return hasattr(os, "setuid") and os.geteuid() == 0


def sandbox_mode(trust_user_code: bool) -> SandboxMode:
    """Trusting user code turns the sandbox off; otherwise sandbox where possible, else refuse."""
    if trust_user_code:
        return SandboxMode.TRUSTED
    return SandboxMode.SANDBOXED if can_switch_users() else SandboxMode.REFUSED


def closed_folders(*paths: Path) -> list[Path]:
    """Folders above (or at) `paths` that other users cannot pass through (no o+x): a sandbox
    uid cannot reach anything below them (the agent's probe then refuses every run)."""
    closed: list[Path] = []
    for path in paths:
        for folder in [*reversed(path.resolve().parents), path.resolve()]:
            with contextlib.suppress(OSError):
                if folder.is_dir() and not folder.stat().st_mode & stat.S_IXOTH:
                    closed.append(folder)
                    break
    return list(dict.fromkeys(closed))


def process_env(
    job_variables: dict[str, str], home: Path, user: SandboxUser | None
) -> dict[str, str]:
    """The complete environment of an NVFlare process: allowlisted host settings, a private
    HOME and TMPDIR, the user's names, and the job-scoped variables (spool dirs, data root...).
    Never the agent's settings: no RONDO_* but the job's own, no S3 or NATS credentials."""
    env = {name: value for name, value in os.environ.items() if name in INHERITED_VARIABLES}
    env.setdefault("PATH", DEFAULT_PATH)
    name = user.name if user is not None else _own_user_name()
    env.update(HOME=str(home), TMPDIR=str(home / "tmp"), USER=name, LOGNAME=name)
    env.update(job_variables)
    return env


def _own_user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


class UidPool:
    """The agent's uids (inclusive range), each lent to one process at a time."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self._free = list(range(first, last + 1))
        self._lock = threading.Lock()

    def __contains__(self, uid: int) -> bool:
        return self.first <= uid <= self.last

    def claim(self) -> SandboxUser:
        with self._lock:
            if not self._free:
                raise SandboxRefused(
                    f"this worker has no free sandbox uid ({self.first}-{self.last} all in use)"
                )
            uid = self._free.pop(0)
        return SandboxUser(uid=uid, gid=uid)

    def release(self, user: SandboxUser) -> None:
        with self._lock:
            if user.uid in self and user.uid not in self._free:
                self._free.append(user.uid)


class Sandbox:
    """The agent's sandbox: its mode, its uids, and what a run needs before it starts."""

    def __init__(self, mode: SandboxMode, uids: tuple[int, int]) -> None:
        self.mode = mode
        self.pool = UidPool(*uids)
        self._unusable: str | None = None  # why sandboxed runs cannot start here (probe)

    def describe(self) -> str:
        if self.mode == SandboxMode.SANDBOXED:
            return f"sandboxed: user code runs as uids {self.pool.first}-{self.pool.last}"
        if self.mode == SandboxMode.TRUSTED:
            return f"trusted: user code runs as this agent's user ({_own_user_name()})"
        return "refusing runs: cannot switch users and --trust-user-code was not given"

    def probe(self, python: str, work_root: Path) -> None:
        """Check once, as a sandbox uid, that the interpreter runs and the work dir is
        reachable (every folder above it must let others traverse it). A failure is kept and
        every run is refused with it: never fall back to running unsandboxed."""
        if self.mode != SandboxMode.SANDBOXED:
            return
        user = self.pool.claim()
        try:
            result = subprocess.run(
                [python, "-I", "-c", "import os, sys; os.stat(sys.argv[1])", str(work_root)],
                user=user.uid,
                group=user.gid,
                extra_groups=[],
                env={"PATH": DEFAULT_PATH, "HOME": "/"},
                cwd="/",
                capture_output=True,
                timeout=PROBE_TIMEOUT_S,
                check=False,
            )
            if result.returncode != 0:
                detail = result.stderr.decode(errors="replace").strip().splitlines()[-1:]
                self._unusable = (
                    f"this worker cannot run user code sandboxed: uid {user.uid} cannot run "
                    f"{python} or reach {work_root} ({' '.join(detail) or 'no output'}); "
                    "every folder above them must be traversable by other users (o+x)"
                )
        except (OSError, subprocess.SubprocessError) as error:
            self._unusable = f"this worker cannot start sandboxed processes: {error}"
        finally:
            self.release(user)
        if self._unusable:
            logger.error("%s", self._unusable)

    def claim(self) -> SandboxUser | None:
        """The uid for one new process (None: run as the agent's user, trusted mode).
        Raises SandboxRefused when this agent must not run user code."""
        if self.mode == SandboxMode.TRUSTED:
            return None
        if self.mode == SandboxMode.REFUSED:
            raise SandboxRefused(
                "this worker cannot run user code as a separate user (it is not root) and its "
                "operator did not allow running it as the worker's own user "
                "(rondo up --trust-user-code / RONDO_AGENT_TRUST_USER_CODE=1)"
            )
        if self._unusable:
            raise SandboxRefused(self._unusable)
        return self.pool.claim()

    def release(self, user: SandboxUser | None) -> None:
        """Kill whatever still runs as the uid, delete what it left in shared scratch folders,
        and lend it again."""
        if user is None:
            return
        end_processes(lambda uid: uid == user.uid, timeout_s=5.0)
        remove_scratch_of(user.uid)
        self.pool.release(user)

    def end_leftovers(self) -> int:
        """End every process running as one of this agent's uids (a previous life's)."""
        if self.mode != SandboxMode.SANDBOXED:
            return 0
        return end_processes(lambda uid: uid in self.pool, timeout_s=5.0)


# --- processes ------------------------------------------------------------------------------


def processes_of(owned: Callable[[int], bool]) -> list[psutil.Process]:
    """Live processes whose real or effective uid `owned` accepts."""
    found = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if uids is not None and (owned(uids.real) or owned(uids.effective)):
            found.append(proc)
    return found


def end_processes(owned: Callable[[int], bool], timeout_s: float) -> int:
    """SIGKILL every process of the uids `owned` accepts, until none is left (a process of a
    hostile uid may fork while being killed). Returns how many were killed."""
    killed = 0
    for _ in range(20):
        procs = [p for p in processes_of(owned) if p.pid != os.getpid()]
        if not procs:
            break
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        killed += len(procs)
        psutil.wait_procs(procs, timeout=timeout_s)
    return killed


def remove_scratch_of(uid: int, dirs: tuple[Path, ...] = SHARED_SCRATCH_DIRS) -> None:
    """Delete the top-level entries of shared scratch folders owned by `uid`, so the next job
    lent this uid finds nothing of the last one."""
    for folder in dirs:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)


# --- folders --------------------------------------------------------------------------------


def make_traversable(*folders: Path) -> None:
    """Create each folder, owned by the agent, mode 0711: others pass through, never list."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o711)


def make_private_to_agent(*paths: Path) -> None:
    """Only the agent reads these (the admin kit, job files): 0700 folders, 0600 files."""
    for path in paths:
        if path.exists():
            _chown_tree(path, os.geteuid(), os.getegid(), dir_mode=0o700, file_mode=0o600)


def lock_down(
    process_folder: Path,
    user: SandboxUser,
    *,
    private: list[Path],
    readable: list[Path],
    passable: Sequence[Path] = (),
) -> None:
    """Give one process's folder to its uid before it starts.

    `private` trees become the uid's own (0700; it writes there). `readable` trees stay the
    agent's, group `gid`, read-only (0750 folders, 0640 files). The process folder and
    `passable` folders are root:gid 0710: the uid reaches what is inside, lists nothing, and
    cannot swap the agent's files (ledgers, logs) for links. Anything else in the process
    folder is the agent's alone. Symbolic links are never followed."""
    root_uid = os.geteuid()
    os.chown(process_folder, root_uid, user.gid)
    os.chmod(process_folder, 0o710)
    for folder in passable:
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, root_uid, user.gid)
        os.chmod(folder, 0o710)
    for path in readable:
        if path.exists():
            _chown_tree(path, root_uid, user.gid, dir_mode=0o750, file_mode=0o640)
    for path in private:
        path.mkdir(parents=True, exist_ok=True)
        _chown_tree(path, user.uid, user.gid, dir_mode=0o700, file_mode=None)


def _chown_tree(top: Path, uid: int, gid: int, *, dir_mode: int, file_mode: int | None) -> None:
    """chown (and chmod) `top` and everything below it, links included but never followed.
    `file_mode` None: keep each file's owner bits, clear group and other bits."""

    def fix(path: str, is_dir: bool) -> None:
        os.lchown(path, uid, gid)
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return
        if is_dir:
            os.chmod(path, dir_mode)
        elif file_mode is not None:
            os.chmod(path, file_mode)
        else:
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)

    fix(str(top), top.is_dir() and not top.is_symlink())
    if top.is_symlink() or not top.is_dir():
        return
    for folder, dirs, files in os.walk(top, followlinks=False):
        for name in dirs:
            fix(os.path.join(folder, name), not os.path.islink(os.path.join(folder, name)))
        for name in files:
            fix(os.path.join(folder, name), False)
