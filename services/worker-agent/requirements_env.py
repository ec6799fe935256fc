"""Per-job Python environments for `requirements/requirements.txt`, cached by its sha256.

An empty (or absent) requirements file runs on the agent's own interpreter: no env at all.
Otherwise a venv is built once per distinct file content. A `.pth` file in its site-packages
puts the base interpreter's site-packages on the path, so torch and nvflare count as installed
and pip never downloads or reinstalls them; only what is missing goes into the job's env.
"""

import asyncio
import hashlib
import logging
import shutil
import site
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

READY_MARKER = ".rondo-ready"
BASE_PATH_FILE = "rondo-base-site-packages.pth"
PIP_LOG_NAME = "pip.log"
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
        self, cache_dir: Path, timeout_s: float, base_python: str = sys.executable
    ) -> None:
        self._cache_dir = cache_dir
        self._timeout_s = timeout_s
        self._base_python = base_python
        self._locks: dict[str, asyncio.Lock] = {}

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
        if env_dir.exists():
            shutil.rmtree(env_dir)
        env_dir.parent.mkdir(parents=True, exist_ok=True)
        # No pip inside the env: the base's pip is reachable through the .pth file.
        await self._run([self._base_python, "-m", "venv", "--without-pip", str(env_dir)], env_dir)
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
        )
        (env_dir / READY_MARKER).write_text("ok\n")

    def _link_base_packages(self, env_dir: Path) -> None:
        # `addsitedir`, not a bare path line: the base's own .pth files (editable installs of
        # rondo itself) must be processed too, and a bare path line would skip them.
        site_packages = _env_site_packages(env_dir)
        site_packages.mkdir(parents=True, exist_ok=True)
        lines = [f"import site; site.addsitedir({path!r})" for path in base_site_packages()]
        (site_packages / BASE_PATH_FILE).write_text("\n".join(lines) + "\n")

    async def _run(self, argv: list[str], env_dir: Path) -> None:
        """Run one build step, its output appended to the env's pip.log."""
        log_path = env_dir.parent / f"{env_dir.name}.{PIP_LOG_NAME}"
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
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


def _env_site_packages(env_dir: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return env_dir / "lib" / version / "site-packages"


def _tail(log_path: Path) -> str:
    lines = log_path.read_text(errors="replace").splitlines()[-ERROR_TAIL_LINES:]
    return (":\n" + "\n".join(lines)) if lines else ""
