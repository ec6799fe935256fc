"""The artifacts store: a small interface and its SQL implementation (SQLite by default).

Writes are meant for one thread at a time (the service's event loop); reads may come from worker
threads (log rendering). Every write is idempotent, so a redelivered event changes nothing.
"""

from collections.abc import Iterator, Sequence
from typing import Protocol

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from rondo.artifacts.layout import JobLocation, normalize_prefix
from rondo.artifacts.migrations import MIGRATIONS
from rondo.artifacts.models import (
    DirtyLogFile,
    JobRow,
    LogFileRow,
    LogLineRow,
    LogRunRow,
    ModelPointers,
    RoundRecord,
    RoundRow,
    StagedFile,
    StagedFileRow,
    utc,
)
from rondo.contracts.clock import utc_now
from rondo.contracts.consumers import RetryLater
from rondo.contracts.database import dialect_insert, make_engine
from rondo.contracts.events import WorkerContribution
from rondo.contracts.migrations import upgrade

SQLITE_BUSY_TIMEOUT_MS = 10_000


class JobNotKnown(RetryLater, LookupError):
    """An event names a job whose `JobSubmitted` has not been seen yet: retry it later."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not known yet")
        self.job_id = job_id


class ArtifactsStore(Protocol):
    """What the service remembers between events."""

    def save_location(self, location: JobLocation) -> JobLocation:
        """Remember where a job's folder is, once: a job already known keeps the location
        first recorded (a later event naming another bucket changes nothing). Returns the
        location recorded."""
        ...

    def location(self, job_id: str) -> JobLocation:
        """Where a job's folder is. Raises `JobNotKnown`."""
        ...

    def save_round(self, record: RoundRecord) -> None:
        """Insert or replace the round `(job_id, round)`: the last writer wins."""
        ...

    def round(self, job_id: str, round_number: int) -> RoundRecord | None: ...

    def rounds(self, job_id: str) -> list[RoundRecord]:
        """Every recorded round of the job, by round number, each once."""
        ...

    def model_pointers(self, job_id: str) -> ModelPointers: ...

    def set_model_pointers(self, job_id: str, pointers: ModelPointers) -> None: ...

    def staged_file(self, job_id: str, path: str) -> StagedFile | None:
        """The staged file last written at `path`, if any."""
        ...

    def record_staged(self, file: StagedFile) -> None:
        """Remember `file` as the one now at its path (replacing what was recorded there)."""
        ...

    def add_log_lines(
        self, job_id: str, file_name: str, run_id: str, first_line: int, lines: Sequence[str]
    ) -> int:
        """Store the lines not stored yet (by index within the run); returns how many were new.

        A run seen for the first time is appended after the file's earlier runs. New lines mark
        the file dirty until `mark_log_flushed` covers them.
        """
        ...

    def dirty_log_files(self, job_id: str | None = None) -> list[DirtyLogFile]: ...

    def log_runs(self, job_id: str, file_name: str) -> list[str]:
        """The file's run ids, in the order they first appeared."""
        ...

    def iter_log_lines(self, job_id: str, file_name: str, run_id: str) -> Iterator[str]:
        """The run's stored lines by index (a missing index is skipped). Thread-safe."""
        ...

    def mark_log_flushed(self, job_id: str, file_name: str, version: int) -> None: ...


def _record(row: RoundRow) -> RoundRecord:
    return RoundRecord(
        job_id=row.job_id,
        round=row.round,
        run_id=row.run_id,
        event_id=row.event_id,
        num_rounds=row.num_rounds,
        metrics=dict(row.metrics),
        contributions=[WorkerContribution.model_validate(c) for c in row.contributions],
        duration_s=row.duration_s,
        completed_at=utc(row.completed_at),
        checkpoint_sha256=row.checkpoint_sha256,
    )


