"""The scheduler's tables, in SQLModel's base / table / create / public / update variants.

A `*Create` model is what a caller hands the store, a `*Public` model is what the store hands
back (plain values, detached from any database session), a `*Update` model carries only the
fields to change (`model_dump(exclude_unset=True)`).
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from rondo.contracts.events import ALL_EVENTS, Event, FailureCause, JobSubmitted, Slot
from rondo.contracts.states import JobState, SlotStatus


class SchedulerModel(SQLModel, registry=registry()):
    """Base of the scheduler's models: their own metadata, so another service's tables loaded in
    the same process (tests) never clash with these names."""


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the scheduler stores UTC-aware times only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


def _when(*, nullable: bool = False, index: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_type=UtcDateTime, nullable=True, index=index)
    return Field(sa_type=UtcDateTime, nullable=False, index=index)


def _enum(default: Any = None, *, nullable: bool = False, index: bool = False) -> Any:
    # Enums are stored as their string values: adding a member needs no schema migration.
    return Field(default=default, sa_type=String(32), nullable=nullable, index=index)


# --- Jobs ----------------------------------------------------------------------------------


class JobBase(SchedulerModel):
    job_id: str = Field(primary_key=True, max_length=128)
    user_id: str = Field(index=True)
    bucket: str
    name: str
    prefix: str
    num_rounds: int
    request: str = Field(description="The JobSubmitted event, JSON")


class JobCreate(JobBase):
    @classmethod
    def from_event(cls, event: JobSubmitted) -> "JobCreate":
        return cls(
            job_id=event.job_id,
            user_id=event.user_id,
            bucket=event.bucket,
            name=event.name,
            prefix=event.prefix,
            num_rounds=event.config.num_rounds,
            request=event.model_dump_json(),
        )


class JobStatusFields(SchedulerModel):
    """What changes while a job lives."""

    state: JobState = _enum(JobState.PENDING, index=True)
    reason: str = ""
    current_round: int = 0
    run_id: str | None = Field(default=None, description="The job's current NVFlare run")
    submitted_at: datetime = _when(index=True)
    state_since: datetime = _when()
    progressed_at: datetime = _when()
    below_min_since: datetime | None = _when(nullable=True)
    message: str = Field(default="", description="Why it failed, as shown to the user")
    cause: FailureCause | None = _enum(nullable=True)
    hint: str = ""


class Job(JobStatusFields, JobBase, table=True):
    __tablename__ = "jobs"


class JobPublic(JobStatusFields, JobBase):
    @property
    def submitted(self) -> JobSubmitted:
        return JobSubmitted.model_validate_json(self.request)


class JobUpdate(SchedulerModel):
    state: JobState | None = None
    reason: str | None = None
    current_round: int | None = None
    run_id: str | None = None
    state_since: datetime | None = None
    progressed_at: datetime | None = None
    below_min_since: datetime | None = None
    message: str | None = None
    cause: FailureCause | None = None
    hint: str | None = None


class JobTransitionBase(SchedulerModel):
    job_id: str = Field(foreign_key="jobs.job_id", index=True)
    from_state: JobState | None = _enum(nullable=True)
    to_state: JobState = _enum()
    at: datetime = _when()
    reason: str = ""


class JobTransition(JobTransitionBase, table=True):
    __tablename__ = "job_transitions"

    id: int | None = Field(default=None, primary_key=True)


class JobTransitionCreate(JobTransitionBase):
    pass


class JobTransitionPublic(JobTransitionBase):
    id: int


# --- Runs and their slots --------------------------------------------------------------------


class RunBase(SchedulerModel):
    run_id: str = Field(primary_key=True, max_length=64)
    job_id: str = Field(foreign_key="jobs.job_id", index=True)
    server_agent_id: str = Field(index=True)
    server_host: str = Field(description="What clients dial: the server's provisioned name")
    fed_learn_port: int
    admin_port: int
    admin_name: str
    start_round: int = 0
    kits_prefix: str = Field(description="Platform bucket prefix of the run's startup kits")
    server_generation: int = Field(
        default=0, description="How many times the job's FL server was replaced before this run"
    )


class RunCreate(RunBase):
    created_at: datetime = _when()


class Run(RunBase, table=True):
    __tablename__ = "runs"

    created_at: datetime = _when()
    server_ready_at: datetime | None = _when(nullable=True)
    started_at: datetime | None = _when(nullable=True)
    ended_at: datetime | None = _when(nullable=True, index=True)
    nvflare_job_id: str | None = None
    server_exited_at: datetime | None = _when(nullable=True)
    server_error: str | None = None


class RunPublic(RunBase):
    created_at: datetime
    server_ready_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    nvflare_job_id: str | None = None
    server_exited_at: datetime | None = Field(
        default=None, description="When the FL server process exited unasked (a crash)"
    )
    server_error: str | None = Field(default=None, description="What that crash said")

    @property
    def active(self) -> bool:
        return self.ended_at is None


class RunUpdate(SchedulerModel):
    server_ready_at: datetime | None = None
    started_at: datetime | None = None
    nvflare_job_id: str | None = None
    server_exited_at: datetime | None = None
    server_error: str | None = None


class RunSlotBase(SchedulerModel):
    run_id: str = Field(foreign_key="runs.run_id", primary_key=True)
    slot: int = Field(primary_key=True, description="Worker slot n trains on shard n")
    job_id: str = Field(index=True)
    site_name: str
    generation: int = 0
    agent_id: str = Field(index=True)
    device_index: int = Field(description="Index of the agent's Slot (GPU or CPU) it occupies")
    device: str = Field(description="'cpu' or 'cuda:N'")


class RunSlotCreate(RunSlotBase):
    pass


class RunSlot(RunSlotBase, table=True):
    __tablename__ = "run_slots"

    status: SlotStatus = _enum(SlotStatus.ASSIGNED)
    error: str | None = None
    updated_at: datetime | None = _when(nullable=True)


class RunSlotPublic(RunSlotBase):
    status: SlotStatus = SlotStatus.ASSIGNED
    error: str | None = None
    updated_at: datetime | None = None


class RunSlotUpdate(SchedulerModel):
    status: SlotStatus | None = None
    error: str | None = None


# --- Workers ---------------------------------------------------------------------------------


class WorkerBase(SchedulerModel):
    agent_id: str = Field(primary_key=True, max_length=128)
    host: str
    slots: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    fl_port_low: int
    fl_port_high: int
    started_at: datetime = _when()
    last_seen_at: datetime = _when()

    @property
    def slot_list(self) -> list[Slot]:
        return [Slot.model_validate(slot) for slot in self.slots]


class Worker(WorkerBase, table=True):
    __tablename__ = "workers"


class WorkerCreate(WorkerBase):
    pass


class WorkerPublic(WorkerBase):
    pass


# --- Outbox ----------------------------------------------------------------------------------

EVENT_TYPES: dict[str, type[Event]] = {event.__name__: event for event in ALL_EVENTS}


class OutboxBase(SchedulerModel):
    event_type: str
    payload: str = Field(description="The event, JSON")


class OutboxEvent(OutboxBase, table=True):
    """An event committed with the change it announces, deleted once published."""

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)


class OutboxPublic(OutboxBase):
    id: int

    def event(self) -> Event:
        return EVENT_TYPES[self.event_type].model_validate_json(self.payload)


def outbox_entry(event: Event) -> OutboxEvent:
    return OutboxEvent(event_type=type(event).__name__, payload=event.model_dump_json())
