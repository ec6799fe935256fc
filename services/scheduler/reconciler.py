"""The reconciler: every second (or at once when woken) it makes time-based decisions.

- publishes what the outbox still holds (events whose publish failed);
- runs the placement pass for queued jobs;
- enforces the limits: placement wait, FL server start (of a job's first run and of each
  replacement run), rounds without progress;
- watches the workers of live runs: a slot turns Disconnected when its agent goes silent or
  was restarted without it (and back to Connected if a silent agent returns still running it).
  A RUNNING job that lost a worker or its FL server gets a replacement run at once
  (`rondo.scheduler.replacement`); while none can be placed it keeps running if at least
  `min_clients` workers (and its FL server) remain, and fails, naming the lost workers, once
  it stayed below that for longer than `below_min_clients_grace_s`.
"""

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from rondo.contracts.events import FailureCause
from rondo.contracts.layout import SERVER_SITE
from rondo.contracts.states import JobState, SlotStatus
from rondo.scheduler.failures import HINTS
from rondo.scheduler.models import JobPublic, RunPublic, RunSlotPublic, RunSlotUpdate
from rondo.scheduler.placement import Waiting
from rondo.scheduler.replacement import (
    LOST_STATES,
    LOST_WORKER_HINT,
    Exhausted,
    Replacement,
    Replacer,
    describe_slot,
    replacing_reason,
)
from rondo.scheduler.state_machine import FailureReport

if TYPE_CHECKING:
    from rondo.scheduler.service import Scheduler

logger = logging.getLogger(__name__)

