"""Round outputs: `RoundCompleted` → `model_out/` checkpoints and the `files_out/` reports.

For a round `r` of a job:
1. the checkpoint is read from the staging object store and its SHA-256 checked;
2. it is written to `model_out/model_round_{r}.pt`;
3. the round is recorded (once per `(job_id, r)`: a redelivered, replayed or resumed-run event
   for the same round replaces it, last writer wins);
4. `global_model.pt` is made to hold the latest recorded round and `best_model.pt` the best
   one (rule in `rondo.artifacts.metrics_report`): from the fresh file when that round is the
   one just written, else by a server-side copy of `model_round_{n}.pt`; the rounds they hold
   are remembered, so nothing is rewritten when nothing changed;
5. `metrics.json`, `training_log.txt` and `fl_round_complete.json` are re-rendered;
6. the staged object is deleted.
A redelivery that finds the object gone but the same checkpoint recorded only redoes 4-5.
Work on one job is serialized, so reports never interleave.
"""

import asyncio
import logging
from collections import defaultdict
from pathlib import Path

from rondo.artifacts.layout import JobLocation
from rondo.artifacts.metrics_report import (
    best_round,
    render_metrics_json,
    render_rounds_json,
    render_training_log,
)
from rondo.artifacts.models import ModelPointers, RoundRecord
from rondo.artifacts.staging import (
    ChecksumMismatch,
    StagedObjectMissing,
    StagingArea,
    normalize_sha256,
)
from rondo.artifacts.store import ArtifactsStore
from rondo.artifacts.writer import BucketWriter
from rondo.contracts.events import RoundCompleted

logger = logging.getLogger(__name__)


class RoundRecorder:
    """Writes a job's checkpoints and reports as its rounds complete."""

    def __init__(self, store: ArtifactsStore, writer: BucketWriter, staging: StagingArea) -> None:
        self._store = store
        self._writer = writer
        self._staging = staging
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def record(self, event: RoundCompleted) -> None:
        """Handle one `RoundCompleted` (steps in the module docstring).

        Raises `JobNotKnown` (retry later), `ChecksumMismatch` (object deleted, nothing
        recorded), or `StagedObjectMissing` when the
        object is gone and this checkpoint was never recorded.
        """
        location = self._store.location(event.job_id)
        sha256 = normalize_sha256(event.checkpoint_sha256)
        async with self._locks[event.job_id]:
            try:
                async with self._staging.fetched(event.checkpoint_object, sha256) as checkpoint:
                    await asyncio.to_thread(
                        self._writer.put_file,
                        location.bucket,
                        location.model_round(event.round),
                        checkpoint,
                    )
                    self._store.save_round(_round_record(event, sha256))
                    rounds = self._store.rounds(event.job_id)
                    await self._update_models(location, rounds, fresh=(event.round, checkpoint))
            except ChecksumMismatch:
                await self._staging.delete(event.checkpoint_object)
                raise
            except StagedObjectMissing:
                recorded = self._store.round(event.job_id, event.round)
                if recorded is None or recorded.checkpoint_sha256 != sha256:
                    raise
                logger.info(
                    "round %s of job %s was already recorded; re-rendering only",
                    event.round,
                    event.job_id,
                )
                rounds = self._store.rounds(event.job_id)
                await self._update_models(location, rounds, fresh=None)
            await self._write_reports(location, rounds)
        await self._staging.delete(event.checkpoint_object)

    async def refresh(self, job_id: str) -> int:
        """Bring the model pointers and the reports up to date (job finished or failed).

        Returns how many rounds they cover (the latest recorded round + 1; 0 with none). A
        round being recorded when this is called is waited for and covered.
        """
        location = self._store.location(job_id)
        async with self._locks[job_id]:
            rounds = self._store.rounds(job_id)
            await self._update_models(location, rounds, fresh=None)
            await self._write_reports(location, rounds)
            return rounds_covered(rounds)

    async def _update_models(
        self, location: JobLocation, rounds: list[RoundRecord], fresh: tuple[int, Path] | None
    ) -> None:
        """Make `global_model.pt` and `best_model.pt` hold the latest and best of `rounds`
        (the job's recorded rounds)."""
        best = best_round(rounds)
        if best is None:
            return
        by_number = {r.round: r for r in rounds}
        latest = by_number[max(by_number)]
        winner = by_number[best.round]
        pointers = self._store.model_pointers(location.job_id)
        if (pointers.global_round, pointers.global_sha256) != (
            latest.round,
            latest.checkpoint_sha256,
        ):
            await self._place(location, location.global_model, latest.round, fresh)
        if (pointers.best_round, pointers.best_sha256) != (winner.round, winner.checkpoint_sha256):
            await self._place(location, location.best_model, winner.round, fresh)
        self._store.set_model_pointers(
            location.job_id,
            ModelPointers(
                global_round=latest.round,
                global_sha256=latest.checkpoint_sha256,
                best_round=winner.round,
                best_sha256=winner.checkpoint_sha256,
            ),
        )

    async def _place(
        self, location: JobLocation, key: str, round_number: int, fresh: tuple[int, Path] | None
    ) -> None:
        """Make `key` hold round `round_number`'s checkpoint."""
        if fresh is not None and fresh[0] == round_number:
            await asyncio.to_thread(self._writer.put_file, location.bucket, key, fresh[1])
        else:
            source = location.model_round(round_number)
            await asyncio.to_thread(self._writer.copy, location.bucket, source, key)

    async def _write_reports(self, location: JobLocation, rounds: list[RoundRecord]) -> None:
        if not rounds:
            return
        reports = (
            (location.metrics_json, render_metrics_json(rounds)),
            (location.training_log, render_training_log(rounds)),
            (location.rounds_json, render_rounds_json(rounds)),
        )
        for key, body in reports:
            await asyncio.to_thread(self._writer.put_bytes, location.bucket, key, body)


def rounds_covered(rounds: list[RoundRecord]) -> int:
    """The latest recorded round + 1: what `global_model.pt` and the reports cover."""
    return max((r.round for r in rounds), default=-1) + 1


def _round_record(event: RoundCompleted, sha256: str) -> RoundRecord:
    return RoundRecord(
        job_id=event.job_id,
        round=event.round,
        run_id=event.run_id,
        event_id=event.event_id,
        num_rounds=event.num_rounds,
        metrics=event.metrics,
        contributions=event.contributions,
        duration_s=event.duration_s,
        completed_at=event.occurred_at,
        checkpoint_sha256=sha256,
    )
