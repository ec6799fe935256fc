"""The job state machine: PENDING -> RUNNING -> FINISHED | FAILED | CANCELLED.

Only `rondo.contracts.states.LEGAL_TRANSITIONS` are taken; anything else is refused and logged.
Every transition is stored with its time and announced as `JobStateChanged` (with the job's
snapshot); a changed reason, worker panel or round is announced as `JobProgress`; the end of a
job as `JobFinished` or `JobFailed`, with a `RunStopRequested` to every agent of its run.
Events are committed with the change and published at once through the outbox.
"""

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from rondo.contracts.clock import Clock
from rondo.contracts.events import (
    Event,
    FailureCause,
    JobDispatched,
    JobError,
    JobFailed,
    JobFinished,
    JobProgress,
    JobSnapshot,
    JobStateChanged,
    JobSubmitted,
    RunStopRequested,
)
from rondo.contracts.states import (
    JobState,
    SlotStatus,
    WorkerPanel,
    WorkerSlotView,
    is_legal_transition,
)
from rondo.scheduler.failures import classify
from rondo.scheduler.models import (
    JobCreate,
    JobPublic,
    JobUpdate,
    RunCreate,
    RunPublic,
    RunSlotCreate,
    RunSlotPublic,
    RunSlotUpdate,
)
from rondo.scheduler.outbox import Outbox
from rondo.scheduler.store import JobStore

logger = logging.getLogger(__name__)

LastHeard = Callable[[str], datetime | None]

# Slots still part of the federation when a run ends; they are marked done.
_LIVE_SLOTS = frozenset({SlotStatus.ASSIGNED, SlotStatus.CONNECTED})


@dataclass(frozen=True)
class FailureReport:
    """Why a job failed, as the user reads it."""

    message: str
    cause: FailureCause
    hint: str

    @classmethod
    def from_error(cls, message: str, error_text: str | None = None) -> "FailureReport":
        """Classify `error_text` (default: the message itself) per the spec's cause table."""
        failure = classify(error_text if error_text is not None else message)
        return cls(message=message, cause=failure.cause, hint=failure.hint)


REASON_MAX_CHARS = 200


def short_reason(message: str) -> str:
    """A failure message's first line, cut to fit the job's short `reason`."""
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return first if len(first) <= REASON_MAX_CHARS else first[: REASON_MAX_CHARS - 1] + "…"


def panel_of(slots: list[RunSlotPublic]) -> WorkerPanel:
    return WorkerPanel(
        total=len(slots),
        connected=sum(slot.status == SlotStatus.CONNECTED for slot in slots),
        errors=sum(slot.status == SlotStatus.ERROR for slot in slots),
        disconnected=sum(slot.status == SlotStatus.DISCONNECTED for slot in slots),
    )


