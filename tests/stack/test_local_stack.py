"""`rondo up / status / down / up` run as a newcomer runs them: the real command, the real
servers and services, real processes."""

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from botocore.exceptions import ClientError

from rondo.contracts.storage import make_s3_client
from rondo.stack.ports import port_is_free
from rondo.stack.processes import process_tree, processes_marked
from rondo.stack.services import STACK_ID_ENV
from rondo.stack.state import StackState, load_state

RONDO = str(Path(sys.executable).parent / "rondo")
UP_BUDGET_S = 60


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    for name in ("RONDO_URL", "RONDO_API_KEY"):
        env.pop(name, None)
    return env


def rondo(env: dict[str, str], *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RONDO, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def stack_processes(state: StackState) -> dict[int, psutil.Process]:
    """Every process of the stack now: the recorded trees and whatever carries its marks."""
    procs = [proc for record in state.processes.values() for proc in process_tree(record.pid)]
    procs += processes_marked(STACK_ID_ENV, state.stack_id, state.data_dir)
    return {proc.pid: proc for proc in procs}


def leave_nvflare_like_processes(state: StackState) -> list[subprocess.Popen[bytes]]:
    """What NVFlare can leave outside an agent's process tree: processes in sessions of their
    own, one with the stack's environment, one with a cleaned environment that names the
    agent's work dir on its command line."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    work_dir = str(state.data_dir / "agents" / state.agents[0].agent_id / "runs")
    stack_env = {**os.environ, STACK_ID_ENV: state.stack_id}
    cleaned_env = {"PATH": os.environ.get("PATH", "")}
    return [
        subprocess.Popen(sleeper, env=stack_env, start_new_session=True),
        subprocess.Popen([*sleeper, work_dir], env=cleaned_env, start_new_session=True),
    ]


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.timeout(240)
def test_up_status_down_up_keeps_identity(tmp_path: Path, cli_env: dict[str, str]) -> None:
    data_dir = tmp_path / "stack"
    up_args = ["up", "--workers", "1", "--data-dir", str(data_dir)]
    try:
        started = time.monotonic()
        first = rondo(cli_env, *up_args)
        up_seconds = time.monotonic() - started
        assert first.returncode == 0, first.stdout + first.stderr
        print(f"rondo up (first start): {up_seconds:.1f} s\n{first.stdout}")
        assert up_seconds < UP_BUDGET_S

        status = rondo(cli_env, "status", "--json", "--data-dir", str(data_dir))
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        names = {part["name"] for part in report["parts"]}
        assert names == {
            "nats", "seaweedfs", "gateway", "scheduler", "artifacts", "worker-agent-local-0"
        }  # fmt: skip
        assert all(part["healthy"] and part["rss_bytes"] > 0 for part in report["parts"])
        print(f"idle memory of the stack: {report['rss_bytes'] / 2**20:.0f} MiB")

        state = load_state(data_dir)
        assert state is not None and state.user.user_id
        for secret_file in (data_dir / "stack.json", data_dir / "s3.json"):
            assert mode_of(secret_file) == 0o600
        profile_file = tmp_path / "config" / "rondo" / "profile.json"
        assert mode_of(profile_file) == 0o600
        assert json.loads(profile_file.read_text()) == {
            "url": state.gateway_url,
            "api_key": state.user.api_key,
        }
        assert state.s3_user is not None and state.s3_user.buckets == [state.user.bucket]
        assert state.user.api_key in first.stdout and state.s3_user.secret_key in first.stdout

        user_s3 = make_s3_client(
            state.s3_endpoint, state.s3_user.access_key, state.s3_user.secret_key
        )
        user_s3.put_object(Bucket=state.user.bucket, Key="hello.txt", Body=b"hi")
        with pytest.raises(ClientError):
            user_s3.put_object(Bucket=state.platform_bucket, Key="hello.txt", Body=b"hi")

        databases = {
            service: Path(url.removeprefix("sqlite:///"))
            for service, url in state.databases.items()
        }
        inodes = {service: path.stat().st_ino for service, path in databases.items()}
        leftovers = leave_nvflare_like_processes(state)
        processes = stack_processes(state)
        assert {leftover.pid for leftover in leftovers} <= set(processes)

        stopped = rondo(cli_env, "down", "--data-dir", str(data_dir))
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert [pid for pid, proc in processes.items() if alive(proc)] == []
        assert all(leftover.wait(timeout=5) < 0 for leftover in leftovers)  # killed by a signal
        assert stack_processes(state) == {}
        assert [p for p in state.recorded_ports() if not port_is_free(p, state.host)] == []

        again = rondo(cli_env, *up_args)
        assert again.returncode == 0, again.stdout + again.stderr
        restarted = load_state(data_dir)
        assert restarted is not None
        assert restarted.user == state.user  # same bucket, API key and user id
        assert restarted.s3_admin == state.s3_admin
        assert restarted.s3_user == state.s3_user
        assert restarted.databases == state.databases
        assert restarted.ports == state.ports  # they were free again
        assert {service: path.stat().st_ino for service, path in databases.items()} == inodes
        kept = user_s3.get_object(Bucket=state.user.bucket, Key="hello.txt")["Body"].read()
        assert kept == b"hi"
    finally:
        rondo(cli_env, "down", "--data-dir", str(data_dir))
