"""User code on the process runtime (local `rondo up`) reaches nothing but its own run folder.

A real stack (run as root, so workers sandbox) runs a hostile job (hostile_job/): its
`model_def.py` tries, at import on the FL server and while training on a client, to read other
processes' environ, the data dir's secrets, other runs' folders, its own environment's
platform variables, and to write into the interpreter's and the requirements envs' folders.
Every attempt must be refused. With the sandbox off (`RONDO_SANDBOX_TEST_TRUSTED=1` runs the
same test on a `--trust-user-code` stack) the test fails: that is how it was checked by hand.
"""

import json
import os
import secrets
import stat
import sys
import sysconfig
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support.platform import Platform, running_platform
from support.tiny_job import tiny_shard

from rondo.contracts.states import JobState
from rondo.stack.local import LocalStack
from rondo.worker_agent.flare_runs import ProcessSpec
from rondo.worker_agent.runtime import LocalProcessRuntime
from rondo.worker_agent.sandbox import (
    Sandbox,
    SandboxMode,
    SandboxRefused,
    SandboxUser,
    can_switch_users,
    closed_folders,
    lock_down,
)

HOSTILE_MODEL_DEF = Path(__file__).parent / "hostile_job" / "scripts" / "model_def.py"
MARKER = "SANDBOX_ATTEMPTS"
REFUSED = "refused: PermissionError"
TRUSTED = os.environ.get("RONDO_SANDBOX_TEST_TRUSTED") == "1"
# A uid outside every agent's range, owning a planted "other job's" run folder.
OTHER_TENANT = SandboxUser(uid=1_999_999_999, gid=1_999_999_999)

needs_root = pytest.mark.skipif(not can_switch_users(), reason="sandboxing needs root")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data_dir = tmp_path_factory.mktemp("sandbox-platform")
    if not TRUSTED:
        with running_platform(data_dir, workers=1) as platform:
            yield platform
        return
    stack = LocalStack(data_dir, trust_user_code=True)
    platform = Platform(stack=stack, state=stack.up(workers=1).state)
    try:
        yield platform
    finally:
        platform.api.close()
        stack.down()


def plant_other_run(platform: Platform) -> Path:
    """A run folder of another job on the same agent, as the agent leaves it for its uid."""
    work_root = platform.state.data_dir / "agents" / platform.state.agents[0].agent_id
    process = work_root / "runs" / "other-job" / "other-run" / "client_0"
    secret = process / "kit" / "startup" / "client.key"
    secret.parent.mkdir(parents=True)
    secret.write_text("-----BEGIN PRIVATE KEY----- of another tenant\n")
    for folder in (process.parent.parent, process.parent):
        os.chmod(folder, 0o711)
    lock_down(process, OTHER_TENANT, private=[process / "kit"], readable=[])
    return secret


@needs_root
@pytest.mark.timeout(400)
def test_hostile_model_def_is_refused_everything(platform: Platform) -> None:
    other_run_file = plant_other_run(platform)
    name = "hostile-" + secrets.token_hex(3)
    platform.upload_job(
        name,
        {
            "scripts/model_def.py": HOSTILE_MODEL_DEF,
            # Served by the agent's own packages (no download): builds a job env to attack.
            "requirements/requirements.txt": b"psutil\n",
            "shards/shard_0.zip": tiny_shard(1.0, samples=4),
        },
    )

    response = platform.submit(name, num_rounds=1, extra={"other_run_file": str(other_run_file)})
    assert response.status_code == 201, response.text
    job = platform.wait_for_state(response.json()["id"], timeout_s=300)
    assert job["state"] == JobState.FINISHED, job
    platform.wait_for_outputs(job["id"])

    client = json.loads(platform.read(f"jobs/{name}/files_out/client_0/round_0/attempts.json"))
    server_log = platform.read(f"jobs/{name}/files_out/server.log").decode()
    server_lines = [line for line in server_log.splitlines() if MARKER in line]
    assert server_lines, "the server did not import model_def.py (no attempts logged)"
    server = json.loads(server_lines[0].split(MARKER, 1)[1])

    for where, found in [
        ("server at import", server),
        ("client at import", client["at_import"]),
        ("client in training", client["in_training"]),
    ]:
        outcomes = {k: v for k, v in found.items() if k not in {"uid", "role"}}
        assert len(outcomes) >= 12, f"{where}: too few attempts ran: {sorted(outcomes)}"
        # Refused by the kernel, not missed: a wrong path (FileNotFoundError) fails too.
        allowed = {k: v for k, v in outcomes.items() if not v.startswith(REFUSED)}
        assert not allowed, f"{where}: {json.dumps(allowed, indent=2)}"
        assert found["uid"] != "0", f"{where}: user code ran as root"
    # Both the gateway and the agent were found, so their environ was really tried.
    tried = set(server) | set(client["in_training"])
    assert "read rondo.gateway's /proc environ" in tried
    assert "read rondo.worker_agent's /proc environ" in tried
    assert "read another job's run folder" in client["in_training"]


