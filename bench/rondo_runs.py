"""The benchmark job run through Rondo: a real local stack (`rondo up` in a temp folder), the
job uploaded to the user's bucket and submitted over HTTP, exactly as a user does.

`EventRecorder` listens to the bus next to the services and notes when each job event passed,
which is how a run's start is broken down (submit, dispatch, process phases, RUNNING).
"""

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import psutil
from job_data import shard_zip
from nats.aio.client import Client
from nats.aio.msg import Msg

from rondo.contracts.events import JobStateChanged, ProcessPhase, RunProcessChanged
from rondo.contracts.states import JobState
from rondo.contracts.subjects import subject_matches
from rondo.stack.local import LocalStack

# The end-to-end tests' view of a running stack (HTTP API, bucket, processes) is reused as is.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.platform import Platform

JOB_DIR = Path(__file__).resolve().parent / "job"
# A requirement the base environment already has: the job gets its own cached env (built by
# the first job, reused by the next), as most real jobs do.
REQUIREMENTS = b"numpy\n"
RECORDED_SUBJECTS = ("rondo.job.>", "rondo.run.>", "rondo.round.>", "rondo.agent.>")
POLL_S = 0.05


@dataclass(frozen=True)
class BusEvent:
    at: float  # time.monotonic() when the bench received it
    subject: str
    data: dict[str, Any]


class EventRecorder:
    """Every event on the job subjects, with the time it passed (own thread and loop)."""

    def __init__(self, nats_url: str, connect_options: dict[str, str] | None = None) -> None:
        self._nats_url = nats_url
        self._connect_options = connect_options or {}  # the bus identity, where auth is on
        self._events: list[BusEvent] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._connection: Client | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._subscribe(), self._loop).result(timeout=10)

    async def _subscribe(self) -> None:
        self._connection = await nats.connect(self._nats_url, **self._connect_options)
        for subject in RECORDED_SUBJECTS:
            await self._connection.subscribe(subject, cb=self._on_message)

    async def _on_message(self, message: Msg) -> None:
        event = BusEvent(time.monotonic(), message.subject, json.loads(message.data))
        with self._lock:
            self._events.append(event)

    def events(self, job_id: str | None = None) -> list[BusEvent]:
        with self._lock:
            return [e for e in self._events if job_id is None or e.data.get("job_id") == job_id]

    def stop(self) -> None:
        if self._connection is not None:
            closing = asyncio.run_coroutine_threadsafe(self._connection.close(), self._loop)
            closing.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()


@dataclass
class RondoJob:
    """A finished benchmark job: its logs, its start timeline and how long it took."""

    job_id: str
    submitted_at: float  # time.monotonic() just before the POST
    running_at: float  # when the bench saw RUNNING on the bus
    server_log: str
    client_logs: str
    events: list[BusEvent] = field(default_factory=list)

    @property
    def submit_to_running_s(self) -> float:
        return self.running_at - self.submitted_at

    @property
    def submit_to_connected_s(self) -> float:
        """Until the FL server was up and every client registered (the last READY)."""
        ready = [
            event.at
            for event in self.events
            if subject_matches(event.subject, RunProcessChanged.filter_subject())
            and event.data["phase"] == ProcessPhase.READY
        ]
        return max(ready) - self.submitted_at

    def start_timeline(self) -> list[tuple[float, str]]:
        """(seconds after submit, what happened) from submit up to RUNNING."""
        timeline = []
        for event in self.events:
            if event.at > self.running_at:
                break
            timeline.append((event.at - self.submitted_at, _describe(event)))
        return timeline


def _describe(event: BusEvent) -> str:
    data = event.data
    if subject_matches(event.subject, RunProcessChanged.filter_subject()):
        who = data["site_name"] if data["role"] == "client" else "FL server"
        return f"{who} {data['phase']}"
    if event.subject.endswith(".dispatch"):
        return f"dispatched to {data['agent_id']}"
    if event.subject == JobStateChanged.SUBJECT:
        return f"state {data['snapshot']['state']}"
    return event.subject.removeprefix("rondo.")