class SqlArtifactsStore:
    """`ArtifactsStore` on SQLAlchemy/SQLModel; the schema must be migrated (`make_store`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def engine(self) -> Engine:
        return self._engine

    # --- jobs --------------------------------------------------------------------------

    def save_location(self, location: JobLocation) -> JobLocation:
        values = {
            "job_id": location.job_id,
            "bucket": location.bucket,
            "prefix": normalize_prefix(location.prefix),
            "updated_at": utc_now(),
        }
        statement = dialect_insert(self._engine, JobRow).values(**values)
        statement = statement.on_conflict_do_nothing(index_elements=["job_id"])
        with Session(self._engine) as session:
            session.exec(statement)
            session.commit()
        return self.location(location.job_id)

    def location(self, job_id: str) -> JobLocation:
        with Session(self._engine) as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotKnown(job_id)
            return JobLocation(job_id=row.job_id, bucket=row.bucket, prefix=row.prefix)

    def model_pointers(self, job_id: str) -> ModelPointers:
        with Session(self._engine) as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotKnown(job_id)
            return ModelPointers(
                global_round=row.global_round,
                global_sha256=row.global_sha256,
                best_round=row.best_round,
                best_sha256=row.best_sha256,
            )

    def set_model_pointers(self, job_id: str, pointers: ModelPointers) -> None:
        with Session(self._engine) as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise JobNotKnown(job_id)
            row.global_round = pointers.global_round
            row.global_sha256 = pointers.global_sha256
            row.best_round = pointers.best_round
            row.best_sha256 = pointers.best_sha256
            row.updated_at = utc_now()
            session.add(row)
            session.commit()

    # --- rounds ------------------------------------------------------------------------

    def save_round(self, record: RoundRecord) -> None:
        values = {
            "job_id": record.job_id,
            "round": record.round,
            "run_id": record.run_id,
            "event_id": record.event_id,
            "num_rounds": record.num_rounds,
            "metrics": record.metrics,
            "contributions": [c.model_dump(mode="json") for c in record.contributions],
            "duration_s": record.duration_s,
            "completed_at": record.completed_at,
            "checkpoint_sha256": record.checkpoint_sha256,
        }
        statement = dialect_insert(self._engine, RoundRow).values(**values)
        replace = {k: v for k, v in values.items() if k not in ("job_id", "round")}
        statement = statement.on_conflict_do_update(
            index_elements=["job_id", "round"], set_=replace
        )
        with Session(self._engine) as session:
            session.exec(statement)
            session.commit()

    def round(self, job_id: str, round_number: int) -> RoundRecord | None:
        with Session(self._engine) as session:
            row = session.get(RoundRow, (job_id, round_number))
            return _record(row) if row else None

    def rounds(self, job_id: str) -> list[RoundRecord]:
        with Session(self._engine) as session:
            query = select(RoundRow).where(RoundRow.job_id == job_id).order_by(col(RoundRow.round))
            return [_record(row) for row in session.exec(query)]

    # --- staged files ------------------------------------------------------------------

    def staged_file(self, job_id: str, path: str) -> StagedFile | None:
        with Session(self._engine) as session:
            row = session.get(StagedFileRow, (job_id, path))
            return StagedFile.model_validate(row, from_attributes=True) if row else None

    def record_staged(self, file: StagedFile) -> None:
        values = {**file.model_dump(), "written_at": utc_now()}
        statement = dialect_insert(self._engine, StagedFileRow).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["job_id", "path"],
            set_={k: v for k, v in values.items() if k not in ("job_id", "path")},
        )
        with Session(self._engine) as session:
            session.exec(statement)
            session.commit()

    # --- logs --------------------------------------------------------------------------

    def add_log_lines(
        self, job_id: str, file_name: str, run_id: str, first_line: int, lines: Sequence[str]
    ) -> int:
        if not lines:
            return 0
        last_line = first_line + len(lines) - 1
        with Session(self._engine) as session:
            log_file = session.get(LogFileRow, (job_id, file_name))
            if log_file is None:
                log_file = LogFileRow(job_id=job_id, file_name=file_name)
                session.add(log_file)
                session.flush()
            if session.get(LogRunRow, (job_id, file_name, run_id)) is None:
                last_seq = session.exec(
                    select(func.max(LogRunRow.seq)).where(
                        LogRunRow.job_id == job_id, LogRunRow.file_name == file_name
                    )
                ).one()
                seq = 0 if last_seq is None else last_seq + 1
                session.add(LogRunRow(job_id=job_id, file_name=file_name, run_id=run_id, seq=seq))
                session.flush()
            present = set(
                session.exec(
                    select(LogLineRow.line_no).where(
                        LogLineRow.job_id == job_id,
                        LogLineRow.file_name == file_name,
                        LogLineRow.run_id == run_id,
                        col(LogLineRow.line_no).between(first_line, last_line),
                    )
                )
            )
            new_rows = [
                {
                    "job_id": job_id,
                    "file_name": file_name,
                    "run_id": run_id,
                    "line_no": first_line + offset,
                    "text": text,
                }
                for offset, text in enumerate(lines)
                if first_line + offset not in present
            ]
            if not new_rows:
                session.commit()
                return 0
            insert = dialect_insert(self._engine, LogLineRow).on_conflict_do_nothing()
            session.exec(insert, params=new_rows)
            log_file.version += 1
            session.add(log_file)
            session.commit()
            return len(new_rows)

    def dirty_log_files(self, job_id: str | None = None) -> list[DirtyLogFile]:
        with Session(self._engine) as session:
            query = select(LogFileRow).where(LogFileRow.version > LogFileRow.flushed_version)
            if job_id is not None:
                query = query.where(LogFileRow.job_id == job_id)
            return [
                DirtyLogFile(job_id=row.job_id, file_name=row.file_name, version=row.version)
                for row in session.exec(query)
            ]

    def log_runs(self, job_id: str, file_name: str) -> list[str]:
        with Session(self._engine) as session:
            query = (
                select(LogRunRow.run_id)
                .where(LogRunRow.job_id == job_id, LogRunRow.file_name == file_name)
                .order_by(col(LogRunRow.seq))
            )
            return list(session.exec(query))

    def iter_log_lines(self, job_id: str, file_name: str, run_id: str) -> Iterator[str]:
        with Session(self._engine) as session:
            query = (
                select(LogLineRow.text)
                .where(
                    LogLineRow.job_id == job_id,
                    LogLineRow.file_name == file_name,
                    LogLineRow.run_id == run_id,
                )
                .order_by(col(LogLineRow.line_no))
                .execution_options(yield_per=1000)
            )
            yield from session.exec(query)

    def mark_log_flushed(self, job_id: str, file_name: str, version: int) -> None:
        with Session(self._engine) as session:
            row = session.get(LogFileRow, (job_id, file_name))
            if row is not None and row.flushed_version < version:
                row.flushed_version = version
                session.add(row)
                session.commit()


def make_store(database_url: str) -> ArtifactsStore:
    """The store behind `RONDO_ARTIFACTS_DATABASE_URL`, its schema migrated to the newest
    revision (`rondo.artifacts.migrations`)."""
    engine = make_engine(database_url, sqlite_busy_timeout_ms=SQLITE_BUSY_TIMEOUT_MS)
    upgrade(engine, MIGRATIONS)
    return SqlArtifactsStore(engine)