@needs_root
def test_data_dir_is_private_and_no_secret_is_on_a_command_line(platform: Platform) -> None:
    data_dir = platform.state.data_dir

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.lstat().st_mode)

    assert mode(data_dir) == 0o711
    assert mode(data_dir / "agents") == 0o711
    assert mode(data_dir / "stack.json") == 0o600
    for name in ("db", "logs", "nats", "seaweedfs", "spans"):
        assert mode(data_dir / name) == 0o700, name
    for entry in data_dir.iterdir():  # the secrets key file, s3.json, the services' folders
        if entry.name != "agents":
            assert mode(entry) & 0o077 == 0, f"{entry} is open to other users"

    # argv is world-readable (/proc/<pid>/cmdline): no secret of the stack may be in one.
    stack_secrets = [platform.state.s3_admin.secret_key, platform.state.user.api_key]
    if platform.state.s3_user is not None:
        stack_secrets.append(platform.state.s3_user.secret_key)
    for proc in platform.stack_processes():
        try:
            command = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        for secret in stack_secrets:
            assert secret not in command, f"a secret is on the command line of {proc.pid}"

    # The agent holds no platform S3 key (it works with presigned URLs).
    [agent] = [p for p in platform.state.processes if p.startswith("worker-agent")]
    environ = psutil.Process(platform.state.processes[agent].pid).environ()
    assert not [name for name in environ if name.startswith("RONDO_S3_")]


