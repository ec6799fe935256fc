"""Faults on a real local stack, for tests/faults and bench/failover.py.

A fault stack runs with short liveness timings (`FAST`: agents beat every 0.5 s, a worker is
lost after 5 s of silence, the grace below min_clients is 8 s) and identical declared CPU slots,
so placement is the same on every run: slot 0 and the FL server on `local-0`, slot 1 on the
next agent. Its jobs are the tiny job, held at a chosen round for as long as a test likes
(`RoundHold`), so a fault always lands mid-job however busy the machine is. Parts are killed
with SIGKILL (what a host crash does) and restarted with `LocalStack.restart_part`; a
worker-agent can also live alone in a network namespace, joined to the host by a veth pair, and
be cut off by taking its link down.
"""

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import math
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import psutil
from nats.aio.msg import Msg
from pydantic import BaseModel

from rondo.contracts.bus_permissions import OPERATOR
from rondo.contracts.events import JobProgress, JobSnapshot, JobStateChanged
from rondo.contracts.states import JobState
from rondo.contracts.training import Timing
from rondo.stack.health import probe_stack
from rondo.stack.local import LocalStack
from rondo.stack.processes import spawn, wait_until
from rondo.stack.services import SERVICE_MODULES, ServicePart, stack_env
from rondo.stack.state import StackState, load_state
from support.platform import Platform
from support.tiny_job import tiny_job_files

CPU_SLOT = {"index": 0, "kind": "cpu", "model": "cpu", "total_memory_mb": 4096}
SERVER_MARK = "nvflare.private.fed.app.server"
CLIENT_MARK = "nvflare.private.fed.app.client"
CLIENT_ROOT_MARK = "nvflare.private.fed.app.client.client_train"
SERVER_ROOT_MARK = "nvflare.private.fed.app.server.server_train"


@dataclass(frozen=True)
class Liveness:
    """How fast a fault stack notices silence: the agents' heartbeat interval, and each job's
    `Timing` (the same interval, when a worker is lost, the grace below min_clients)."""

    heartbeat_interval_s: float
    worker_lost_after_s: float
    below_min_clients_grace_s: float

    @property
    def env(self) -> dict[str, str]:
        """What every service of the stack inherits from the test process (the same declared
        CPU slot on every agent, so placement is the same on every run)."""
        return {
            "RONDO_AGENT_HEARTBEAT_INTERVAL_S": str(self.heartbeat_interval_s),
            "RONDO_SCHEDULER_WORKER_LOST_AFTER_S": str(self.worker_lost_after_s),
            "RONDO_AGENT_INVENTORY": json.dumps([{**CPU_SLOT, "free_memory_mb": 4096}]),
        }

    @property
    def timing(self) -> dict[str, float]:
        return dataclasses.asdict(self)


# The fault tests' timings. NVFlare clients beat every 2 s: 5 s tolerates one late beat.
FAST = Liveness(heartbeat_interval_s=0.5, worker_lost_after_s=5.0, below_min_clients_grace_s=8.0)
PRODUCT = Liveness(  # the product's defaults
    **Timing().model_dump(include={field.name for field in dataclasses.fields(Liveness)})
)


@contextlib.contextmanager
def environment(variables: dict[str, str]) -> Iterator[None]:
    """`variables` set in this process's environment for the block, then restored."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def fault_stack(
    data_dir: Path, workers: int, host: str = "127.0.0.1", liveness: Liveness = FAST
) -> Iterator[Platform]:
    """`rondo up` with the fault settings for the block, then `rondo down`, which must leave
    no process behind (NVFlare orphans of killed agents included)."""
    with environment(liveness.env):
        stack = LocalStack(data_dir, host=host)
        platform = Platform(stack=stack, state=stack.up(workers=workers).state)
        try:
            yield platform
        finally:
            platform.api.close()
            stack.down()
            assert not platform.stack_processes(), "rondo down left processes behind"


# --- jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundHold:
    """Holds the tiny job's training from round `from_round` on while the file `path` exists:
    the job has completed exactly `from_round` rounds until it is released."""

    path: Path
    from_round: int

    @classmethod
    def at(cls, folder: Path, from_round: int) -> "RoundHold":
        hold = cls(folder / f"hold-{secrets.token_hex(4)}", from_round)
        hold.path.touch()
        return hold

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    @property
    def extra(self) -> dict[str, Any]:
        return {"hold_file": str(self.path), "hold_from_round": self.from_round}


def submit_tiny_job(
    platform: Platform,
    name: str,
    rounds: int,
    hold: RoundHold,
    worker_ids: list[str] | None = None,
    liveness: Liveness = FAST,
    min_clients: int | None = None,
) -> str:
    """Upload and submit the tiny two-shard job with the liveness timings, held by `hold`
    (pinned to `worker_ids` if given; every worker required unless `min_clients`); its id."""
    platform.upload_job(name, tiny_job_files(shards=2))
    response = platform.api.post(
        "/api/jobs",
        json={
            "name": name,
            "config": {"num_rounds": rounds, "extra": hold.extra, "min_clients": min_clients},
            "gpu": {"worker_ids": worker_ids or []},
            "timing": liveness.timing,
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def watch(
    platform: Platform,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    what: str,
    timeout_s: float = 120,
    interval_s: float = 0.1,
) -> dict[str, Any]:
    """Poll the job until `until(job)` holds; fails with the last view of it (or as soon as the
    job ended, when `until` can no longer become true)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = platform.job(job_id)
        if until(job):
            return job
        if JobState(job["state"]).is_terminal or time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}: {job}")
        time.sleep(interval_s)


