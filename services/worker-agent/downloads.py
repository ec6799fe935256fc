"""Fetching what a dispatch names by presigned URL: kits, job files, shards, checkpoints.

Presigned URLs need no credentials on the agent. Failures say what was being fetched (a shard
key, a job file's path) so the user can fix the right object.
"""

import asyncio
from pathlib import Path

import httpx

from rondo.contracts.events import JobFile
from rondo.worker_agent.shards import UnsafeArchive, safe_relative_path

CHUNK_BYTES = 1024 * 1024
TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=60.0, pool=10.0)


class DownloadError(Exception):
    """An object could not be fetched; the message names it and says why."""


async def download(client: httpx.AsyncClient, url: str, target: Path, what: str) -> Path:
    """Stream `url` into `target` (via a `.part` file, renamed when complete).

    Raises DownloadError naming `what` ('shard shards/shard_0.zip', 'job file ...').
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        async with client.stream("GET", url) as response:
            if response.status_code == 404:
                raise DownloadError(f"{what}: not found in the bucket (HTTP 404)")
            if response.status_code == 403:
                raise DownloadError(f"{what}: access denied (HTTP 403; URL expired?)")
            if response.status_code >= 400:
                raise DownloadError(f"{what}: download failed (HTTP {response.status_code})")
            with partial.open("wb") as out:
                async for chunk in response.aiter_bytes(CHUNK_BYTES):
                    out.write(chunk)
    except httpx.HTTPError as error:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{what}: download failed ({type(error).__name__}: {error})") from error
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return target


class JobFilesCache:
    """Job files of one run, each fetched once even when several processes of the run ask."""

    def __init__(self, client: httpx.AsyncClient, folder: Path) -> None:
        self._client = client
        self.folder = folder
        self._fetches: dict[str, asyncio.Task[Path]] = {}

    async def fetch(self, files: list[JobFile]) -> Path:
        """Download every file (those already fetched are reused); returns the folder."""
        tasks = [self._fetch_one(job_file) for job_file in files]
        await asyncio.gather(*tasks)
        return self.folder

    def _fetch_one(self, job_file: JobFile) -> asyncio.Task[Path]:
        task = self._fetches.get(job_file.path)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            try:
                relative = safe_relative_path(job_file.path)
            except UnsafeArchive as error:
                raise DownloadError(f"job file {job_file.path}: {error}") from error
            task = asyncio.create_task(
                download(
                    self._client,
                    job_file.url,
                    self.folder / relative,
                    f"job file {job_file.path}",
                )
            )
            self._fetches[job_file.path] = task
        return task


def make_http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=True)
