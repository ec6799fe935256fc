"""User `out_dir` files: `ArtifactStaged` → `jobs/{name}/<path>` under `files_out/`.

The path is checked first (`rondo.artifacts.layout.check_staged_path`): a refused path writes
nothing and the staged object is deleted (it can never be written). Otherwise the object is
read from the staging store, its SHA-256 checked, written to the bucket, recorded, and deleted.
A redelivery that finds the object gone but the same file recorded is a no-op.

A file from an older generation of its client slot than the one recorded at its path is
dropped: a worker cut off from the bus uploads its spooled files once it is back, possibly
after its replacement (the next generation) wrote the same round's files.
"""

import asyncio
import logging

from rondo.artifacts.layout import UnsafePath
from rondo.artifacts.models import StagedFile
from rondo.artifacts.staging import (
    ChecksumMismatch,
    StagedObjectMissing,
    StagingArea,
    normalize_sha256,
)
from rondo.artifacts.store import ArtifactsStore
from rondo.artifacts.writer import BucketWriter
from rondo.contracts.events import ArtifactStaged

logger = logging.getLogger(__name__)


class StagedFileCopier:
    """Copies staged user files into the job's `files_out/`."""

    def __init__(self, store: ArtifactsStore, writer: BucketWriter, staging: StagingArea) -> None:
        self._store = store
        self._writer = writer
        self._staging = staging

    async def copy(self, event: ArtifactStaged) -> None:
        """Handle one `ArtifactStaged`.

        Raises `JobNotKnown` (retry later), `UnsafePath` or `ChecksumMismatch` (object deleted,
        nothing written), or `StagedObjectMissing` when the file was never written.
        """
        location = self._store.location(event.job_id)
        sha256 = normalize_sha256(event.sha256)
        try:
            key = location.staged(event.path)
        except UnsafePath:
            await self._staging.delete(event.object_name)
            raise
        recorded = self._store.staged_file(event.job_id, event.path)
        if recorded is not None and recorded.generation > event.generation:
            logger.warning(
                "job %s: dropped %s of run %s (slot generation %d): generation %d's is newer",
                event.job_id, event.path, event.run_id, event.generation, recorded.generation,
            )  # fmt: skip
            await self._staging.delete(event.object_name)
            return
        try:
            async with self._staging.fetched(event.object_name, sha256) as path:
                await asyncio.to_thread(self._writer.put_file, location.bucket, key, path)
        except StagedObjectMissing:
            if recorded is None or recorded.sha256 != sha256:
                raise
            logger.info("staged file %s of job %s was already written", event.path, event.job_id)
            return
        except ChecksumMismatch:
            await self._staging.delete(event.object_name)
            raise
        written = StagedFile(
            job_id=event.job_id,
            path=event.path,
            sha256=sha256,
            size=event.size,
            run_id=event.run_id,
            generation=event.generation,
        )
        self._store.record_staged(written)
        await self._staging.delete(event.object_name)