@dataclass
class RondoBench:
    """A started local stack with two workers, and what the benchmark does on it."""

    platform: Platform
    recorder: EventRecorder

    def run_job(self, name: str, config: dict[str, Any], straggler_s: float | None = None) -> str:
        """Upload the benchmark job as `name` and submit it; returns the job id."""
        files: dict[str, bytes | Path] = {
            "scripts/model_def.py": JOB_DIR / "model_def.py",
            "requirements/requirements.txt": REQUIREMENTS,
        }
        for slot in range(2):
            files[f"shards/shard_{slot}.zip"] = shard_zip(slot, straggler_s if slot == 0 else None)
        self.platform.upload_job(name, files)
        response = self.platform.submit(name, **config)
        if response.status_code != 201:
            raise RuntimeError(f"submit of {name} refused: {response.text}")
        return response.json()["id"]

    def run_to_end(self, name: str, config: dict[str, Any], timeout_s: float = 600) -> RondoJob:
        """Submit, note when it is RUNNING, wait until FINISHED, collect its logs."""
        submitted_at = time.monotonic()
        job_id = self.run_job(name, config)
        running_at = self.wait_running(job_id, timeout_s)
        job = self.platform.wait_for_state(job_id, timeout_s=timeout_s)
        if job["state"] != JobState.FINISHED:
            raise RuntimeError(f"job {name} ended {job['state']}: {job.get('error')}")
        server_log, client_logs = self.logs(name, config["num_rounds"])
        return RondoJob(
            job_id=job_id,
            submitted_at=submitted_at,
            running_at=running_at,
            server_log=server_log,
            client_logs=client_logs,
            events=self.recorder.events(job_id),
        )

    def wait_running(self, job_id: str, timeout_s: float) -> float:
        """When the bench saw the job's RUNNING transition on the bus."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.recorder.events(job_id):
                if (
                    event.subject == JobStateChanged.SUBJECT
                    and event.data["snapshot"]["state"] == JobState.RUNNING
                ):
                    return event.at
            time.sleep(POLL_S)
        raise TimeoutError(f"job {job_id} not RUNNING within {timeout_s} s")

    def wait_round(self, job_id: str, rounds_done: int, timeout_s: float = 300) -> None:
        """Until the job reports `rounds_done` completed rounds."""
        deadline = time.monotonic() + timeout_s
        while self.platform.job(job_id)["current_round"] < rounds_done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id}: round {rounds_done} not done in {timeout_s} s")
            time.sleep(POLL_S)

    def logs(self, name: str, num_rounds: int, timeout_s: float = 30) -> tuple[str, str]:
        """The job's server log and both client logs, once the last round is in them (the
        artifacts service writes logs a moment after the events)."""
        out = f"jobs/{name}/files_out/"
        deadline = time.monotonic() + timeout_s
        while True:
            missing = self.platform.wait_for_objects(
                [f"{out}server.log", f"{out}client_0.log", f"{out}client_1.log"], timeout_s
            )
            if missing:
                raise RuntimeError(f"logs missing: {sorted(missing)}")
            server = self.platform.read(f"{out}server.log").decode(errors="replace")
            clients = "".join(
                self.platform.read(f"{out}client_{slot}.log").decode(errors="replace")
                for slot in range(2)
            )
            last = f"round={num_rounds - 1} "
            done = f"Round {num_rounds - 1} finished." in server and clients.count(last) == 2
            if done or time.monotonic() > deadline:
                return server, clients
            time.sleep(0.5)

    def nvflare_processes(self) -> list[psutil.Process]:
        return self.platform.nvflare_processes()


@contextmanager
def rondo_stack(
    data_dir: Path, workers: int = 2, trust_user_code: bool = False
) -> Iterator[RondoBench]:
    """A local stack in `data_dir` for the duration of the block; everything stopped after.
    `trust_user_code`: the workers run user code unsandboxed (`rondo up --trust-user-code`)."""
    stack = LocalStack(data_dir, trust_user_code=trust_user_code)
    state = stack.up(workers=workers).state
    platform = Platform(stack=stack, state=state)
    recorder = EventRecorder(state.nats_url, state.nats_connect_options())
    try:
        recorder.start()
        yield RondoBench(platform, recorder)
    finally:
        recorder.stop()
        platform.api.close()
        stack.down()
