"""Reading staged bytes out of the NATS object store `rondo-staging` (and deleting them).

Producers put a checkpoint or a user file there and publish an event naming it with its
SHA-256; the bytes are streamed to a scratch file, checked, handed to the caller, and the
object is deleted only after the caller wrote it to the bucket.
"""

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from nats.js.errors import DigestMismatchError, NotFoundError
from nats.js.object_store import ObjectStore

from rondo.contracts.consumers import NeverValid


class StagedObjectMissing(NeverValid, LookupError):
    """The named object is not (or no longer) in the staging store."""


class ChecksumMismatch(NeverValid, ValueError):
    """The staged bytes do not hash to the SHA-256 the event announced."""


def normalize_sha256(value: str) -> str:
    """Hex digest in lower case; a `sha256:` prefix is tolerated."""
    return value.strip().lower().removeprefix("sha256:")


class _HashingWriter:
    """File-like sink for `ObjectStore.get(writeinto=...)` that hashes what it writes."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._out.write(data)


class StagingArea:
    """The staging object store plus a scratch directory for downloads."""

    def __init__(self, store: ObjectStore, work_dir: Path) -> None:
        self._store = store
        self._work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def fetched(self, name: str, expected_sha256: str) -> AsyncIterator[Path]:
        """Download object `name` to a scratch file, verified, for the `with` block.

        Raises `StagedObjectMissing` or `ChecksumMismatch`; the scratch file is always removed.
        """
        fd, raw_path = tempfile.mkstemp(prefix="staged-", dir=self._work_dir)
        path = Path(raw_path)
        try:
            with os.fdopen(fd, "wb") as out:
                sink = _HashingWriter(out)
                try:
                    await self._store.get(name, writeinto=sink)  # type: ignore[arg-type]
                except NotFoundError as error:
                    raise StagedObjectMissing(name) from error
                except DigestMismatchError as error:
                    raise ChecksumMismatch(f"{name}: object store digest mismatch") from error
            actual = sink.digest.hexdigest()
            if actual != normalize_sha256(expected_sha256):
                raise ChecksumMismatch(
                    f"{name}: sha256 is {actual}, the event announced {expected_sha256}"
                )
            yield path
        finally:
            path.unlink(missing_ok=True)

    async def delete(self, name: str) -> None:
        """Delete the object; an object already gone is fine (redelivery)."""
        with suppress(NotFoundError):
            await self._store.delete(name)
