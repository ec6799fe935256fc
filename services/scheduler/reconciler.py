"""The reconciler: every second (or at once when woken) it makes time-based decisions.

- publishes what the outbox still holds (events whose publish failed);
- runs the placement pass for queued jobs;
- enforces the limits: placement wait, FL server start, rounds without progress;
- watches the workers of live runs: a silent agent's slots turn Disconnected (and back to
  Connected if the agent returns still running its client); a RUNNING job below `min_clients`
  (or without its FL server's agent) for longer than `below_min_clients_grace_s` is handed to
  `_replace_or_fail`.
"""

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from rondo.contracts.events import FailureCause
from rondo.contracts.states import JobState, SlotStatus
from rondo.scheduler.failures import HINTS
from rondo.scheduler.models import JobPublic, RunPublic, RunSlotPublic, RunSlotUpdate
from rondo.scheduler.state_machine import FailureReport

if TYPE_CHECKING:
    from rondo.scheduler.service import Scheduler

logger = logging.getLogger(__name__)

_ALIVE = frozenset({SlotStatus.ASSIGNED, SlotStatus.CONNECTED})
LOST_WORKER_HINT = (
    "a worker host stopped sending heartbeats: check that its worker-agent runs, then resubmit"
)
NO_PLACEMENT_HINT = "add or free workers that match the job's GPU needs, or relax them"


def _elapsed(since: datetime, now: datetime) -> float:
    return (now - since).total_seconds()


