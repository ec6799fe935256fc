"""Per-job Python environments for `requirements/requirements.txt`, cached by its sha256.

An empty (or absent) requirements file runs on the agent's own interpreter: no env at all.
Otherwise a venv is built once per distinct file content. A `.pth` file in its site-packages
puts the base interpreter's site-packages on the path, so torch and nvflare count as installed
and pip never downloads or reinstalls them; only what is missing goes into the job's env.

pip runs code of the job's choosing (a package's build scripts): given a `Sandbox`, each build
runs as a sandbox uid of its own with a clean environment (no agent settings or credentials),
in an env folder that uid owns; once pip is done, every process of that uid is ended and the
env becomes the agent's, readable by all and writable by no other uid (group and other write
bits cleared). Its pip log is the agent's alone (0600). The cache folder is created 0711 by
the agent: passable, not listable, not writable.
"""

import asyncio
import hashlib
import logging
import os
import shutil
import site
import stat
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rondo.worker_agent.sandbox import Sandbox, SandboxUser, end_processes, process_env

logger = logging.getLogger(__name__)

READY_MARKER = ".rondo-ready"
BASE_PATH_FILE = "rondo-base-site-packages.pth"
PIP_LOG_NAME = "pip.log"
PIP_VARIABLE_PREFIX = "PIP_"
PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "no_proxy"})
ERROR_TAIL_LINES = 20


class RequirementsError(Exception):
    """Installing the job's requirements failed or timed out; the message carries pip's tail."""


@dataclass(frozen=True)
class JobPython:
    """The interpreter a job's processes run on."""

    python: str
    requirements_sha256: str | None  # None: the base interpreter (no requirements)
    reused: bool  # True when an env built earlier was used as is


def meaningful_lines(text: str) -> list[str]:
    """Requirement lines without blanks and comments."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def base_site_packages() -> list[str]:
    """Where the agent's interpreter finds its packages (torch, nvflare, ...)."""
    paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    paths += [p for p in site.getsitepackages() if p not in paths]
    return list(dict.fromkeys(paths))


