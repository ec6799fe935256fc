"""A whole local Rondo stack for end-to-end tests, and what a user does with it.

`Platform` wraps a `LocalStack` started in a temp folder: the real servers, the four services
and the worker-agents as processes, exactly as `rondo up` runs them.
"""

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from rondo.contracts.states import TERMINAL_STATES, JobState
from rondo.contracts.storage import S3Client, make_s3_client
from rondo.stack.local import LocalStack
from rondo.stack.processes import process_tree, processes_marked
from rondo.stack.services import STACK_ID_ENV
from rondo.stack.state import StackState

NVFLARE_PROCESS_MARK = "nvflare.private.fed.app"


@dataclass
class Platform:
    stack: LocalStack
    state: StackState
    api: httpx.Client = field(init=False)
    s3: S3Client = field(init=False)

    def __post_init__(self) -> None:
        self.api = httpx.Client(
            base_url=self.state.gateway_url,
            headers={"Authorization": f"Bearer {self.state.user.api_key}"},
            timeout=30,
        )
        creds = self.state.s3_user
        self.s3 = make_s3_client(self.state.s3_endpoint, creds.access_key, creds.secret_key)

    @property
    def bucket(self) -> str:
        return self.state.user.bucket

    # --- the user's bucket ----------------------------------------------------------------

    def upload_job(self, name: str, files: Mapping[str, bytes | Path]) -> None:
        """Put a job folder into the bucket: `files` maps paths under jobs/{name}/ to content."""
        for relative, content in files.items():
            body = content.read_bytes() if isinstance(content, Path) else content
            self.s3.put_object(Bucket=self.bucket, Key=f"jobs/{name}/{relative}", Body=body)

    def objects(self, prefix: str = "") -> dict[str, str]:
        """Every object key under `prefix` with its ETag."""
        found: dict[str, str] = {}
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = item["ETag"]
        return found

    def read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def wait_for_objects(self, keys: Iterable[str], timeout_s: float = 30) -> set[str]:
        """Wait until every key exists (outputs are written just after the events); returns
        the keys still missing at the deadline."""
        wanted = set(keys)
        deadline = time.monotonic() + timeout_s
        while True:
            missing = wanted - set(self.objects())
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.5)

    def wait_for_json(self, key: str, done: Callable[[Any], bool], timeout_s: float = 30) -> Any:
        """The JSON at `key` once `done(it)` holds (reports are rewritten as events arrive);
        at the deadline, the last one read (or None if it never existed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = json.loads(self.read(key))
            except self.s3.exceptions.NoSuchKey:
                value = None
            if (value is not None and done(value)) or time.monotonic() > deadline:
                return value
            time.sleep(0.5)

    # --- the API ------------------------------------------------------------------------

    def submit(
        self, name: str, timing: dict[str, float] | None = None, **config: Any
    ) -> httpx.Response:
        body: dict[str, Any] = {"name": name, "config": config}
        if timing is not None:
            body["timing"] = timing
        return self.api.post("/api/jobs", json=body)

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.api.get(f"/api/jobs/{job_id}")
        response.raise_for_status()
        return response.json()

    def wait_for_state(
        self, job_id: str, states: Iterable[JobState] = TERMINAL_STATES, timeout_s: float = 300
    ) -> dict[str, Any]:
        """Poll the job until its state is one of `states` (a FAILED job: with its error, which
        the gateway must show with the state); fails with the last view."""
        wanted = {JobState(s) for s in states}
        deadline = time.monotonic() + timeout_s
        job = self.job(job_id)
        while JobState(job["state"]) not in wanted or (
            job["state"] == JobState.FAILED and not job.get("error")
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"job not in {sorted(wanted)} after {timeout_s} s: {job}")
            time.sleep(0.5)
            job = self.job(job_id)
        return job

    def wait_for_outputs(self, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        """The ended job's view once the platform announced its outputs written (reports and
        `global_model.pt` final); fails with the last view."""
        deadline = time.monotonic() + timeout_s
        while (job := self.job(job_id))["outputs_written_at"] is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"outputs not written after {timeout_s} s: {job}")
            time.sleep(0.5)
        return job

    # --- processes ----------------------------------------------------------------------

    def stack_processes(self) -> list[psutil.Process]:
        procs = [p for record in self.state.processes.values() for p in process_tree(record.pid)]
        procs += processes_marked(STACK_ID_ENV, self.state.stack_id, self.state.data_dir)
        return list({p.pid: p for p in procs}.values())

    def nvflare_processes(self) -> list[psutil.Process]:
        """NVFlare servers, clients and their job processes still alive in the stack."""
        alive = []
        for proc in self.stack_processes():
            try:
                if any(NVFLARE_PROCESS_MARK in part for part in proc.cmdline()):
                    alive.append(proc)
            except psutil.NoSuchProcess:
                continue
        return alive

    def wait_no_nvflare_processes(self, timeout_s: float = 30) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout_s
        while (alive := self.nvflare_processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return alive


@contextmanager
def running_platform(data_dir: Path, workers: int = 2) -> Iterator[Platform]:
    """`rondo up` in `data_dir` for the length of the block, then `rondo down`, which must
    leave no process behind."""
    stack = LocalStack(data_dir)
    platform = Platform(stack=stack, state=stack.up(workers=workers).state)
    try:
        yield platform
    finally:
        platform.api.close()
        stack.down()
    assert not platform.stack_processes(), "rondo down left processes behind"
