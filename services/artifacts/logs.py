"""Log assembly: `LogBatch` lines → `files_out/server.log` and `files_out/client_<n>.log`.

Every line is stored once by `(job, file, run_id, index)`, so duplicate or redelivered batches
change nothing and out-of-order batches land in place. A file holds its runs in the order they
first appeared, a separator line before each later run (a resumed job continues its file).
Files are re-rendered and uploaded whole, at most every flush interval, and at once when the job
finishes or fails; uploads of one file never overlap.
"""

import asyncio
import contextlib
import logging
import os
import tempfile
from pathlib import Path

from rondo.artifacts.layout import JobLocation, is_log_file_name
from rondo.artifacts.models import DirtyLogFile
from rondo.artifacts.store import ArtifactsStore
from rondo.artifacts.writer import BucketWriter
from rondo.contracts.consumers import NeverValid
from rondo.contracts.events import LogBatch

logger = logging.getLogger(__name__)


class BadLogSource(NeverValid, ValueError):
    """A batch whose source does not name a log file (e.g. a client without a slot)."""


def separator_line(run_id: str) -> str:
    return f"===== Rondo: the job continues in a new NVFlare run ({run_id}) ====="


def clean_line(text: str) -> str:
    """One stored line: trailing newline characters dropped (each line gets exactly one)."""
    return text.rstrip("\r\n")


def render_log_file(store: ArtifactsStore, job_id: str, file_name: str, path: Path) -> None:
    """Write the assembled file from the store to `path` (blocking; runs in a worker thread)."""
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for index, run_id in enumerate(store.log_runs(job_id, file_name)):
            if index:
                out.write(separator_line(run_id) + "\n")
            for line in store.iter_log_lines(job_id, file_name, run_id):
                out.write(line + "\n")


class LogAssembler:
    """Stores log batches and keeps the job's log files in the bucket up to date."""

    def __init__(
        self,
        store: ArtifactsStore,
        writer: BucketWriter,
        work_dir: Path,
        flush_interval_s: float,
    ) -> None:
        self._store = store
        self._writer = writer
        self._work_dir = work_dir
        self._interval = flush_interval_s
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        work_dir.mkdir(parents=True, exist_ok=True)

    def add(self, batch: LogBatch) -> int:
        """Store the batch's new lines; returns how many were new.

        Raises `JobNotKnown` (retry later) or `BadLogSource` (never valid).
        """
        file_name = batch.source.file_name
        if not is_log_file_name(file_name):
            raise BadLogSource(f"log source {batch.source!r} names no log file")
        self._store.location(batch.job_id)
        lines = [clean_line(line) for line in batch.lines]
        return self._store.add_log_lines(
            batch.job_id, file_name, batch.run_id, batch.first_line, lines
        )

    async def flush(self, job_id: str | None = None) -> int:
        """Upload every file with lines not uploaded yet (of one job, or of all); returns count.

        A file that fails to upload stays dirty and is retried on the next flush.
        """
        async with self._flush_lock:
            flushed = 0
            for dirty in self._store.dirty_log_files(job_id):
                try:
                    await self._flush_file(dirty)
                except Exception:
                    logger.exception("flushing %s of job %s failed", dirty.file_name, dirty.job_id)
                    continue
                self._store.mark_log_flushed(dirty.job_id, dirty.file_name, dirty.version)
                flushed += 1
            return flushed

    async def _flush_file(self, dirty: DirtyLogFile) -> None:
        location: JobLocation = self._store.location(dirty.job_id)
        fd, raw_path = tempfile.mkstemp(prefix="log-", suffix=".log", dir=self._work_dir)
        os.close(fd)
        path = Path(raw_path)
        try:
            await asyncio.to_thread(
                render_log_file, self._store, dirty.job_id, dirty.file_name, path
            )
            await asyncio.to_thread(
                self._writer.put_file, location.bucket, location.log_file(dirty.file_name), path
            )
        finally:
            path.unlink(missing_ok=True)

    async def _flush_forever(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            try:
                await self.flush()
            except Exception:
                logger.exception("periodic log flush failed")

    async def start(self) -> None:
        """Start the periodic flush (also catches up on files left dirty by a crash)."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._flush_forever(), name="artifacts-log-flush")

    async def stop(self) -> None:
        """Stop the periodic flush after one last flush of everything still dirty."""
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None
        else:
            await self.flush()
