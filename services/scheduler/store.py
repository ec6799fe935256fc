"""The scheduler's state: an abstract `JobStore` and its SQL implementation.

Every mutating method is one transaction and takes the events (`outbox`) that announce the
change: they are committed with it and published afterwards (`rondo.scheduler.outbox`), so a
crash or a bus outage never loses a state change's event. Methods return `*Public` models,
detached from any database session.
"""

import abc
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func
from sqlmodel import Session, col, select

from rondo.contracts.database import dialect_insert, make_engine
from rondo.contracts.events import Event
from rondo.contracts.migrations import upgrade
from rondo.contracts.states import JobState
from rondo.scheduler.migrations import MIGRATIONS
from rondo.scheduler.models import (
    Job,
    JobCreate,
    JobPublic,
    JobTransition,
    JobTransitionPublic,
    JobUpdate,
    OutboxEvent,
    OutboxPublic,
    Run,
    RunCreate,
    RunPublic,
    RunSlot,
    RunSlotCreate,
    RunSlotPublic,
    RunSlotUpdate,
    RunUpdate,
    Worker,
    WorkerCreate,
    WorkerPublic,
    outbox_entry,
)

# The transaction-level advisory lock that placements take on PostgreSQL ("rondo" in ASCII).
PLACEMENT_LOCK_KEY = 0x726F6E646F


class JobStore(abc.ABC):
    """What the scheduler keeps: jobs and their transitions, runs and slots, workers, outbox."""

    # --- Jobs --------------------------------------------------------------------------------

    @abc.abstractmethod
    def add_job(
        self, job: JobCreate, at: datetime, outbox: Sequence[Event] = ()
    ) -> JobPublic | None:
        """Store a new job in PENDING, with its first transition (none -> PENDING) at `at`.

        Returns the stored job, or None when a job with this id exists (nothing is changed).
        """

    @abc.abstractmethod
    def get_job(self, job_id: str) -> JobPublic | None:
        """The job, or None."""

    @abc.abstractmethod
    def list_jobs(self, states: Collection[JobState]) -> list[JobPublic]:
        """Jobs in any of `states`, oldest submission first (the FCFS order)."""

    @abc.abstractmethod
    def update_job(
        self,
        job_id: str,
        update: JobUpdate,
        *,
        expected_state: JobState,
        at: datetime,
        slot_updates: Mapping[int, RunSlotUpdate] | None = None,
        end_run: bool = False,
        outbox: Sequence[Event] = (),
    ) -> JobPublic | None:
        """Apply the fields set in `update` if the job is still in `expected_state`.

        `at` is when the change happened. When `update.state` differs from `expected_state` a
        transition is recorded at `at` with `update.reason`. `slot_updates` (keyed by slot
        number) change the slots of the job's current run; `end_run` ends that run. Returns the
        updated job, or None (job missing or in another state: nothing is changed).
        """

    @abc.abstractmethod
    def list_transitions(self, job_id: str) -> list[JobTransitionPublic]:
        """Every state transition of the job, oldest first."""

    # --- Runs --------------------------------------------------------------------------------

    @abc.abstractmethod
    def add_run(
        self,
        run: RunCreate,
        slots: Sequence[RunSlotCreate],
        *,
        expected_run_id: str | None,
        job_update: JobUpdate | None = None,
        outbox: Sequence[Event] = (),
    ) -> RunPublic | None:
        """Store a run and its slots and make it the job's current run.

        Only if the job's current run is `expected_run_id` (None for a job's first run), which
        makes dispatch idempotent, and only if no live run of another job holds one of the
        slots' devices or the run's server ports: schedulers sharing a database never place two
        jobs on one slot. The previous run (`expected_run_id`) ends at `run.created_at`: a job
        has one live run. `job_update` is applied to the job in the same transaction. Returns
        the run, or None when the job is missing or has moved on, or when another scheduler
        took a slot or port first (the job stays unplaced: place it again).
        """

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunPublic | None:
        """The run, or None."""

    @abc.abstractmethod
    def list_active_runs(self) -> list[RunPublic]:
        """Runs not ended, oldest first."""

    @abc.abstractmethod
    def update_run(self, run_id: str, update: RunUpdate) -> RunPublic | None:
        """Apply the fields set in `update`; None when the run is unknown."""

    @abc.abstractmethod
    def list_slots(self, run_id: str) -> list[RunSlotPublic]:
        """The run's slots, in slot order."""

    @abc.abstractmethod
    def list_active_slots(self) -> list[RunSlotPublic]:
        """Slots of every run not ended: the worker slots that are taken."""

    # --- Workers -----------------------------------------------------------------------------

    @abc.abstractmethod
    def save_worker(self, worker: WorkerCreate) -> None:
        """Insert or replace what is known of a worker-agent (from its latest heartbeat)."""

    @abc.abstractmethod
    def save_workers(self, workers: Sequence[WorkerCreate]) -> None:
        """`save_worker` for several agents, in one transaction; each agent at most once."""

    @abc.abstractmethod
    def list_workers(self) -> list[WorkerPublic]:
        """Every worker-agent ever heard of."""

    # --- Outbox ------------------------------------------------------------------------------

    @abc.abstractmethod
    def list_outbox(self, limit: int = 100) -> list[OutboxPublic]:
        """Events committed but not yet published, in commit order."""

    @abc.abstractmethod
    def delete_outbox(self, ids: Collection[int]) -> None:
        """Forget published events."""


