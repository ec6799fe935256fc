"""The gateway's tables: users, API keys, and its read model of jobs (transitions, rounds).

The read model is fed by the scheduler's events (`read_model.py`); the scheduler owns the job's
state machine, the gateway only mirrors it. Public shapes come from `rondo.contracts.api`.
"""

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import JSON, DateTime, Dialect, Index, TypeDecorator, UniqueConstraint, text
from sqlalchemy.orm import registry
from sqlmodel import Field, Relationship, SQLModel

from rondo.contracts.api import JobError, JobPublic, RoundPublic, StateTransition
from rondo.contracts.clock import utc_now
from rondo.contracts.events import WorkerContribution
from rondo.contracts.states import JobState, WorkerPanel, WorkerSlotView
from rondo.contracts.training import TrainingConfig

ACTIVE_STATES = tuple(state for state in JobState if not state.is_terminal)
_ACTIVE_SQL = text(f"state IN ({', '.join(repr(s.value) for s in ACTIVE_STATES)})")


class GatewayModel(SQLModel, registry=registry()):
    """Base of the gateway's models: their own metadata, so another service's tables loaded in
    the same process (tests) never clash with these names."""


def new_id() -> str:
    return str(uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware ones")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def user_name_key(name: str) -> str:
    """What makes a user name unique: its lower-cased form (`Default` and `default` are one)."""
    return name.lower()


def _name_key_of_insert(context: Any) -> str:
    """`users.name_key` when a row is inserted without one: derived from its name."""
    return user_name_key(str(context.get_current_parameters()["name"]))


class User(GatewayModel, table=True):
    """A tenant: sees only their own jobs and their own bucket.

    Names are unique case-insensitively (`name_key`, the lower-cased name) and no two users
    share a bucket: the constraints hold even against two operator commands racing.
    """

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("name_key", name="uq_users_name_key"),
        UniqueConstraint("bucket", name="uq_users_bucket"),
    )

    id: str = Field(default_factory=new_id, primary_key=True)
    name: str = Field(unique=True, index=True)
    name_key: str = Field(
        description="user_name_key(name), filled in on insert",
        sa_column_kwargs={"default": _name_key_of_insert},
    )
    bucket: str = Field(description="The user's S3 bucket (theirs alone); jobs live under jobs/")
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)


class ApiKey(GatewayModel, table=True):
    """An API key, stored only as the SHA-256 of the full key (the key is shown once)."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    key_hash: str = Field(unique=True, index=True, description="sha256 hex of the full key")
    display_prefix: str = Field(description="First characters, to recognise a key in listings")
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class UserS3Key(GatewayModel, table=True):
    """An S3 key of a user's own identity in the object store (reaches their bucket only).

    The secret is kept because the gateway signs the user's presigned URLs with it: rotating the
    key (a new row, this one revoked and deleted from the store) voids those URLs at once.
    """

    __tablename__ = "user_s3_keys"

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    access_key_id: str = Field(unique=True)
    secret_access_key: str
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Job(GatewayModel, table=True):
    """One submitted job as the gateway last heard of it.

    At most one active (PENDING/RUNNING) job per (user, name): the partial unique index makes
    a concurrent second submission fail even if both passed the route's check.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_jobs_idempotency_key"),
        Index(
            "uq_jobs_active_name",
            "user_id",
            "name",
            unique=True,
            sqlite_where=_ACTIVE_SQL,
            postgresql_where=_ACTIVE_SQL,
        ),
    )

    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str = Field(foreign_key="users.id", index=True, ondelete="CASCADE")
    name: str = Field(index=True)
    bucket: str
    files_prefix: str = Field(description="'jobs/{name}/'")
    state: JobState = Field(default=JobState.PENDING, index=True)
    reason: str = ""
    current_round: int = 0
    num_rounds: int
    run_id: str | None = None
    workers: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    slots: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    config: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    gpu: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    timing: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    idempotency_key: str | None = None
    created_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime, index=True)
    updated_at: datetime = Field(default_factory=utc_now, sa_type=UTCDateTime)
    outputs_written_at: datetime | None = Field(
        default=None,
        sa_type=UTCDateTime,
        description="When the artifacts service announced the ended job's outputs final",
    )
    snapshot_at: datetime | None = Field(
        default=None,
        sa_type=UTCDateTime,
        description="occurred_at of the newest scheduler snapshot applied (older ones are ignored)",
    )
    snapshot_event_id: str | None = Field(
        default=None, description="event_id of that snapshot (a redelivery of it is a no-op)"
    )
    submitted_event: dict[str, Any] | None = Field(
        default=None,
        sa_type=JSON,
        description="The job.submitted stored with the job (an outbox): republished until the "
        "scheduler acknowledges the job (its first snapshot)",
    )

    transitions: list["JobTransition"] = Relationship(
        back_populates="job",
        sa_relationship_kwargs={
            "order_by": "JobTransition.at",
            "lazy": "selectin",
            "cascade": "all, delete-orphan",
        },
    )