class JobStateMachine:
    """Changes jobs only along legal transitions and announces every change."""

    def __init__(
        self,
        store: JobStore,
        outbox: Outbox,
        clock: Clock,
        last_heard: LastHeard = lambda _agent_id: None,
    ) -> None:
        self._store = store
        self._outbox = outbox
        self._clock = clock
        self._last_heard = last_heard

    # --- Reading -----------------------------------------------------------------------------

    def slots(self, job: JobPublic) -> list[RunSlotPublic]:
        return self._store.list_slots(job.run_id) if job.run_id else []

    def snapshot(self, job: JobPublic, slots: list[RunSlotPublic] | None = None) -> JobSnapshot:
        """What the gateway shows of the job: state, reason, rounds, panel and slots."""
        slots = self.slots(job) if slots is None else slots
        views: list[WorkerSlotView] = []
        for slot in slots:
            heard = self._last_heard(slot.agent_id)
            views.append(
                WorkerSlotView(
                    slot=slot.slot,
                    site_name=slot.site_name,
                    agent_id=slot.agent_id,
                    status=slot.status,
                    last_heartbeat_at=heard.isoformat() if heard else None,
                )
            )
        return JobSnapshot(
            state=job.state,
            reason=job.reason,
            current_round=job.current_round,
            num_rounds=job.num_rounds,
            workers=panel_of(slots),
            slots=views,
            run_id=job.run_id,
            error=(
                JobError(message=job.message, cause=job.cause, hint=job.hint)
                if job.cause is not None
                else None
            ),
        )

    # --- Changing ----------------------------------------------------------------------------

    async def submit(self, event: JobSubmitted) -> JobPublic | None:
        """Store a submitted job as PENDING and announce it; None if it was already known."""
        now = self._clock()
        create = JobCreate.from_event(event)
        pending = JobPublic.model_validate(
            create,
            update={"submitted_at": now, "state_since": now, "progressed_at": now},
        )
        announce = JobStateChanged(
            job_id=event.job_id, previous_state=None, snapshot=self.snapshot(pending, [])
        )
        job = self._store.add_job(create, now, outbox=[announce])
        await self._outbox.flush()
        return job

    async def transition(
        self,
        job_id: str,
        new_state: JobState,
        *,
        reason: str = "",
        failure: FailureReport | None = None,
        stop_reason: str = "",
        slot_updates: Mapping[int, RunSlotUpdate] | None = None,
    ) -> bool:
        """Move the job to `new_state` if that is legal; False (and a log line) if refused.

        `slot_updates` change slots of the job's run with it. Terminal states end the job's
        current run (a stop request to each of its agents, with `stop_reason`), mark its live
        slots done and announce `JobFinished` or, for FAILED, `JobFailed` from `failure`.
        """
        job = self._store.get_job(job_id)
        if job is None:
            logger.warning("job %s: transition to %s refused: unknown job", job_id, new_state)
            return False
        if not is_legal_transition(job.state, new_state):
            log = logger.debug if job.state == new_state else logger.warning
            log("job %s: illegal transition %s -> %s refused", job_id, job.state, new_state)
            return False
        if new_state == JobState.FAILED and failure is None:
            raise ValueError("a FAILED transition needs a failure report")

        now = self._clock()
        update = JobUpdate(state=new_state, state_since=now, reason=reason, progressed_at=now)
        if failure is not None:
            update.message, update.cause, update.hint = failure.message, failure.cause, failure.hint
        slots = _apply(self.slots(job), slot_updates or {})
        slot_updates = dict(slot_updates or {})
        if new_state.is_terminal:
            done = RunSlotUpdate(status=SlotStatus.DONE)
            slot_updates |= {slot.slot: done for slot in slots if slot.status in _LIVE_SLOTS}
            slots = _apply(slots, slot_updates)
        after = job.model_copy(update=update.model_dump(exclude_unset=True))
        events: list[Event] = [
            JobStateChanged(
                job_id=job_id, previous_state=job.state, snapshot=self.snapshot(after, slots)
            )
        ]
        if new_state.is_terminal:
            events += self._ending_events(after, slots, failure, stop_reason or reason)
        stored = self._store.update_job(
            job_id,
            update,
            expected_state=job.state,
            at=now,
            slot_updates=slot_updates,
            end_run=new_state.is_terminal,
            outbox=events,
        )
        if stored is None:
            logger.warning("job %s changed underneath a transition to %s", job_id, new_state)
            return False
        logger.info("job %s: %s -> %s %s", job_id, job.state, new_state, reason or "")
        await self._outbox.flush()
        return True

    def _ending_events(
        self,
        job: JobPublic,
        slots: list[RunSlotPublic],
        failure: FailureReport | None,
        stop_reason: str,
    ) -> list[Event]:
        events: list[Event] = []
        run = self._store.get_run(job.run_id) if job.run_id else None
        if run is not None and run.active:
            events += stop_requests(run, slots, stop_reason or f"job {job.state.lower()}")
        if job.state == JobState.FAILED:
            assert failure is not None
            events.append(
                JobFailed(
                    job_id=job.job_id,
                    bucket=job.bucket,
                    prefix=job.prefix,
                    message=failure.message,
                    cause=failure.cause,
                    hint=failure.hint,
                    last_round=job.current_round,
                )
            )
        else:
            assert job.state in (JobState.FINISHED, JobState.CANCELLED)
            events.append(
                JobFinished(
                    job_id=job.job_id,
                    bucket=job.bucket,
                    prefix=job.prefix,
                    state=job.state,
                    last_round=job.current_round,
                )
            )
        return events

    async def fail(self, job_id: str, failure: FailureReport) -> bool:
        """FAILED with the report as the job's message, cause and hint."""
        return await self.transition(
            job_id, JobState.FAILED, reason=short_reason(failure.message), failure=failure
        )

    async def progress(
        self,
        job_id: str,
        *,
        reason: str | None = None,
        current_round: int | None = None,
        slot_updates: Mapping[int, RunSlotUpdate] | None = None,
    ) -> bool:
        """Change the job's reason, round or slots of its current run, without a transition.

        Announces `JobProgress` when the snapshot changed and returns whether it did. A round
        only moves forward, so a redelivered `RoundCompleted` changes nothing.
        """
        job = self._store.get_job(job_id)
        if job is None or job.state.is_terminal:
            return False
        now = self._clock()
        update = JobUpdate()
        if reason is not None and reason != job.reason:
            update.reason = reason
        if current_round is not None and current_round > job.current_round:
            update.current_round = current_round
            update.progressed_at = now
        before_slots = self.slots(job)
        after_slots = _apply(before_slots, slot_updates or {})
        if not update.model_fields_set and after_slots == before_slots:
            return False
        before = self.snapshot(job, before_slots)
        after = self.snapshot(
            job.model_copy(update=update.model_dump(exclude_unset=True)), after_slots
        )
        events: list[Event] = []
        if _visible(before) != _visible(after):
            events.append(JobProgress(job_id=job_id, snapshot=after))
        changed = {
            new.slot: (slot_updates or {})[new.slot]
            for old, new in zip(before_slots, after_slots, strict=True)
            if old != new
        }
        stored = self._store.update_job(
            job_id, update, expected_state=job.state, at=now, slot_updates=changed, outbox=events
        )
        await self._outbox.flush()
        return stored is not None and bool(events)

    async def start_run(
        self,
        job_id: str,
        run: RunCreate,
        slots: list[RunSlotCreate],
        dispatches: list[JobDispatched],
        *,
        reason: str,
        expected_run_id: str | None = None,
    ) -> RunPublic | None:
        """Make `run` the job's current run and send each agent its share (`dispatches`).

        Idempotent: None when the job's current run is no longer `expected_run_id`.
        """
        return await self._add_run(
            job_id, run, slots, dispatches, reason=reason, expected_run_id=expected_run_id
        )

    async def replace_run(
        self,
        job_id: str,
        previous: RunPublic,
        run: RunCreate,
        slots: list[RunSlotCreate],
        dispatches: list[JobDispatched],
        *,
        reason: str,
    ) -> RunPublic | None:
        """End `previous` (a stop request to each of its agents) and make `run` the job's
        current run, in one transaction; the job keeps its state and round.

        Idempotent: None when `previous` is no longer the job's current run.
        """
        stops = stop_requests(
            previous, self._store.list_slots(previous.run_id), f"replaced by run {run.run_id}"
        )
        return await self._add_run(
            job_id,
            run,
            slots,
            dispatches,
            reason=reason,
            expected_run_id=previous.run_id,
            first=stops,
        )

    async def _add_run(
        self,
        job_id: str,
        run: RunCreate,
        slots: list[RunSlotCreate],
        dispatches: list[JobDispatched],
        *,
        reason: str,
        expected_run_id: str | None,
        first: list[RunStopRequested] | None = None,
    ) -> RunPublic | None:
        job = self._store.get_job(job_id)
        if job is None or job.state.is_terminal:
            return None
        after = job.model_copy(update={"run_id": run.run_id, "reason": reason})
        views = [RunSlotPublic.model_validate(slot) for slot in slots]
        progress = JobProgress(job_id=job_id, snapshot=self.snapshot(after, views))
        stored = self._store.add_run(
            run,
            slots,
            expected_run_id=expected_run_id,
            job_update=JobUpdate(reason=reason, below_min_since=None),
            outbox=[*(first or []), *dispatches, progress],
        )
        await self._outbox.flush()
        return stored

    def mark_below_min(self, job_id: str, since: datetime | None) -> None:
        """Remember since when the job's run has too few live workers (None: not any more)."""
        job = self._store.get_job(job_id)
        if job is None or job.below_min_since == since:
            return
        self._store.update_job(
            job_id,
            JobUpdate(below_min_since=since),
            expected_state=job.state,
            at=self._clock(),
        )


def stop_requests(
    run: RunPublic, slots: list[RunSlotPublic], reason: str
) -> list[RunStopRequested]:
    """One request to each agent of `run` (its FL server's and its slots') to kill the run."""
    agents = sorted({run.server_agent_id, *(slot.agent_id for slot in slots)})
    return [
        RunStopRequested(job_id=run.job_id, agent_id=agent_id, run_id=run.run_id, reason=reason)
        for agent_id in agents
    ]


def _apply(slots: list[RunSlotPublic], updates: Mapping[int, RunSlotUpdate]) -> list[RunSlotPublic]:
    """The slots as they will be after `updates`."""
    return [
        slot.model_copy(update=updates[slot.slot].model_dump(exclude_unset=True))
        if slot.slot in updates
        else slot
        for slot in slots
    ]


def _visible(snapshot: JobSnapshot) -> JobSnapshot:
    """The snapshot without heartbeat times: those change every beat and are not progress."""
    return snapshot.model_copy(
        update={"slots": [s.model_copy(update={"last_heartbeat_at": None}) for s in snapshot.slots]}
    )