def slot_view(job: dict[str, Any], slot: int) -> dict[str, Any]:
    return next(view for view in job["slots"] if view["slot"] == slot)


def assert_every_round_once(platform: Platform, name: str, rounds: int) -> None:
    """metrics.json lists rounds 0..rounds-1 exactly once, and every round's model is there."""
    outputs = {f"jobs/{name}/model_out/model_round_{r}.pt" for r in range(rounds)}
    outputs |= {f"jobs/{name}/model_out/global_model.pt", f"jobs/{name}/files_out/metrics.json"}
    assert not platform.wait_for_objects(outputs), "round checkpoints or metrics missing"

    def listed_rounds() -> list[int]:
        metrics = json.loads(platform.read(f"jobs/{name}/files_out/metrics.json"))
        return [entry["round"] for entry in metrics["rounds"]]

    wait_until(lambda: listed_rounds() == list(range(rounds)), timeout_s=30, interval_s=0.5)
    assert listed_rounds() == list(range(rounds))


# --- processes -------------------------------------------------------------------------------


def kill9(processes: Iterable[psutil.Process]) -> None:
    """SIGKILL every process and wait until they are gone."""
    victims = list(processes)
    for process in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(victims, timeout=10)


def kill_part(platform: Platform, name: str) -> None:
    """kill -9 of one part's own process (its children, NVFlare's included, live on)."""
    kill9([psutil.Process(platform.state.processes[name].pid)])


def restart_part(platform: Platform, name: str) -> None:
    """`LocalStack.restart_part`, then the platform sees the part's new process."""
    platform.stack.restart_part(name)
    state = load_state(platform.stack.data_dir)
    assert state is not None
    platform.state = state


def worker_processes(
    platform: Platform, agent_id: str, mark: str = "nvflare.private.fed.app"
) -> list[psutil.Process]:
    """NVFlare processes started by one agent (their workspace is under its work dir) whose
    command line contains `mark` (e.g. `SERVER_MARK`, `CLIENT_MARK`)."""
    work_dir = f"{platform.state.data_dir / 'agents' / agent_id}{os.sep}"
    found = []
    for process in platform.nvflare_processes():
        with contextlib.suppress(psutil.NoSuchProcess):
            command = process.cmdline()
            if any(work_dir in arg for arg in command) and any(mark in arg for arg in command):
                found.append(process)
    return found


def client_agent_without_server(platform: Platform, job: dict[str, Any]) -> tuple[int, str]:
    """A slot of the job whose agent does not run the FL server: (slot, agent id)."""
    for view in job["slots"]:
        if not worker_processes(platform, view["agent_id"], SERVER_MARK):
            return view["slot"], view["agent_id"]
    raise AssertionError(f"every worker of the job runs beside its FL server: {job['slots']}")


def kill_worker(platform: Platform, agent_id: str) -> None:
    """kill -9 of a worker-agent and its NVFlare processes: its host is gone."""
    kill9([psutil.Process(platform.state.processes[f"worker-agent-{agent_id}"].pid)])
    kill9(worker_processes(platform, agent_id))


# --- fail-over timings -----------------------------------------------------------------------