class JobTransition(GatewayModel, table=True):
    """When a job entered a state. A state is entered at most once (states never repeat)."""

    __tablename__ = "job_transitions"
    __table_args__ = (UniqueConstraint("job_id", "state", name="uq_job_transitions_state"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", index=True, ondelete="CASCADE")
    state: JobState
    at: datetime = Field(sa_type=UTCDateTime)

    job: Job | None = Relationship(back_populates="transitions")


class JobRound(GatewayModel, table=True):
    """One completed FedAvg round of one NVFlare run (a replacement run may repeat a round)."""

    __tablename__ = "job_rounds"
    __table_args__ = (
        UniqueConstraint("job_id", "round", "run_id", name="uq_job_rounds_round_run"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", index=True, ondelete="CASCADE")
    run_id: str
    round: int
    num_rounds: int
    metrics: dict[str, float] = Field(default_factory=dict, sa_type=JSON)
    contributions: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    duration_s: float
    completed_at: datetime = Field(sa_type=UTCDateTime)


class JobLogLine(GatewayModel, table=True):
    """One line of a job's log source (`server`, `client_<slot>`), from `LogBatch` events.

    A source's log is its runs in the order they first appeared (`run_seq`), each run's lines
    in their own order (`line_no`, as the agent numbered them).
    """

    __tablename__ = "job_log_lines"
    __table_args__ = (
        UniqueConstraint("job_id", "source", "run_id", "line_no", name="uq_job_log_lines_line"),
        Index("ix_job_log_lines_order", "job_id", "source", "run_seq", "line_no"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", ondelete="CASCADE")
    source: str
    run_id: str
    run_seq: int
    line_no: int
    text: str


def job_public(job: Job) -> JobPublic:
    """The API view of a stored job."""
    return JobPublic(
        id=job.id,
        name=job.name,
        state=job.state,
        reason=job.reason,
        created_at=job.created_at,
        updated_at=job.updated_at,
        transitions=[StateTransition(state=t.state, at=t.at) for t in job.transitions],
        current_round=job.current_round,
        num_rounds=job.num_rounds,
        workers=WorkerPanel.model_validate(job.workers),
        slots=[WorkerSlotView.model_validate(slot) for slot in job.slots],
        error=JobError.model_validate(job.error) if job.error else None,
        config=TrainingConfig.model_validate(job.config),
        files_prefix=job.files_prefix,
        outputs_written_at=job.outputs_written_at,
    )


def round_public(row: JobRound) -> RoundPublic:
    """The API view of a stored round."""
    return RoundPublic(
        round=row.round,
        num_rounds=row.num_rounds,
        run_id=row.run_id,
        metrics=row.metrics,
        contributions=[WorkerContribution.model_validate(c) for c in row.contributions],
        duration_s=row.duration_s,
        completed_at=row.completed_at,
    )