_ALIVE = frozenset({SlotStatus.ASSIGNED, SlotStatus.CONNECTED})
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
        self._replacer = Replacer(scheduler)

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
            replacements = await self.watch_workers()
        # Creating a run waits for S3 and provisioning: not while holding the lock.
        for replacement in replacements:
            await self._replacer.carry_out(replacement)

    # --- Limits ------------------------------------------------------------------------------

    async def enforce_limits(self) -> None:
        """Fail jobs that waited too long, naming what they waited for."""
        now = self._scheduler.clock()
        settings = self._settings
        for job in self._store.list_jobs([JobState.PENDING, JobState.RUNNING]):
            run = self._store.get_run(job.run_id) if job.run_id else None
            if job.state == JobState.PENDING and run is None:
                if _elapsed(job.submitted_at, now) > settings.placement_wait_s:
                    waited = job.reason or "waiting for workers"
                    message = f"no placement within {settings.placement_wait_s:.0f} s: {waited}"
                    report = FailureReport(message, FailureCause.OTHER, NO_PLACEMENT_HINT)
                    await self._machine.fail(job.job_id, report)
            elif run is not None and self._start_overdue(job, run, now):
                replacing = job.state == JobState.RUNNING and run.created_at >= job.state_since
                which = "the replacement run" if replacing else "the run"
                message = (
                    f"{which} did not start within {settings.server_start_s:.0f} s; "
                    f"still waiting for {self._not_ready(run)}"
                )
                await self._machine.fail(job.job_id, _timeout(message))
            elif job.state == JobState.RUNNING and (
                _elapsed(job.progressed_at, now) > settings.round_progress_s
            ):
                message = (
                    f"no round completed within {settings.round_progress_s:.0f} s "
                    f"(after {job.current_round} of {job.num_rounds} rounds)"
                )
                await self._machine.fail(job.job_id, _timeout(message))

    def _start_overdue(self, job: JobPublic, run: RunPublic, now: datetime) -> bool:
        """The job's first run, or a replacement run (one created after the job became
        RUNNING), has not started within the server start limit."""
        # A job turns RUNNING once every process is connected, before NVFlare reports the
        # run started: until then the start limit still applies.
        starting = job.state == JobState.PENDING or run.started_at is None
        return starting and _elapsed(run.created_at, now) > self._settings.server_start_s

    def _not_ready(self, run: RunPublic) -> str:
        waiting = []
        if run.server_ready_at is None:
            waiting.append(f"the FL server on {run.server_agent_id}")
        waiting += [
            describe_slot(slot)
            for slot in self._store.list_slots(run.run_id)
            if slot.status != SlotStatus.CONNECTED
        ]
        return ", ".join(waiting) or "the NVFlare job to be deployed to every worker"

    # --- Lost workers ------------------------------------------------------------------------

    async def watch_workers(self) -> list[Replacement]:
        """Bring the slots of live runs up to date with the heartbeats; returns the
        replacement runs to start (call under the scheduler's lock)."""
        replacements: list[Replacement] = []
        for run in self._store.list_active_runs():
            job = self._store.get_job(run.job_id)
            if job is None or job.state.is_terminal or job.run_id != run.run_id:
                continue
            lost_after_s = job.submitted.timing.worker_lost_after_s
            slots = self._store.list_slots(run.run_id)
            updates = self._liveness_updates(run, slots, lost_after_s)
            if updates:
                await self._machine.progress(job.job_id, slot_updates=updates)
                slots = self._store.list_slots(run.run_id)
            if job.state != JobState.RUNNING:
                continue  # a run that has not started is bounded by the server start limit

            server_lost = run.server_exited_at is not None or self._gone(
                run, run.server_agent_id, SERVER_SITE, lost_after_s
            )
            lost = [slot for slot in slots if slot.status in LOST_STATES]
            if not lost and not server_lost:
                self._machine.mark_below_min(job.job_id, None)
                if run.started_at is not None and job.reason:
                    # Recovered without a replacement (a silent agent came back in time).
                    await self._machine.progress(job.job_id, reason="")
                continue
            if job.current_round >= job.num_rounds:
                # Every round is done (its end was not heard): nothing is left to replace for.
                await self._machine.transition(
                    job.job_id, JobState.FINISHED, stop_reason="every round completed"
                )
                continue
            decision = self._replacer.plan(job, run, slots, lost, server_lost)
            if isinstance(decision, Replacement):
                replacements.append(decision)
            elif isinstance(decision, Exhausted):
                await self._machine.fail(job.job_id, decision.report)
            else:
                await self._wait_for_replacement(job, run, slots, lost, server_lost, decision)
        return replacements

    async def _wait_for_replacement(
        self,
        job: JobPublic,
        run: RunPublic,
        slots: list[RunSlotPublic],
        lost: list[RunSlotPublic],
        server_lost: bool,
        waiting: Waiting,
    ) -> None:
        """No replacement can be placed now: say why; fail the job once it stayed below
        `min_clients` (or without its FL server) for longer than the grace period."""
        await self._machine.progress(
            job.job_id, reason=f"{replacing_reason(lost, server_lost)}: {waiting.reason}"
        )
        alive = sum(slot.status in _ALIVE for slot in slots)
        min_clients = job.submitted.config.required_clients(len(slots))
        if not server_lost and alive >= min_clients:
            self._machine.mark_below_min(job.job_id, None)
            return
        now = self._scheduler.clock()
        since = job.below_min_since or now
        self._machine.mark_below_min(job.job_id, since)
        grace = job.submitted.timing.below_min_clients_grace_s
        if _elapsed(since, now) <= grace:
            return
        parts = [describe_slot(slot) for slot in lost]
        if server_lost:
            parts.insert(0, f"the FL server on {run.server_agent_id}")
        message = f"lost {', '.join(parts)} for more than {grace:.0f} s"
        if alive < min_clients:
            message += f" ({alive} of min_clients {min_clients} workers left)"
        await self._machine.fail(
            job.job_id, FailureReport(message, FailureCause.WORKER_TIMEOUT, LOST_WORKER_HINT)
        )

    def _liveness_updates(
        self, run: RunPublic, slots: list[RunSlotPublic], lost_after_s: float
    ) -> dict[int, RunSlotUpdate]:
        """Slots whose worker is gone -> Disconnected; back to Connected if its silent agent
        returned still running this run's client."""
        updates: dict[int, RunSlotUpdate] = {}
        for slot in slots:
            gone = self._gone(run, slot.agent_id, slot.site_name, lost_after_s)
            if gone and slot.status in _ALIVE:
                updates[slot.slot] = RunSlotUpdate(status=SlotStatus.DISCONNECTED)
            elif (
                not gone
                and slot.status == SlotStatus.DISCONNECTED
                and self._runs(slot.agent_id, run, slot.site_name)
            ):
                updates[slot.slot] = RunSlotUpdate(status=SlotStatus.CONNECTED)
        return updates

    def _gone(self, run: RunPublic, agent_id: str, site_name: str, lost_after_s: float) -> bool:
        """The agent is silent, or was restarted since the run began and does not run the
        process (a restarted agent ends whatever its previous life started)."""
        if self._registry.is_lost(agent_id, lost_after_s):
            return True
        restarted = self._registry.restarted_since(agent_id, run.created_at)
        return restarted and not self._runs(agent_id, run, site_name)

    def _runs(self, agent_id: str, run: RunPublic, site_name: str) -> bool:
        """Whether the agent's last heartbeat lists the run's process `site_name`."""
        return any(
            process.run_id == run.run_id and process.site_name == site_name
            for process in self._registry.running(agent_id)
        )


def _timeout(message: str) -> FailureReport:
    cause = FailureCause.WORKER_TIMEOUT
    return FailureReport(message, cause, HINTS[cause])
