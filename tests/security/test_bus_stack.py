"""A real `rondo up` stack runs its bus with identities: the server refuses a plain client,
holds only password hashes in a 0600 file, no process shows a password on its command line,
and the agent's own identity (from its environment, as the stack gave it) cannot forge a
cancel or read another agent's dispatches, while `rondo status` (the operator) still works."""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import psutil
import pytest
from nats.errors import Error as NatsError

from rondo.contracts.bus_permissions import agent_identity
from rondo.contracts.subjects import AGENTS_STREAM, agent_dispatch_subject
from rondo.stack.processes import process_tree
from rondo.stack.state import StackState, load_state

RONDO = str(Path(sys.executable).parent / "rondo")


def rondo(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(data_dir.parent / "config")}
    return subprocess.run(
        [RONDO, *args, "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    data_dir = tmp_path_factory.mktemp("bus-stack") / "stack"
    up = rondo(data_dir, "up", "--workers", "1")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = load_state(data_dir)
        assert state is not None
        yield state
    finally:
        rondo(data_dir, "down")


@pytest.mark.timeout(300)
def test_the_stack_bus_has_identities_and_hides_their_passwords(stack: StackState) -> None:
    config = stack.nats_auth_config_path
    assert config.stat().st_mode & 0o777 == 0o600
    text = config.read_text()
    assert set(stack.bus_passwords) == set(stack.bus_identities())
    assert not any(password in text for password in stack.bus_passwords.values())
    users = {user["user"] for user in json.loads(text)["authorization"]["users"]}
    assert users == set(stack.bus_identities())

    for record in stack.processes.values():
        for proc in process_tree(record.pid):
            try:
                cmdline = " ".join(proc.cmdline())
            except psutil.NoSuchProcess:
                continue
            assert not any(p in cmdline for p in stack.bus_passwords.values()), cmdline

    status = rondo(stack.data_dir, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["healthy"]


@pytest.mark.timeout(120)
async def test_a_plain_client_is_refused_by_the_stack(stack: StackState) -> None:
    with pytest.raises(NatsError, match=r"(?i)authorization violation"):
        await nats.connect(stack.nats_url, allow_reconnect=False, max_reconnect_attempts=0)


@pytest.mark.timeout(120)
async def test_the_agent_identity_cannot_cancel_or_spy(stack: StackState) -> None:
    agent_id = stack.agents[0].agent_id
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error).lower())

    client = await nats.connect(
        stack.nats_url,
        error_cb=on_error,
        allow_reconnect=False,
        **stack.nats_connect_options(agent_identity(agent_id)),
    )
    try:
        await client.publish("rondo.job.cancel_requested", b'{"job_id": "any"}')
        spy = f"$JS.API.CONSUMER.CREATE.{AGENTS_STREAM.name}.spy.{agent_dispatch_subject('x')}"
        with pytest.raises(Exception):  # noqa: B017 - refused: no answer comes
            await client.request(spy, b"{}", timeout=1.0)
        await client.flush()
        await asyncio.sleep(0.3)
    finally:
        await client.close()
    assert any('publish to "rondo.job.cancel_requested"' in e for e in errors), errors
    assert any(spy.lower() in e for e in errors), errors
