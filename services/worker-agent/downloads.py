"""Fetching what a dispatch names by presigned URL: kits, job files, shards, checkpoints.

Presigned URLs need no credentials on the agent. Failures say what was being fetched (a shard
key, a job file's path) so the user can fix the right object.

A presigned URL is a credential until it expires: its query string (`X-Amz-Signature`,
`X-Amz-Credential`) lets anyone holding it read the object. It never reaches a log line or an
error message: httpx's own request logging (INFO, the full URL) is turned down to WARNING by
`make_http_client`, and every message made here passes through `redact_urls`.
"""

import asyncio
import logging
import re
from pathlib import Path

import httpx

from rondo.contracts.events import JobFile
from rondo.worker_agent.shards import UnsafeArchive, safe_relative_path

CHUNK_BYTES = 1024 * 1024
# Libraries that log each request's full URL at INFO/DEBUG.
URL_LOGGING_LIBRARIES = ("httpx", "httpcore")
REDACTED = "<redacted>"
# A URL's query string, or a signing parameter wherever it appears (a URL cut by a message).
_URL_QUERY = re.compile(r"(https?://[^\s?#'\"<>]*)\?[^\s#'\"<>]*", re.IGNORECASE)
_SIGNING_PARAM = re.compile(
    r"(X-Amz-(?:Signature|Credential|Security-Token)|Signature|AWSAccessKeyId)=[^&\s'\"<>]*",
    re.IGNORECASE,
)
TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=60.0, pool=10.0)


def redact_urls(text: str) -> str:
    """`text` with every URL's query string, and any signing parameter, replaced by
    `<redacted>`: what may be logged or shown of a presigned URL is its scheme, host and path."""
    text = _URL_QUERY.sub(rf"\1?{REDACTED}", text)
    return _SIGNING_PARAM.sub(rf"\1={REDACTED}", text)


def quiet_url_logging() -> None:
    """Keep httpx/httpcore below WARNING from logging requests (their lines hold the full
    presigned URL). Idempotent; called by `make_http_client`."""
    for name in URL_LOGGING_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


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
        reason = redact_urls(f"{type(error).__name__}: {error}")
        # `from None`: the chained httpx error's request would carry the whole URL.
        raise DownloadError(f"{what}: download failed ({reason})") from None
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
    """The agent's client for presigned URLs (request logging quieted: see the module)."""
    quiet_url_logging()
    return httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=True)
