"""Moving bytes to and from presigned object-store URLs (the API never proxies files).

Uploads stream the file (single PUT, or one PUT per multipart part, a few in parallel);
downloads stream into a temporary file next to the target and rename it once complete. Each
request is retried a few times on network errors and 5xx answers. A `TransferListener` hears
the bytes as they move (the CLI draws progress bars from it).
"""

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import httpx

from rondo.errors import ConnectionFailed

CHUNK_SIZE = 1024 * 1024
PART_WORKERS = 4
ATTEMPTS = 3
RETRY_DELAY_S = 1.0
TRANSFER_TIMEOUT = httpx.Timeout(30.0, read=300.0, write=300.0)

T = TypeVar("T")


class TransferListener(Protocol):
    """Hears one file's transfer: its size first, then the bytes as they move."""

    def started(self, label: str, total: int) -> None: ...

    def advanced(self, label: str, nbytes: int) -> None: ...

    def finished(self, label: str) -> None: ...


class SilentListener:
    """A listener that ignores everything (the SDK's default)."""

    def started(self, label: str, total: int) -> None:
        pass

    def advanced(self, label: str, nbytes: int) -> None:
        pass

    def finished(self, label: str) -> None:
        pass


def _with_retries(what: str, attempt: Callable[[], T]) -> T:
    """Run `attempt` up to `ATTEMPTS` times while it fails with a network error or a 5xx."""
    for number in range(1, ATTEMPTS + 1):
        try:
            return attempt()
        except (httpx.TransportError, httpx.HTTPStatusError) as error:
            retryable = not isinstance(error, httpx.HTTPStatusError) or (
                error.response.status_code >= 500
            )
            if not retryable or number == ATTEMPTS:
                raise ConnectionFailed(
                    f"{what} failed: {_describe(error)}",
                    "check your connection and retry; a presigned URL that expired is renewed "
                    "by running the command again",
                ) from error
            time.sleep(RETRY_DELAY_S * number)
    raise AssertionError("unreachable")


def _describe(error: httpx.HTTPError) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return (
            f"the object store answered {error.response.status_code}: {error.response.text[:300]}"
        )
    return str(error) or type(error).__name__


def _file_slice(
    path: Path, offset: int, length: int, on_bytes: Callable[[int], None]
) -> Iterator[bytes]:
    with path.open("rb") as stream:
        stream.seek(offset)
        left = length
        while left > 0:
            block = stream.read(min(CHUNK_SIZE, left))
            if not block:
                raise OSError(f"{path} shrank while it was being uploaded")
            left -= len(block)
            on_bytes(len(block))
            yield block


class Transfers:
    """Presigned-URL transfers over one HTTP client (no API credentials are ever sent)."""

    def __init__(self, http: httpx.Client | None = None) -> None:
        self._http = http or httpx.Client(timeout=TRANSFER_TIMEOUT)

    def close(self) -> None:
        self._http.close()

    def put_file(
        self,
        url: str,
        path: Path,
        content_type: str,
        label: str,
        listener: TransferListener,
    ) -> str:
        """PUT the whole file to a presigned URL; returns the ETag the store answered."""
        size = path.stat().st_size
        listener.started(label, size)
        etag = self._put_range(url, path, 0, size, content_type, label, listener)
        listener.finished(label)
        return etag

    def put_parts(
        self, urls: list[str], path: Path, part_size: int, label: str, listener: TransferListener
    ) -> list[str]:
        """PUT the file's parts to their presigned UploadPart URLs (in order); returns the
        parts' ETags. A few parts move at once."""
        size = path.stat().st_size
        listener.started(label, size)

        def put(number: int) -> str:
            offset = number * part_size
            length = min(part_size, size - offset)
            return self._put_range(urls[number], path, offset, length, None, label, listener)

        with ThreadPoolExecutor(max_workers=PART_WORKERS) as pool:
            etags = list(pool.map(put, range(len(urls))))
        listener.finished(label)
        return etags

    def _put_range(
        self,
        url: str,
        path: Path,
        offset: int,
        length: int,
        content_type: str | None,
        label: str,
        listener: TransferListener,
    ) -> str:
        headers = {"Content-Length": str(length)}
        if content_type:
            headers["Content-Type"] = content_type

        def attempt() -> str:
            sent = 0

            def count(nbytes: int) -> None:
                nonlocal sent
                sent += nbytes
                listener.advanced(label, nbytes)

            try:
                response = self._http.put(
                    url, content=_file_slice(path, offset, length, count), headers=headers
                )
                response.raise_for_status()
            except httpx.HTTPError:
                listener.advanced(label, -sent)  # this attempt's bytes are sent again
                raise
            return response.headers.get("ETag", "").strip('"')

        return _with_retries(f"uploading {label}", attempt)

    def etag(self, url: str, label: str) -> str:
        """The ETag of the object behind a presigned GET URL, reading one byte of it."""

        def attempt() -> str:
            response = self._http.get(url, headers={"Range": "bytes=0-0"})
            response.raise_for_status()
            return response.headers.get("ETag", "").strip('"')

        return _with_retries(f"reading the checksum of {label}", attempt)

    def download(
        self,
        url: str,
        target: Path,
        label: str,
        listener: TransferListener,
        verify: Callable[[Path, str], None],
    ) -> str:
        """GET a presigned URL into `target`; returns the object's ETag.

        The bytes go to a temporary file beside `target`, which `verify(file, etag)` checks
        (raising to refuse it) before it replaces `target`: a bad download never overwrites
        a good file.
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")

        def attempt() -> str:
            with self._http.stream("GET", url) as response:
                response.raise_for_status()
                total = int(response.headers.get("Content-Length", 0))
                listener.started(label, total)
                with partial.open("wb") as out:
                    for block in response.iter_bytes(CHUNK_SIZE):
                        out.write(block)
                        listener.advanced(label, len(block))
                return response.headers.get("ETag", "").strip('"')

        try:
            etag = _with_retries(f"downloading {label}", attempt)
            verify(partial, etag)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        listener.finished(label)
        return etag
