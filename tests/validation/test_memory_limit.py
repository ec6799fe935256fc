"""`RONDO_AGENT_MEMORY_LIMIT_MB` on the process runtime: a process and what it starts later
cannot allocate past the limit, and fail with a MemoryError the user's code can see."""

import os
import resource
import sys
import textwrap
import time
from pathlib import Path

from rondo.worker_agent.flare_runs import ProcessSpec
from rondo.worker_agent.runtime import LocalProcessRuntime

LIMIT_MB = 256

# Like an NVFlare client: after a while it starts the process that runs the user's code.
STARTS_A_HUNGRY_CHILD = textwrap.dedent(
    f"""
    import subprocess, sys, time
    time.sleep(0.5)
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_DATA)); "
    code += "ok = bytearray(64 * 1024 * 1024); hog = bytearray({2 * LIMIT_MB} * 1024 * 1024)"
    sys.exit(subprocess.run([sys.executable, "-c", code]).returncode)
    """
)


def test_the_limit_reaches_the_processes_a_process_starts(tmp_path: Path) -> None:
    output_log = tmp_path / "output.log"
    spec = ProcessSpec(
        argv=[sys.executable, "-c", STARTS_A_HUNGRY_CHILD],
        cwd=tmp_path,
        env=dict(os.environ),
        log_files=[output_log],
        output_log=output_log,
    )
    runtime = LocalProcessRuntime(owner="test-memory-limit", memory_limit_mb=LIMIT_MB)

    handle = runtime.start(spec)
    assert resource.prlimit(handle.pid, resource.RLIMIT_DATA)[0] == LIMIT_MB * 1024 * 1024
    deadline = time.monotonic() + 30
    while (exit_code := handle.poll()) is None:
        assert time.monotonic() < deadline, "the process did not end"
        time.sleep(0.05)

    output = output_log.read_text()
    assert exit_code == 1, output
    limit = LIMIT_MB * 1024 * 1024
    assert f"({limit}, {limit})" in output
    assert "MemoryError" in output
