"""The process runtime ends whole trees, including orphans NVFlare-style in new sessions."""

import os
import sys
import textwrap
import time
from pathlib import Path

import psutil

from rondo.worker_agent.flare_runs import ProcessSpec
from rondo.worker_agent.runtime import LocalProcessRuntime

# Starts a grandchild in a new session, records its pid, then exits: the grandchild is
# re-parented to init, out of reach of any parent-pid walk from the root.
ORPHANING_ROOT = textwrap.dedent(
    """
    import pathlib, subprocess, sys
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )
    pathlib.Path("orphan.pid").write_text(str(child.pid))
    """
)


def spec(tmp_path: Path, code: str) -> ProcessSpec:
    output_log = tmp_path / "output.log"
    return ProcessSpec(
        argv=[sys.executable, "-c", code],
        cwd=tmp_path,
        env=dict(os.environ),
        log_files=[output_log],
        output_log=output_log,
    )


def wait_for_file(path: Path, timeout_s: float = 10) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_orphans_in_new_sessions_are_killed_with_their_tree(tmp_path: Path) -> None:
    handle = LocalProcessRuntime(owner="test-runtime").start(spec(tmp_path, ORPHANING_ROOT))
    orphan = int(wait_for_file(tmp_path / "orphan.pid"))
    deadline = time.monotonic() + 10
    while handle.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert handle.poll() == 0 and alive(orphan)

    handle.kill_tree(timeout_s=5)
    assert not alive(orphan)


def test_leftovers_of_a_previous_agent_life_are_ended(tmp_path: Path) -> None:
    owner = f"test-leftovers-{os.getpid()}"
    (tmp_path / "mine").mkdir()
    (tmp_path / "other").mkdir()
    LocalProcessRuntime(owner=owner).start(spec(tmp_path / "mine", "import time; time.sleep(600)"))
    other = LocalProcessRuntime(owner="someone-else").start(
        spec(tmp_path / "other", "import time; time.sleep(600)")
    )
    try:
        assert LocalProcessRuntime(owner=owner).kill_leftovers(timeout_s=5) == 1
        assert alive(other.pid), "another agent's processes are left alone"
    finally:
        other.kill_tree(timeout_s=5)
