"""The artifacts service's own database: tables (SQLModel) and the records the store returns.

The database exists for idempotency: which job lives where, which rounds were recorded (once
per `(job_id, round)`), which staged files were written, and every log line by its index.
"""

from datetime import UTC, datetime

from pydantic import BaseModel, Field
from sqlalchemy import JSON, Column, ForeignKeyConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field as SqlField
from sqlmodel import SQLModel

from rondo.contracts.clock import utc_now
from rondo.contracts.events import WorkerContribution


def utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; everything stored here is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- Tables -------------------------------------------------------------------------------


class ArtifactsTable(SQLModel, registry=registry()):
    """Base of this service's tables: their own metadata, so that another service's tables
    imported into the same process (tests) never clash with these names."""


class JobRow(ArtifactsTable, table=True):
    """A job's bucket folder, plus which rounds `global_model.pt`/`best_model.pt` now hold."""

    __tablename__ = "jobs"

    job_id: str = SqlField(primary_key=True)
    bucket: str
    prefix: str
    global_round: int | None = None
    global_sha256: str | None = None
    best_round: int | None = None
    best_sha256: str | None = None
    updated_at: datetime = SqlField(default_factory=utc_now)


class RoundRow(ArtifactsTable, table=True):
    """One completed round of a job; a later event for the same round replaces it."""

    __tablename__ = "rounds"

    job_id: str = SqlField(primary_key=True, foreign_key="jobs.job_id")
    round: int = SqlField(primary_key=True)
    run_id: str
    event_id: str
    num_rounds: int
    metrics: dict[str, float] = SqlField(default_factory=dict, sa_column=Column(JSON))
    contributions: list[dict[str, object]] = SqlField(default_factory=list, sa_column=Column(JSON))
    duration_s: float
    completed_at: datetime
    checkpoint_sha256: str


class StagedFileRow(ArtifactsTable, table=True):
    """A user `out_dir` file copied to `files_out/`."""

    __tablename__ = "staged_files"

    job_id: str = SqlField(primary_key=True, foreign_key="jobs.job_id")
    path: str = SqlField(primary_key=True)
    sha256: str
    size: int
    run_id: str
    generation: int = 0
    written_at: datetime = SqlField(default_factory=utc_now)


class LogFileRow(ArtifactsTable, table=True):
    """One assembled log file; `version > flushed_version` means S3 is behind."""

    __tablename__ = "log_files"

    job_id: str = SqlField(primary_key=True, foreign_key="jobs.job_id")
    file_name: str = SqlField(primary_key=True)
    version: int = 0
    flushed_version: int = 0


class LogRunRow(ArtifactsTable, table=True):
    """The runs seen in a log file, in the order they first appeared (`seq`)."""

    __tablename__ = "log_runs"
    __table_args__ = (
        ForeignKeyConstraint(["job_id", "file_name"], ["log_files.job_id", "log_files.file_name"]),
    )

    job_id: str = SqlField(primary_key=True)
    file_name: str = SqlField(primary_key=True)
    run_id: str = SqlField(primary_key=True)
    seq: int


class LogLineRow(ArtifactsTable, table=True):
    """One log line, by its index in its run's log of that source."""

    __tablename__ = "log_lines"
    __table_args__ = (
        ForeignKeyConstraint(
            ["job_id", "file_name", "run_id"],
            ["log_runs.job_id", "log_runs.file_name", "log_runs.run_id"],
        ),
    )

    job_id: str = SqlField(primary_key=True)
    file_name: str = SqlField(primary_key=True)
    run_id: str = SqlField(primary_key=True)
    line_no: int = SqlField(primary_key=True)
    text: str


# --- Records (what the store returns; detached from any session) ---------------------------


class RoundRecord(BaseModel):
    """A recorded round, as the reports render it."""

    job_id: str
    round: int
    run_id: str
    event_id: str
    num_rounds: int
    metrics: dict[str, float] = Field(default_factory=dict)
    contributions: list[WorkerContribution] = Field(default_factory=list)
    duration_s: float
    completed_at: datetime
    checkpoint_sha256: str


class StagedFile(BaseModel):
    """A user out_dir file written to `files_out/`: which content, from which run and
    generation of its client slot."""

    job_id: str
    path: str
    sha256: str
    size: int
    run_id: str
    generation: int = 0


class ModelPointers(BaseModel):
    """Which round's checkpoint `global_model.pt` and `best_model.pt` hold now (None: none)."""

    global_round: int | None = None
    global_sha256: str | None = None
    best_round: int | None = None
    best_sha256: str | None = None


class DirtyLogFile(BaseModel):
    """A log file whose S3 copy is older than its lines (`version` is what a flush covers)."""

    job_id: str
    file_name: str
    version: int