class SqlJobStore(JobStore):
    """`JobStore` on SQLAlchemy: SQLite (default) or PostgreSQL (`postgresql+psycopg://`).

    The schema must be migrated (`make_store` does it).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as session:
            yield session
            session.commit()

    @staticmethod
    def _add_outbox(session: Session, outbox: Sequence[Event]) -> None:
        session.add_all([outbox_entry(item) for item in outbox])

    # --- Jobs --------------------------------------------------------------------------------

    def add_job(
        self, job: JobCreate, at: datetime, outbox: Sequence[Event] = ()
    ) -> JobPublic | None:
        with self._transaction() as session:
            if session.get(Job, job.job_id) is not None:
                return None
            row = Job.model_validate(
                job,
                update={
                    "state": JobState.PENDING,
                    "submitted_at": at,
                    "state_since": at,
                    "progressed_at": at,
                },
            )
            session.add(row)
            session.flush()
            session.add(
                JobTransition(job_id=job.job_id, from_state=None, to_state=row.state, at=at)
            )
            self._add_outbox(session, outbox)
            return JobPublic.model_validate(row)

    def get_job(self, job_id: str) -> JobPublic | None:
        with Session(self._engine) as session:
            row = session.get(Job, job_id)
            return JobPublic.model_validate(row) if row else None

    def list_jobs(self, states: Collection[JobState]) -> list[JobPublic]:
        with Session(self._engine) as session:
            rows = session.exec(
                select(Job)
                .where(col(Job.state).in_([str(state) for state in states]))
                .order_by(col(Job.submitted_at), col(Job.job_id))
            ).all()
            return [JobPublic.model_validate(row) for row in rows]

    def update_job(
        self,
        job_id: str,
        update: JobUpdate,
        *,
        expected_state: JobState,
        at: datetime,
        slot_updates: Mapping[int, RunSlotUpdate] | None = None,
        end_run: bool = False,
        outbox: Sequence[Event] = (),
    ) -> JobPublic | None:
        with self._transaction() as session:
            row = session.get(Job, job_id, with_for_update=True)
            if row is None or row.state != expected_state:
                return None
            changes = update.model_dump(exclude_unset=True)
            new_state = changes.get("state", expected_state)
            if new_state != expected_state:
                session.add(
                    JobTransition(
                        job_id=job_id,
                        from_state=expected_state,
                        to_state=new_state,
                        at=at,
                        reason=changes.get("reason") or "",
                    )
                )
            row.sqlmodel_update(changes)
            if slot_updates and row.run_id is not None:
                for number, slot_update in slot_updates.items():
                    slot = session.get(RunSlot, (row.run_id, number))
                    if slot is not None:
                        slot.sqlmodel_update(
                            {**slot_update.model_dump(exclude_unset=True), "updated_at": at}
                        )
                        session.add(slot)
            if end_run and row.run_id is not None:
                run = session.get(Run, row.run_id)
                if run is not None and run.ended_at is None:
                    run.ended_at = at
                    session.add(run)
            self._add_outbox(session, outbox)
            session.add(row)
            session.flush()
            return JobPublic.model_validate(row)

    def list_transitions(self, job_id: str) -> list[JobTransitionPublic]:
        with Session(self._engine) as session:
            rows = session.exec(
                select(JobTransition)
                .where(JobTransition.job_id == job_id)
                .order_by(col(JobTransition.id))
            ).all()
            return [JobTransitionPublic.model_validate(row) for row in rows]

    # --- Runs --------------------------------------------------------------------------------

    def add_run(
        self,
        run: RunCreate,
        slots: Sequence[RunSlotCreate],
        *,
        expected_run_id: str | None,
        job_update: JobUpdate | None = None,
        outbox: Sequence[Event] = (),
    ) -> RunPublic | None:
        with self._transaction() as session:
            job = session.get(Job, run.job_id, with_for_update=True)
            if job is None or job.run_id != expected_run_id or JobState(job.state).is_terminal:
                return None
            self._lock_placements(session)
            if self._held_by_other_jobs(session, run, slots):
                return None
            previous = session.get(Run, expected_run_id) if expected_run_id else None
            if previous is not None and previous.ended_at is None:
                previous.ended_at = run.created_at
                session.add(previous)
            row = Run.model_validate(run)
            session.add(row)
            session.flush()
            session.add_all([RunSlot.model_validate(slot) for slot in slots])
            changes: dict[str, Any] = (
                job_update.model_dump(exclude_unset=True) if job_update else {}
            )
            job.sqlmodel_update({**changes, "run_id": run.run_id})
            session.add(job)
            self._add_outbox(session, outbox)
            session.flush()
            return RunPublic.model_validate(row)

    @staticmethod
    def _lock_placements(session: Session) -> None:
        """Hold the placement lock until the transaction ends: on PostgreSQL, schedulers sharing
        the database commit runs one at a time, so a slot found free stays free until this run
        takes it. (SQLite serves one scheduler, whose placements never overlap.)"""
        if session.get_bind().dialect.name == "postgresql":
            session.exec(select(func.pg_advisory_xact_lock(PLACEMENT_LOCK_KEY)))

    @staticmethod
    def _held_by_other_jobs(
        session: Session, run: RunCreate, slots: Sequence[RunSlotCreate]
    ) -> bool:
        """Whether a live run of another job holds one of `slots`' devices or `run`'s ports."""
        live_elsewhere = col(Run.ended_at).is_(None) & (col(Run.job_id) != run.job_id)
        wanted = {(slot.agent_id, slot.device_index) for slot in slots}
        held = session.exec(
            select(RunSlot.agent_id, RunSlot.device_index)
            .join(Run, col(Run.run_id) == col(RunSlot.run_id))
            .where(live_elsewhere, col(RunSlot.agent_id).in_({agent for agent, _ in wanted}))
        ).all()
        if wanted & set(held):
            return True
        ports = session.exec(
            select(Run.fed_learn_port, Run.admin_port).where(
                live_elsewhere, Run.server_agent_id == run.server_agent_id
            )
        ).all()
        return not {run.fed_learn_port, run.admin_port}.isdisjoint(
            port for pair in ports for port in pair
        )

    def get_run(self, run_id: str) -> RunPublic | None:
        with Session(self._engine) as session:
            row = session.get(Run, run_id)
            return RunPublic.model_validate(row) if row else None

    def list_active_runs(self) -> list[RunPublic]:
        with Session(self._engine) as session:
            rows = session.exec(
                select(Run).where(col(Run.ended_at).is_(None)).order_by(col(Run.created_at))
            ).all()
            return [RunPublic.model_validate(row) for row in rows]

    def update_run(self, run_id: str, update: RunUpdate) -> RunPublic | None:
        with self._transaction() as session:
            row = session.get(Run, run_id)
            if row is None:
                return None
            row.sqlmodel_update(update.model_dump(exclude_unset=True))
            session.add(row)
            session.flush()
            return RunPublic.model_validate(row)

    def list_slots(self, run_id: str) -> list[RunSlotPublic]:
        with Session(self._engine) as session:
            rows = session.exec(
                select(RunSlot).where(RunSlot.run_id == run_id).order_by(col(RunSlot.slot))
            ).all()
            return [RunSlotPublic.model_validate(row) for row in rows]

    def list_active_slots(self) -> list[RunSlotPublic]:
        with Session(self._engine) as session:
            rows = session.exec(
                select(RunSlot)
                .join(Run, col(Run.run_id) == col(RunSlot.run_id))
                .where(col(Run.ended_at).is_(None))
            ).all()
            return [RunSlotPublic.model_validate(row) for row in rows]

    # --- Workers -----------------------------------------------------------------------------

    def save_worker(self, worker: WorkerCreate) -> None:
        # One statement, so schedulers saving the same heartbeat at once never collide.
        values = worker.model_dump()
        statement = dialect_insert(self._engine, Worker).values(**values)
        with self._transaction() as session:
            session.exec(statement.on_conflict_do_update(index_elements=["agent_id"], set_=values))

    def save_workers(self, workers: Sequence[WorkerCreate]) -> None:
        if not workers:
            return
        rows = [worker.model_dump() for worker in workers]
        insert = dialect_insert(self._engine, Worker)
        # One statement run for every row: the new values come from each row (`excluded`).
        replace = {name: insert.excluded[name] for name in rows[0] if name != "agent_id"}
        statement = insert.on_conflict_do_update(index_elements=["agent_id"], set_=replace)
        with self._transaction() as session:
            session.connection().execute(statement, rows)

    def list_workers(self) -> list[WorkerPublic]:
        with Session(self._engine) as session:
            rows = session.exec(select(Worker).order_by(col(Worker.agent_id))).all()
            return [WorkerPublic.model_validate(row) for row in rows]

    # --- Outbox ------------------------------------------------------------------------------

    def list_outbox(self, limit: int = 100) -> list[OutboxPublic]:
        with Session(self._engine) as session:
            rows = session.exec(select(OutboxEvent).order_by(col(OutboxEvent.id)).limit(limit))
            return [OutboxPublic.model_validate(row) for row in rows.all()]

    def delete_outbox(self, ids: Collection[int]) -> None:
        with self._transaction() as session:
            # Rows another scheduler already published and deleted are simply not there.
            session.exec(delete(OutboxEvent).where(col(OutboxEvent.id).in_(ids)))


def make_store(database_url: str) -> JobStore:
    """The store for a database URL (`sqlite:///...` or `postgresql+psycopg://...`), its schema
    migrated to the newest revision (`rondo.scheduler.migrations`)."""
    engine = make_engine(database_url)
    upgrade(engine, MIGRATIONS)
    return SqlJobStore(engine)
