"""Replacing lost workers: the next NVFlare run of a RUNNING job, resumed from its checkpoint.

A worker is lost when its agent goes silent (`Timing.worker_lost_after_s`), when its agent was
restarted without it, or when its NVFlare client exits unasked (a crash, counted in Errors).
NVFlare cannot take a worker back into a running job (a same-name client re-registers but never
rejoins, and the job hangs), so the scheduler starts the job's next run:

1. `plan` (under the scheduler's lock): kept slots stay where they are; a lost slot goes back
   to its own device when that agent is still trusted and the device is free, else to a free
   slot elsewhere; the FL server stays unless it was lost (its agent, or its process
   crashed: then it may land on the same agent). Lost slots get the next
   generation, hence new site names.
2. `carry_out` (outside the lock: it waits for S3 and provisioning): the resume point is the
   last completed round's checkpoint in the user's bucket, or an earlier one
   (`rondo.scheduler.checkpoints`); the run is provisioned and uploaded. Then, under the lock
   and in one transaction, the old run ends (a stop request to each of its agents) and the new
   one becomes the job's current run (a dispatch to each of its agents). The job keeps its id,
   stays RUNNING with the reason "replacing worker n", and resumes at the next round.

A slot, or the FL server, replaced `max_replacements_per_slot` times that is lost again fails
the job.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rondo.contracts.events import FailureCause
from rondo.contracts.states import SlotStatus
from rondo.scheduler.models import JobPublic, RunPublic, RunSlotPublic
from rondo.scheduler.placement import (
    Placement,
    PlacementRequest,
    SlotChoice,
    Waiting,
    place_replacement,
)
from rondo.scheduler.state_machine import FailureReport

if TYPE_CHECKING:
    from rondo.scheduler.service import Scheduler

logger = logging.getLogger(__name__)

# Failures a new run would repeat: the job fails at once instead of being replaced.
USER_ERRORS = frozenset(
    {
        FailureCause.NAME_NOT_DEFINED,
        FailureCause.MANIFEST_MISSING,
        FailureCause.MISSING_FILE,
        FailureCause.VALIDATION,
    }
)
LOST_WORKER_HINT = (
    "a worker host stopped sending heartbeats: check that its worker-agent runs, then resubmit"
)
# Slot states that mean the slot's worker is gone.
LOST_STATES = frozenset({SlotStatus.DISCONNECTED, SlotStatus.ERROR})


@dataclass(frozen=True)
class Replacement:
    """A planned next run of `job`, replacing its current `run`."""

    job: JobPublic
    run: RunPublic
    placement: Placement
    generations: dict[int, int]  # slot -> generation; lost slots get the next one
    server_generation: int  # the run's; one more than before when the FL server was lost
    reason: str


@dataclass(frozen=True)
class Exhausted:
    """A lost slot was replaced too often already: the job fails with `report`."""

    report: FailureReport


def describe_slot(slot: RunSlotPublic) -> str:
    return f"worker {slot.slot} ({slot.site_name} on {slot.agent_id})"


def replacing_reason(lost: Sequence[RunSlotPublic], server_lost: bool) -> str:
    """E.g. 'replacing worker 2', 'replacing the FL server and worker 0'."""
    parts = (["the FL server"] if server_lost else []) + [f"worker {s.slot}" for s in lost]
    if len(parts) > 1:
        return f"replacing {', '.join(parts[:-1])} and {parts[-1]}"
    return f"replacing {parts[0]}"


def _choice(slot: RunSlotPublic) -> SlotChoice:
    return SlotChoice(
        slot=slot.slot, agent_id=slot.agent_id, device_index=slot.device_index, device=slot.device
    )


class Replacer:
    """Plans and starts replacement runs for the scheduler's reconciler."""

    def __init__(self, scheduler: "Scheduler") -> None:
        self._scheduler = scheduler
        self._settings = scheduler.settings
        self._registry = scheduler.registry
        self._machine = scheduler.machine

    def plan(
        self,
        job: JobPublic,
        run: RunPublic,
        slots: list[RunSlotPublic],
        lost: list[RunSlotPublic],
        server_lost: bool,
    ) -> Replacement | Waiting | Exhausted:
        """The next run of `job` without its `lost` slots (and server), if it can be placed
        now on trusted agents; `Waiting` says what is missing. Call under the lock."""
        limit = self._settings.max_replacements_per_slot
        worn = [(describe_slot(slot), slot.error) for slot in lost if slot.generation >= limit]
        if server_lost and run.server_generation >= limit:
            worn.insert(0, (f"the FL server on {run.server_agent_id}", run.server_error))
        if worn:
            return Exhausted(_exhausted(worn, limit))

        lost_after_s = job.submitted.timing.worker_lost_after_s
        trusted = [
            agent
            for agent in self._scheduler.capacities(freeing=run.run_id)
            if not self._registry.is_lost(agent.agent_id, lost_after_s)
        ]
        lost_slots = {slot.slot for slot in lost}
        decision = place_replacement(
            PlacementRequest(job.job_id, len(slots), job.submitted.gpu),
            kept=[_choice(slot) for slot in slots if slot.slot not in lost_slots],
            lost=[_choice(slot) for slot in lost],
            server_agent_id=None if server_lost else run.server_agent_id,
            agents=trusted,
        )
        if isinstance(decision, Waiting):
            return decision
        generations = {
            slot.slot: slot.generation + 1 if slot.slot in lost_slots else slot.generation
            for slot in slots
        }
        return Replacement(
            job,
            run,
            decision,
            generations,
            run.server_generation + 1 if server_lost else run.server_generation,
            replacing_reason(lost, server_lost),
        )

    async def carry_out(self, replacement: Replacement) -> None:
        """Find the resume point, create the run, then (under the lock) swap it in; a run
        that cannot be created fails the job. Nothing happens if the job moved on."""
        job, placement = replacement.job, replacement.placement
        resume = await asyncio.to_thread(
            self._scheduler.dispatcher.resume_point,
            job.submitted,
            job.current_round,
            self._settings.checkpoint_wait_s,
        )
        created = await self._scheduler.prepare_run(
            job, placement, generations=replacement.generations, resume=resume
        )
        async with self._scheduler.lock:
            if isinstance(created, FailureReport):
                await self._machine.fail(job.job_id, created)
                return
            run = await self._machine.replace_run(
                job.job_id,
                replacement.run,
                created.run.model_copy(update={"server_generation": replacement.server_generation}),
                created.slots,
                created.dispatches,
                reason=replacement.reason,
            )
        if run is None:
            logger.info("job %s moved on; run %s not started", job.job_id, created.run.run_id)
            return
        logger.info(
            "job %s: %s with run %s from round %d (checkpoint %s) on %s",
            job.job_id,
            replacement.reason,
            run.run_id,
            resume.start_round,
            resume.checkpoint_key or "none",
            ", ".join(placement.agents),
        )


def _exhausted(worn: list[tuple[str, str | None]], limit: int) -> FailureReport:
    """The failure of a job whose lost parts (description, last error) were replaced `limit`
    times already; the first error it has names the cause."""
    names = ", ".join(name for name, _ in worn)
    message = f"lost {names} again after {limit} replacement{'' if limit == 1 else 's'}"
    errors = [error for _, error in worn if error]
    if errors:
        return FailureReport.from_error(f"{message}: {errors[0]}")
    return FailureReport(message, FailureCause.WORKER_TIMEOUT, LOST_WORKER_HINT)