# An in-tree build backend (no download): pip runs it while installing the job's
# requirements. It tries what user code would, prints the outcomes and fails the build, so
# they come back in the job's error (pip's output tail).
HOSTILE_BACKEND = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    def attempt(action):
        try:
            return "allowed: " + str(action())
        except Exception as error:
            return f"refused: {type(error).__name__}"

    def proc_environ(module):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    command = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if module.encode() in command:
                    return len((entry / "environ").read_bytes())
        raise FileNotFoundError(module)

    def platform_variables():
        names = [n for n in os.environ if n.startswith(("RONDO_", "AWS_"))]
        if names:
            return names
        raise PermissionError("none")

    def write_into(folder):
        probe = Path(folder) / "build-probe.pth"
        probe.write_text("")
        probe.unlink()
        return folder

    def get_requires_for_build_wheel(config_settings=None):
        data_dir = Path(DATA_DIR)
        found = {
            "uid": os.getuid(),
            "read stack.json": attempt(lambda: len((data_dir / "stack.json").read_bytes())),
            "read the gateway's environ": attempt(lambda: proc_environ("rondo.gateway")),
            "read the agent's environ": attempt(lambda: proc_environ("rondo.worker_agent")),
            "platform variables": attempt(platform_variables),
            "write into the agent's site-packages": attempt(lambda: write_into(SITE_PACKAGES)),
        }
        print("BUILD_ATTEMPTS " + json.dumps(found), flush=True)
        sys.exit(1)
    """
)


def hostile_project(folder: Path, data_dir: Path) -> Path:
    """A package whose build backend is hostile (see HOSTILE_BACKEND)."""
    folder.mkdir()
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "hostile-build"\nversion = "0.1"\n'
        '[build-system]\nrequires = []\nbuild-backend = "hostile_backend"\n'
        'backend-path = ["."]\n'
    )
    constants = (
        f"DATA_DIR = {str(data_dir)!r}\nSITE_PACKAGES = {sysconfig.get_paths()['purelib']!r}\n"
    )
    (folder / "hostile_backend.py").write_text(constants + HOSTILE_BACKEND)
    for path in (folder, *folder.iterdir()):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return folder


@needs_root
@pytest.mark.timeout(300)
def test_a_hostile_requirement_build_is_refused_everything(
    platform: Platform, tmp_path: Path
) -> None:
    project = hostile_project(tmp_path / "hostile-build", platform.state.data_dir)
    name = "hostile-build-" + secrets.token_hex(3)
    platform.upload_job(
        name,
        {
            "scripts/model_def.py": HOSTILE_MODEL_DEF,
            "requirements/requirements.txt": f"hostile-build @ file://{project}\n".encode(),
            "shards/shard_0.zip": tiny_shard(1.0, samples=4),
        },
    )

    response = platform.submit(name, num_rounds=1)
    assert response.status_code == 201, response.text
    job = platform.wait_for_state(response.json()["id"], timeout_s=240)

    assert job["state"] == JobState.FAILED, job
    message = job["error"]["message"]
    lines = [line for line in message.splitlines() if "BUILD_ATTEMPTS" in line]
    assert lines, f"the build backend did not run: {message}"
    found = json.loads(lines[0].split("BUILD_ATTEMPTS", 1)[1])
    assert found.pop("uid") != 0, "pip ran the job's build code as root"
    assert len(found) == 5
    allowed = {k: v for k, v in found.items() if not v.startswith(REFUSED)}
    assert not allowed, json.dumps(allowed, indent=2)


ESCAPER = textwrap.dedent(
    """
    import subprocess, sys, time
    # After a second, an intermediate starts a grandchild in its own session with an empty
    # environment and exits: the grandchild is init's child, and no marker leads to it.
    time.sleep(1)
    spawner = (
        "import subprocess, sys; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], "
        "env={}, start_new_session=True); print(child.pid, flush=True)"
    )
    subprocess.run([sys.executable, "-c", spawner], check=True)
    time.sleep(600)
    """
)


@needs_root
def test_kill_reaches_processes_that_shed_their_marker(tmp_path: Path) -> None:
    user = SandboxUser(uid=1_999_999_998, gid=1_999_999_998)
    folder = tmp_path / "proc"
    folder.mkdir()
    os.chown(folder, user.uid, user.gid)
    log = folder / "out.log"
    spec = ProcessSpec(
        argv=[sys.executable, "-c", ESCAPER],
        cwd=folder,
        env={"PATH": os.environ["PATH"]},
        log_files=[log],
        output_log=log,
        user=user,
    )
    handle = LocalProcessRuntime(owner="test-" + secrets.token_hex(3)).start(spec)
    deadline = time.monotonic() + 30
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild = psutil.Process(int(log.read_text().split()[0]))
    assert grandchild.uids().real == user.uid

    handle.kill_tree(timeout_s=5)

    assert not psutil.pid_exists(grandchild.pid) or grandchild.status() == psutil.STATUS_ZOMBIE


def test_an_agent_that_cannot_switch_users_refuses_runs_unless_trusted() -> None:
    refusing = Sandbox(SandboxMode.REFUSED, (2_000_000_000, 2_000_000_063))
    with pytest.raises(SandboxRefused, match="--trust-user-code"):
        refusing.claim()
    assert Sandbox(SandboxMode.TRUSTED, (2_000_000_000, 2_000_000_063)).claim() is None


def test_folders_other_users_cannot_pass_are_named(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    data_dir = closed / "data"
    data_dir.mkdir(parents=True)
    os.chmod(closed, 0o700)

    assert closed_folders(data_dir) == [closed]
    os.chmod(closed, 0o711)
    assert closed_folders(data_dir) == []