class Reconciler:
    def __init__(self, scheduler: "Scheduler") -> None:
        self._scheduler = scheduler
        self._settings = scheduler.settings
        self._store = scheduler.store
        self._machine = scheduler.machine
        self._registry = scheduler.registry

    async def run(self) -> None:
        """Tick forever, every `reconcile_interval_s` or sooner when the scheduler wakes it."""
        wake = self._scheduler.wake
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=self._settings.reconcile_interval_s)
            wake.clear()
            try:
                await self.tick()
            except Exception:
                logger.exception("reconciler tick failed")

    async def tick(self) -> None:
        await self._scheduler.outbox.flush()
        await self._scheduler.place_pending()
        async with self._scheduler.lock:
            await self.enforce_limits()
            await self.watch_workers()

    # --- Limits ------------------------------------------------------------------------------

    async def enforce_limits(self) -> None:
        """Fail jobs that waited too long, naming what they waited for."""
        now = self._scheduler.clock()
        settings = self._settings
        for job in self._store.list_jobs([JobState.PENDING, JobState.RUNNING]):
            if job.state == JobState.PENDING and job.run_id is None:
                if _elapsed(job.submitted_at, now) > settings.placement_wait_s:
                    waited = job.reason or "waiting for workers"
                    message = f"no placement within {settings.placement_wait_s:.0f} s: {waited}"
                    report = FailureReport(message, FailureCause.OTHER, NO_PLACEMENT_HINT)
                    await self._machine.fail(job.job_id, report)
            elif job.state == JobState.PENDING:
                run = self._store.get_run(job.run_id) if job.run_id else None
                if run is not None and _elapsed(run.created_at, now) > settings.server_start_s:
                    missing = self._not_ready(run)
                    message = (
                        f"the run did not start within {settings.server_start_s:.0f} s; "
                        f"still waiting for {missing}"
                    )
                    await self._machine.fail(job.job_id, _timeout(message))
            elif _elapsed(job.progressed_at, now) > settings.round_progress_s:
                message = (
                    f"no round completed within {settings.round_progress_s:.0f} s "
                    f"(after {job.current_round} of {job.num_rounds} rounds)"
                )
                await self._machine.fail(job.job_id, _timeout(message))

    def _not_ready(self, run: RunPublic) -> str:
        waiting = []
        if run.server_ready_at is None:
            waiting.append(f"the FL server on {run.server_agent_id}")
        waiting += [
            f"worker {slot.slot} ({slot.site_name} on {slot.agent_id})"
            for slot in self._store.list_slots(run.run_id)
            if slot.status != SlotStatus.CONNECTED
        ]
        return ", ".join(waiting) or "the NVFlare job to be deployed to every worker"

    # --- Lost workers ------------------------------------------------------------------------

    async def watch_workers(self) -> None:
        now = self._scheduler.clock()
        for run in self._store.list_active_runs():
            job = self._store.get_job(run.job_id)
            if job is None or job.state.is_terminal or job.run_id != run.run_id:
                continue
            timing = job.submitted.timing
            slots = self._store.list_slots(run.run_id)
            updates = self._liveness_updates(run, slots, timing.worker_lost_after_s)
            if updates:
                await self._machine.progress(job.job_id, slot_updates=updates)
                slots = self._store.list_slots(run.run_id)
            if job.state != JobState.RUNNING:
                continue  # a run that has not started is bounded by the server start limit

            server_lost = self._registry.is_lost(run.server_agent_id, timing.worker_lost_after_s)
            alive = sum(slot.status in _ALIVE for slot in slots)
            min_clients = job.submitted.config.min_clients or len(slots)
            if not server_lost and alive >= min_clients:
                self._machine.mark_below_min(job.job_id, None)
                continue
            since = job.below_min_since or now
            self._machine.mark_below_min(job.job_id, since)
            if _elapsed(since, now) > timing.below_min_clients_grace_s:
                lost = [slot for slot in slots if slot.status not in _ALIVE]
                await self._replace_or_fail(job, run, lost, server_lost, min_clients)

    def _liveness_updates(
        self, run: RunPublic, slots: list[RunSlotPublic], lost_after_s: float
    ) -> dict[int, RunSlotUpdate]:
        """Slots whose agent went silent -> Disconnected; back to Connected if it returned
        still running this run's client."""
        updates: dict[int, RunSlotUpdate] = {}
        for slot in slots:
            lost = self._registry.is_lost(slot.agent_id, lost_after_s)
            if lost and slot.status in _ALIVE:
                updates[slot.slot] = RunSlotUpdate(status=SlotStatus.DISCONNECTED)
            elif not lost and slot.status == SlotStatus.DISCONNECTED:
                running = self._registry.running(slot.agent_id)
                if any(
                    process.run_id == run.run_id and process.site_name == slot.site_name
                    for process in running
                ):
                    updates[slot.slot] = RunSlotUpdate(status=SlotStatus.CONNECTED)
        return updates

    async def _replace_or_fail(
        self,
        job: JobPublic,
        run: RunPublic,
        lost: list[RunSlotPublic],
        server_lost: bool,
        min_clients: int,
    ) -> None:
        """The job stayed below `min_clients` past its grace period.

        Replacement goes here: abort this run and create the next one on other slots from the
        last completed round's checkpoint (`Dispatcher.create_run` with the lost slots'
        next `generations`, `start_round=job.current_round` and the checkpoint key), through
        `JobStateMachine.start_run(..., expected_run_id=run.run_id)`. Until then the job fails,
        naming the lost workers.
        """
        parts = [f"worker {s.slot} ({s.site_name} on {s.agent_id})" for s in lost]
        if server_lost:
            parts.insert(0, f"the FL server on {run.server_agent_id}")
        grace = job.submitted.timing.below_min_clients_grace_s
        alive = len(self._store.list_slots(run.run_id)) - len(lost)
        below = f"{alive} of min_clients {min_clients} workers left" if alive < min_clients else ""
        message = f"lost {', '.join(parts)} for more than {grace:.0f} s" + (
            f" ({below})" if below else ""
        )
        await self._machine.fail(
            job.job_id, FailureReport(message, FailureCause.WORKER_TIMEOUT, LOST_WORKER_HINT)
        )


def _timeout(message: str) -> FailureReport:
    cause = FailureCause.WORKER_TIMEOUT
    return FailureReport(message, cause, HINTS[cause])
