"""Worker-agents on separate hosts (network namespaces): the FL server role on one, the
workers on two others, NATS and S3 reached at the root namespace's bridge address. The job
only finishes if every part dials the others at their configured addresses."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.examples import digits_job_files
from support.netns import Host, HostNetwork, NetnsError, host_network, namespace_of
from support.platform import Platform

from rondo.contracts.bus_permissions import OPERATOR
from rondo.contracts.states import TERMINAL_STATES, JobState
from rondo.stack.health import probe_stack
from rondo.stack.local import LocalStack
from rondo.stack.processes import spawn, wait_until
from rondo.stack.services import ServicePart, agent_part, bus_identity_env
from rondo.stack.state import AgentConfig

ROUNDS = 2
FL_PORTS = (20000, 20019)
# One port is too few for an FL server (it needs two): hosts lending one never get the role.
NO_SERVER_PORTS = (20000, 20000)
JOB = "digits-hosts"


@pytest.fixture
def network() -> Iterator[HostNetwork]:
    try:
        with host_network(3) as network:
            yield network
    except NetnsError as error:
        pytest.fail(
            f"this test makes network namespaces and needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) "
            f"and the `ip` command (iproute2): {error}"
        )


@pytest.fixture
def platform(network: HostNetwork, tmp_path: Path) -> Iterator[Platform]:
    """Servers and services on the bridge address; one worker-agent per host."""
    stack = LocalStack(tmp_path / "stack", host=network.root_address)
    try:
        platform = Platform(stack=stack, state=stack.up(workers=0).state)
        server_host, *worker_hosts = network.hosts
        parts = [start_agent(platform, server_host, "server-host", FL_PORTS, slots="[]")]
        parts += [
            start_agent(platform, host, f"worker-host-{n}", NO_SERVER_PORTS)
            for n, host in enumerate(worker_hosts)
        ]
        healthy = wait_until(
            lambda: all(p.healthy for p in probe_stack(platform.state, parts).values()), 60, 0.5
        )
        assert healthy, probe_stack(platform.state, parts)
        yield platform
        platform.api.close()
    finally:
        stack.down()  # agents and NVFlare carry the stack's marker: they go too


def start_agent(
    platform: Platform,
    host: Host,
    agent_id: str,
    fl_ports: tuple[int, int],
    slots: str | None = None,
) -> ServicePart:
    """A worker-agent inside `host`'s namespace, announcing the host's own address;
    `slots` (RONDO_AGENT_INVENTORY) replaces the detected ones."""
    state = platform.state
    part = agent_part(state, AgentConfig(agent_id=agent_id, fl_ports=fl_ports), host.address)
    # The stack's bus has identities for the agents it started itself only: these connect as
    # the operator (the bus permissions have their own tests, tests/security).
    env = {**part.env, **bus_identity_env(state, OPERATOR)}
    if slots is not None:
        env["RONDO_AGENT_INVENTORY"] = slots
    log = state.logs_dir / f"{part.name}.console.log"
    spawn(host.command(part.argv), log, env=env, cwd=state.data_dir)
    return part


@pytest.mark.timeout(420)
@pytest.mark.xfail(
    reason="regression under investigation: with the authenticated bus the worker hosts' clients "
    "never start (the run times out after 120 s, sandboxed or trusted alike); the same agents in "
    "namespaces run jobs in tests/faults/test_network_partition.py",
    strict=False,
)
def test_demo_job_finishes_across_three_hosts(
    network: HostNetwork, platform: Platform, tmp_path: Path
) -> None:
    platform.upload_job(JOB, digits_job_files(tmp_path / "shards"))
    response = platform.submit(JOB, num_rounds=ROUNDS)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]

    running = platform.wait_for_state(job_id, [JobState.RUNNING, *TERMINAL_STATES])
    placed = nvflare_namespaces(platform)
    server_host, *worker_hosts = network.hosts
    assert placed["server"] == {server_host.namespace}, placed
    assert placed["client"] == {host.namespace for host in worker_hosts}, placed
    assert {slot["agent_id"] for slot in running["slots"]} == {"worker-host-0", "worker-host-1"}

    job = platform.wait_for_state(job_id)
    assert job["state"] == JobState.FINISHED, job
    assert job["current_round"] == ROUNDS
    metrics = platform.wait_for_json(
        f"jobs/{JOB}/files_out/metrics.json", lambda report: len(report["rounds"]) >= ROUNDS
    )
    assert [entry["round"] for entry in metrics["rounds"]] == list(range(ROUNDS))


def nvflare_namespaces(platform: Platform) -> dict[str, set[str]]:
    """The namespaces the running NVFlare server and client processes live in."""
    placed: dict[str, set[str]] = {"server": set(), "client": set()}
    for proc in platform.nvflare_processes():
        command = " ".join(proc.cmdline())
        role = "server" if ".app.server." in command else "client"
        try:
            placed[role].add(namespace_of(proc.pid))
        except NetnsError:
            if proc.is_running():
                raise  # else it ended meanwhile (NVFlare's short-lived helpers)
    return placed