@dataclass(frozen=True)
class FailoverTimes:
    """Seconds from a kill until the loss showed (a worker Disconnected or in Errors; the job
    replacing its FL server), until the replacement was connected, and until the next round
    completed."""

    detected_s: float
    replaced_s: float
    next_round_s: float


@dataclass(frozen=True)
class Failover:
    """A worker host (or an FL server) killed mid-round and what followed, as the scheduler
    announced it on the bus and as the gateway's API showed it (the panel users watch)."""

    slot: int | None  # None: the FL server was killed
    killed_agent: str
    round_at_kill: int
    announced: FailoverTimes
    shown: FailoverTimes


class Announced(BaseModel):
    """What `JobStateChanged` and `JobProgress` have in common."""

    job_id: str
    snapshot: JobSnapshot


@contextlib.contextmanager
def announcements(state: StackState, job_id: str) -> Iterator[list[tuple[float, dict[str, Any]]]]:
    """Every snapshot of the job the scheduler announces during the block, with the monotonic
    time it was heard (in the API's JSON shape); recorded by a thread of its own."""
    heard: list[tuple[float, dict[str, Any]]] = []
    loop = asyncio.new_event_loop()

    async def on_message(message: Msg) -> None:
        announced = Announced.model_validate_json(message.data)
        if announced.job_id == job_id:
            heard.append((time.monotonic(), announced.snapshot.model_dump(mode="json")))

    async def subscribe() -> nats.NATS:
        client = await nats.connect(state.nats_url, **state.nats_connect_options())
        for subject in (JobStateChanged.SUBJECT, JobProgress.SUBJECT):
            await client.subscribe(subject, cb=on_message)
        await client.flush()
        return client

    thread = threading.Thread(target=loop.run_forever, name="announcements", daemon=True)
    thread.start()
    client = asyncio.run_coroutine_threadsafe(subscribe(), loop).result(timeout=10)
    try:
        yield heard
    finally:
        asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def held(platform: Platform, job_id: str, hold: RoundHold) -> dict[str, Any]:
    """The job once it completed the rounds before `hold` (it waits in the held round)."""
    return watch(
        platform,
        job_id,
        lambda job: job["current_round"] >= hold.from_round,
        f"round {hold.from_round} to be reached",
    )


def kill_worker_mid_round(platform: Platform, job_id: str, hold: RoundHold) -> Failover:
    """Once the job waits in the held round, kill -9 a worker host (not the FL server's),
    release the hold, and time the lost worker's detection, its replacement and the next
    completed round (which needs the replacement)."""
    job = held(platform, job_id, hold)
    slot, agent_id = client_agent_without_server(platform, job)
    site_name = slot_view(job, slot)["site_name"]

    def lost(view: dict[str, Any]) -> bool:
        return view["workers"]["disconnected"] + view["workers"]["errors"] > 0

    def replaced(view: dict[str, Any]) -> bool:
        new = slot_view(view, slot)
        return new["site_name"] != site_name and new["status"] == "connected"

    return _timed_kill(
        platform, job, hold, lambda: kill_worker(platform, agent_id), lost, replaced, slot, agent_id
    )


def kill_fl_server_mid_round(platform: Platform, job_id: str, hold: RoundHold) -> Failover:
    """Once the job waits in the held round, kill -9 its FL server process (its agent stays),
    release the hold, and time the crash's detection (the job says it replaces the server),
    the new run's start (every worker connected again) and the next completed round."""
    job = held(platform, job_id, hold)
    [server] = [
        process
        for process in platform.nvflare_processes()
        if any(SERVER_ROOT_MARK in part for part in process.cmdline())
    ]

    def lost(view: dict[str, Any]) -> bool:
        return view["reason"] == "replacing the FL server"

    def replaced(view: dict[str, Any]) -> bool:
        return view["reason"] == "" and view["workers"]["connected"] == len(view["slots"])

    return _timed_kill(platform, job, hold, lambda: kill9([server]), lost, replaced, None, "")


