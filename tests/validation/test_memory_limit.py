"""`RONDO_AGENT_MEMORY_LIMIT_MB` on the process runtime: a process and what it starts later
cannot allocate past the limit, and fail with a MemoryError the user's code can see."""

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rondo.worker_agent.flare_runs import ProcessSpec
from rondo.worker_agent.runtime import LocalProcessRuntime
from rondo.worker_agent.sandbox import SandboxUser, can_switch_users

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


# A sandboxed process runs as another uid: the limit must not need privileges over it (root
# in a container may lack CAP_SYS_RESOURCE).
SANDBOX_UID = 2_000_099_000


@pytest.mark.parametrize("sandboxed", [False, True], ids=["own-user", "sandbox-uid"])
def test_the_limit_reaches_the_processes_a_process_starts(tmp_path: Path, sandboxed: bool) -> None:
    if sandboxed and not can_switch_users():
        pytest.skip("only root can start processes as a sandbox uid")
    output_log = tmp_path / "output.log"
    output_log.touch()
    os.chmod(tmp_path, 0o777)  # the sandbox uid writes nothing here but needs to enter it
    spec = ProcessSpec(
        argv=[sys.executable, "-c", STARTS_A_HUNGRY_CHILD],
        cwd=tmp_path,
        env=dict(os.environ),
        log_files=[output_log],
        output_log=output_log,
        user=SandboxUser(SANDBOX_UID, SANDBOX_UID) if sandboxed else None,
    )
    runtime = LocalProcessRuntime(owner="test-memory-limit", memory_limit_mb=LIMIT_MB)

    handle = runtime.start(spec)
    deadline = time.monotonic() + 30
    while (exit_code := handle.poll()) is None:
        assert time.monotonic() < deadline, "the process did not end"
        time.sleep(0.05)

    output = output_log.read_text()
    assert exit_code == 1, output
    limit = LIMIT_MB * 1024 * 1024
    assert f"({limit}, {limit})" in output
    assert "MemoryError" in output