class RequirementsEnvs:
    """Builds and caches the job envs under `cache_dir/<sha256>`.

    One build per hash at a time: concurrent requests for the same file wait for the first.
    A half-built env (agent killed mid-install) has no ready marker and is rebuilt.
    """

    def __init__(
        self,
        cache_dir: Path,
        timeout_s: float,
        base_python: str = sys.executable,
        sandbox: Sandbox | None = None,
    ) -> None:
        self._cache_dir = cache_dir
        self._timeout_s = timeout_s
        self._base_python = base_python
        self._sandbox = sandbox
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def base_python(self) -> str:
        """The interpreter of jobs without requirements (and the base of every env)."""
        return self._base_python

    async def python_for(self, requirements_file: Path | None) -> JobPython:
        """The interpreter for a job with this requirements file (may be None or missing).

        Raises RequirementsError when pip fails or runs longer than the timeout.
        """
        content = b""
        if requirements_file is not None and requirements_file.is_file():
            content = requirements_file.read_bytes()
        if not meaningful_lines(content.decode("utf-8", errors="replace")):
            return JobPython(self._base_python, None, reused=True)
        digest = hashlib.sha256(content).hexdigest()
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            env_dir = self._cache_dir / digest
            python = env_dir / "bin" / "python"
            if (env_dir / READY_MARKER).exists():
                return JobPython(str(python), digest, reused=True)
            await self._build(env_dir, content)
            return JobPython(str(python), digest, reused=False)

    async def _build(self, env_dir: Path, requirements: bytes) -> None:
        """Build as a sandbox uid of its own (see the module's docstring), or as the agent."""
        builder = self._sandbox.claim() if self._sandbox is not None else None
        home = env_dir.parent / f".{env_dir.name}.home"
        try:
            await self._build_as(env_dir, requirements, builder, home)
        finally:
            if builder is not None:
                await asyncio.to_thread(end_processes, lambda uid: uid == builder.uid, 5.0)
            if env_dir.exists():
                await asyncio.to_thread(_give_to_agent, env_dir)
            await asyncio.to_thread(shutil.rmtree, home, True)
            if self._sandbox is not None:
                await asyncio.to_thread(self._sandbox.release, builder)

    async def _build_as(
        self, env_dir: Path, requirements: bytes, builder: SandboxUser | None, home: Path
    ) -> None:
        if env_dir.exists():
            shutil.rmtree(env_dir)
        env_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(home, ignore_errors=True)
        for folder in (env_dir, home, home / "tmp"):
            folder.mkdir(mode=0o700)
            if builder is not None:
                os.chown(folder, builder.uid, builder.gid)
        env = _build_env(home, builder)
        # No pip inside the env: the base's pip is reachable through the .pth file.
        await self._run(
            [self._base_python, "-m", "venv", "--without-pip", str(env_dir)], env_dir, env, builder
        )
        self._link_base_packages(env_dir)
        requirements_path = env_dir / "requirements.txt"
        requirements_path.write_bytes(requirements)
        await self._run(
            [
                str(env_dir / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "-r",
                str(requirements_path),
            ],
            env_dir,
            env,
            builder,
        )
        if builder is not None:  # nothing of the build may keep writing into the env
            await asyncio.to_thread(end_processes, lambda uid: uid == builder.uid, 5.0)
        await asyncio.to_thread(_give_to_agent, env_dir)
        (env_dir / READY_MARKER).write_text("ok\n")

    def _link_base_packages(self, env_dir: Path) -> None:
        # `addsitedir`, not a bare path line: the base's own .pth files (editable installs of
        # rondo itself) must be processed too, and a bare path line would skip them.
        site_packages = _env_site_packages(env_dir)
        site_packages.mkdir(parents=True, exist_ok=True)
        lines = [f"import site; site.addsitedir({path!r})" for path in base_site_packages()]
        (site_packages / BASE_PATH_FILE).write_text("\n".join(lines) + "\n")

    async def _run(
        self, argv: list[str], env_dir: Path, env: dict[str, str], builder: SandboxUser | None
    ) -> None:
        """Run one build step (as `builder`, if given), its output appended to the env's
        pip.log."""
        identity: dict[str, Any] = {}
        if builder is not None:
            identity = {"user": builder.uid, "group": builder.gid, "extra_groups": []}
        log_path = env_dir.parent / f"{env_dir.name}.{PIP_LOG_NAME}"
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                cwd=env_dir,
                **identity,
            )
            try:
                code = await asyncio.wait_for(process.wait(), timeout=self._timeout_s)
            except asyncio.CancelledError:  # the run was stopped while installing
                process.kill()
                raise
            except TimeoutError:
                process.kill()
                await process.wait()
                raise RequirementsError(
                    f"installing requirements.txt took longer than {self._timeout_s:.0f} s"
                    f"{_tail(log_path)}"
                ) from None
        if code != 0:
            raise RequirementsError(
                f"installing requirements.txt failed (exit code {code}){_tail(log_path)}"
            )


def _build_env(home: Path, builder: SandboxUser | None) -> dict[str, str]:
    """pip's whole environment: the sandbox allowlist, plus the operator's pip and proxy
    settings (how job requirements are meant to be fetched)."""
    passed = {
        name: value
        for name, value in os.environ.items()
        if name.startswith(PIP_VARIABLE_PREFIX) or name.lower() in PROXY_VARIABLES
    }
    return process_env(passed, home, builder)


def _give_to_agent(env_dir: Path) -> None:
    """Make the agent own the env, and clear group and other write bits (links are not
    followed): readable by every job's uid, writable by none."""
    uid, gid = os.geteuid(), os.getegid()
    for folder, dirs, files in os.walk(env_dir, followlinks=False):
        for path in [folder, *(os.path.join(folder, name) for name in (*dirs, *files))]:
            os.lchown(path, uid, gid)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(path, stat.S_IMODE(mode) & ~0o022)
    os.chmod(env_dir, 0o755)  # made 0700 for the build


def _env_site_packages(env_dir: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return env_dir / "lib" / version / "site-packages"


def _tail(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()[-ERROR_TAIL_LINES:]
    return (":\n" + "\n".join(lines)) if lines else ""
