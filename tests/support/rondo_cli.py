"""Run the installed `rondo` command as a user would, from tests."""

import subprocess
import sys
from pathlib import Path

RONDO = Path(sys.executable).parent / "rondo"


def run_rondo(
    env: dict[str, str], *args: str | Path, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`rondo ARGS...` with `env`; returns its exit code and output, never raises on failure."""
    return subprocess.run(
        [str(RONDO), *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