def _timed_kill(
    platform: Platform,
    job: dict[str, Any],
    hold: RoundHold,
    kill: Callable[[], None],
    lost: Callable[[dict[str, Any]], bool],
    replaced: Callable[[dict[str, Any]], bool],
    slot: int | None,
    killed_agent: str,
) -> Failover:
    """Kill, release the hold, and time `lost`, then `replaced` (after lost), then the next
    round, as announced on the bus and as shown by the API."""
    round_at_kill = job["current_round"]

    def next_round(view: dict[str, Any]) -> bool:
        return view["current_round"] > round_at_kill

    def times(views: list[tuple[float, dict[str, Any]]]) -> FailoverTimes:
        detected = next((heard for heard, view in views if lost(view)), math.nan)
        back = next(
            (heard for heard, view in views if heard >= detected and replaced(view)), math.nan
        )
        done = next((heard for heard, view in views if next_round(view)), math.nan)
        return FailoverTimes(detected - killed, back - killed, done - killed)

    shown: list[tuple[float, dict[str, Any]]] = []

    def seen(view: dict[str, Any]) -> bool:
        shown.append((time.monotonic(), view))
        return next_round(view)

    with announcements(platform.state, job["id"]) as announced:
        killed = time.monotonic()
        kill()
        hold.release()
        watch(platform, job["id"], seen, "the next round after the kill", interval_s=0.05)
    return Failover(slot, killed_agent, round_at_kill, times(announced), times(shown))


# --- a worker-agent in its own network namespace ---------------------------------------------


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.213.0.0/16 that no interface of this host uses."""
    used = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    while True:
        subnet = ipaddress.IPv4Network(f"10.213.{secrets.randbelow(254) + 1}.0/24")
        if f" {subnet.network_address + 1}/" not in used:
            return subnet


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"`ip {' '.join(args)}` failed ({result.stderr.strip()}): the network fault tests "
            "need root (CAP_NET_ADMIN) to create namespaces and veth pairs"
        )


@dataclass
class NetworkNamespace:
    """A network namespace joined to the host by a veth pair: the host side holds `host_ip`
    (where a stack's servers listen), the namespace side `inner_ip`."""

    name: str
    inner_link: str
    host_ip: str
    inner_ip: str

    @classmethod
    @contextlib.contextmanager
    def created(cls) -> Iterator["NetworkNamespace"]:
        tag = secrets.token_hex(3)
        subnet = _free_subnet()
        host_ip, inner_ip = (str(subnet.network_address + n) for n in (1, 2))
        space = cls(f"rondo-{tag}", f"rv{tag}n", host_ip, inner_ip)
        host_link = f"rv{tag}h"
        _ip("netns", "add", space.name)
        try:
            _ip("link", "add", host_link, "type", "veth", "peer", "name", space.inner_link)
            _ip("link", "set", space.inner_link, "netns", space.name)
            _ip("addr", "add", f"{host_ip}/24", "dev", host_link)
            _ip("link", "set", host_link, "up")
            space.inside("addr", "add", f"{inner_ip}/24", "dev", space.inner_link)
            space.inside("link", "set", "lo", "up")
            space.connect()
            yield space
        finally:
            subprocess.run(["ip", "link", "del", host_link], capture_output=True)
            subprocess.run(["ip", "netns", "del", space.name], capture_output=True)

    def inside(self, *args: str) -> None:
        _ip("netns", "exec", self.name, "ip", *args)

    def cut(self) -> None:
        """Take the namespace's link down: nothing gets in or out; nothing is killed."""
        self.inside("link", "set", self.inner_link, "down")

    def connect(self) -> None:
        self.inside("link", "set", self.inner_link, "up")

    def start_agent(self, platform: Platform, agent_id: str, fl_ports: str) -> ServicePart:
        """A worker-agent of `platform`'s stack inside the namespace; returns once healthy."""
        state = platform.state
        env = {
            # An agent the stack has no identity for: it connects as the operator.
            **stack_env(state, OPERATOR),
            "RONDO_AGENT_ID": agent_id,
            "RONDO_AGENT_HOST": self.inner_ip,
            "RONDO_AGENT_FL_PORTS": fl_ports,
            "RONDO_AGENT_WORK_DIR": str(state.data_dir / "agents" / agent_id),
            "RONDO_AGENT_RUNTIME": "process",  # as the stack's own agents, engine or not
        }
        part = ServicePart(
            f"worker-agent-{agent_id}",
            f"worker-agent.{agent_id}",
            SERVICE_MODULES["worker-agent"],
            env,
        )
        argv = ["ip", "netns", "exec", self.name, sys.executable, "-m", part.module]
        spawn(argv, state.logs_dir / f"{part.name}.console.log", env=env, cwd=state.data_dir)
        healthy = wait_until(lambda: probe_stack(state, [part])[part.name].healthy, 60, 0.25)
        assert healthy, f"{part.name} did not answer in its namespace"
        return part
