"""The scheduler service: bus handlers, each a typed function of its event, and the FastStream app.

`Scheduler` holds what the handlers share and reacts to each event; every change of state
happens under one lock, so handlers, the placement pass and the reconciler never interleave.
Handlers are idempotent: a redelivered event, or one of a run that is no longer the job's
current run, changes nothing.
"""

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from functools import partial
from typing import Any

from faststream import FastStream

from rondo.contracts.bus import declare_streams, make_broker, publish, register_health
from rondo.contracts.consumers import DeadLetter, DurableConsumers, RetryLater
from rondo.contracts.events import (
    ALL_EVENTS,
    AgentEvent,
    CancelMode,
    Event,
    FailureCause,
    JobCancelRequested,
    JobError,
    JobFailed,
    JobSnapshot,
    JobStateChanged,
    JobSubmitted,
    ProcessPhase,
    RoundCompleted,
    RunEnded,
    RunProcessChanged,
    RunStarted,
    WorkerHeartbeat,
    utc_now,
)
from rondo.contracts.heartbeats import HeartbeatIntake
from rondo.contracts.states import JobState, SlotStatus
from rondo.contracts.storage import platform_s3_client
from rondo.contracts.subjects import Durables
from rondo.scheduler.checkpoints import ResumePoint
from rondo.scheduler.config import SchedulerSettings
from rondo.scheduler.dispatch import (
    Dispatcher,
    MissingObjectError,
    Provisioner,
    RunCreator,
    RunPlan,
)
from rondo.scheduler.failures import HINTS
from rondo.scheduler.models import JobPublic, RunPublic, RunSlotUpdate, RunUpdate
from rondo.scheduler.outbox import Outbox, Publish
from rondo.scheduler.placement import AgentCapacity, Placement, PlacementRequest, plan
from rondo.scheduler.reconciler import Reconciler
from rondo.scheduler.replacement import USER_ERRORS
from rondo.scheduler.state_machine import Clock, FailureReport, JobStateMachine, short_reason
from rondo.scheduler.store import JobStore, make_store
from rondo.scheduler.workers import WorkerRegistry

logger = logging.getLogger(__name__)

SERVICE = "scheduler"


class Scheduler:
    """The scheduler's state and its reactions to events."""

    def __init__(
        self,
        settings: SchedulerSettings,
        store: JobStore,
        dispatcher: RunCreator,
        publish: Publish,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.registry = WorkerRegistry(store, clock)
        self.publish = publish
        self.outbox = Outbox(store, publish)
        self.machine = JobStateMachine(store, self.outbox, clock, self.registry.last_heard)
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()  # set when placement may have become possible
        # Which agents count as online for placement; each job's own Timing judges its runs.
        self.lost_after_s = settings.worker_lost_after_s

    def health(self) -> dict[str, Any]:
        return self.registry.summary(self.lost_after_s)

    def _current(self, job_id: str, run_id: str) -> tuple[JobPublic, RunPublic] | None:
        """The job and run if `run_id` is the job's live current run, else None (stale)."""
        job = self.store.get_job(job_id)
        if job is None or job.state.is_terminal or job.run_id != run_id:
            logger.debug("ignoring an event of run %s of job %s: not current", run_id, job_id)
            return None
        run = self.store.get_run(run_id)
        return (job, run) if run is not None and run.active else None

    # --- Gateway events ----------------------------------------------------------------------

    async def on_submitted(self, event: JobSubmitted) -> None:
        async with self.lock:
            job = await self.machine.submit(event)
        if job is not None:
            logger.info("job %s submitted by %s", event.job_id, event.user_id)
            self.wake.set()

    async def on_cancel(self, event: JobCancelRequested) -> None:
        """CANCELLED (or, asked to stop a RUNNING job, FINISHED). A job not known yet is
        waited for (its `job.submitted` may be on its way: the event is retried) for
        `UNKNOWN_JOB_CANCEL_WAIT_S`; after that the scheduler never saw it (its submission
        was lost), and it is announced CANCELLED so the gateway ends it and frees its name."""
        async with self.lock:
            job = self.store.get_job(event.job_id)
            if job is None:
                await self._cancel_unknown(event)
                return
            if job.state.is_terminal:
                return
            who = f"by {event.requested_by}"
            if event.mode == CancelMode.STOP and job.state == JobState.RUNNING:
                await self.machine.transition(
                    job.job_id, JobState.FINISHED, reason=f"stopped {who}", stop_reason="stopped"
                )
            else:
                await self.machine.transition(
                    job.job_id, JobState.CANCELLED, reason=f"cancelled {who}", stop_reason="cancel"
                )
        self.wake.set()

    async def _cancel_unknown(self, event: JobCancelRequested) -> None:
        waited_s = (self.clock() - event.occurred_at).total_seconds()
        if waited_s < UNKNOWN_JOB_CANCEL_WAIT_S:
            raise JobNotKnownYet(f"job {event.job_id} to cancel is not known yet")
        snapshot = JobSnapshot(
            state=JobState.CANCELLED,
            reason=f"cancelled by {event.requested_by}; the scheduler never received the job",
            num_rounds=0,
        )
        await self.publish(
            JobStateChanged(
                event_id=f"{event.event_id}.unknown",
                job_id=event.job_id,
                previous_state=JobState.PENDING,
                snapshot=snapshot,
            )
        )
        logger.warning("job %s cancelled without ever being received", event.job_id)

    # --- Dead letters ------------------------------------------------------------------------

    async def on_dead_letter(self, letter: DeadLetter) -> None:
        """An event about a job that some consumer could never handle (it fails validation,
        or its handler refused it for good) fails the job visibly: FAILED, cause `other`, the
        message naming the event's subject and the error. A job the scheduler never stored (its
        own `job.submitted` was the poison) is failed by announcing it so. Letters about no
        job, or about a job that already ended, are only logged; so are those of an agent's
        event about a job that agent has no part in (an agent cannot fail others' jobs by
        sending malformed events about them)."""
        if letter.job_id is None:
            logger.error("dead letter of %s about no job: %s", letter.durable, letter.error)
            return
        report = dead_letter_report(letter)
        agent_id = sending_agent(letter.event_subject)
        async with self.lock:
            job = self.store.get_job(letter.job_id)
            if agent_id is not None and (job is None or agent_id not in self._run_agents(job)):
                logger.error(
                    "agent %s sent an unreadable event about job %s, not one of its runs: %s",
                    agent_id, letter.job_id, report.message,
                )  # fmt: skip
                return
            if job is None:
                await self._announce_failed(letter.job_id, report, _payload_of(letter))
            elif job.state.is_terminal:
                logger.warning("job %s already %s: %s", job.job_id, job.state, report.message)
            else:
                await self.machine.fail(job.job_id, report)
        self.wake.set()

    def _run_agents(self, job: JobPublic) -> set[str]:
        """The agents taking part in the job's current run (its FL server's and slots')."""
        run = self.store.get_run(job.run_id) if job.run_id else None
        if run is None:
            return set()
        return {run.server_agent_id} | {slot.agent_id for slot in self.machine.slots(job)}

    async def _announce_failed(
        self, job_id: str, report: FailureReport, payload: dict[str, Any]
    ) -> None:
        """FAILED for a job not in the store: the gateway, which stored it PENDING, shows the
        failure and frees its name. Ids derive from the job, so a second letter about it is
        stored once (JetStream de-duplication)."""
        error = JobError(message=report.message, cause=report.cause, hint=report.hint)
        config = payload.get("config")
        num_rounds = config.get("num_rounds") if isinstance(config, dict) else None
        snapshot = JobSnapshot(
            state=JobState.FAILED,
            reason=short_reason(report.message),
            num_rounds=num_rounds if isinstance(num_rounds, int) else 0,
            error=error,
        )
        location = {key: payload.get(key) for key in ("bucket", "prefix")}
        events: list[Event] = [
            JobStateChanged(
                event_id=f"deadletter.{job_id}.state",
                job_id=job_id,
                previous_state=JobState.PENDING,
                snapshot=snapshot,
            ),
            JobFailed(
                event_id=f"deadletter.{job_id}.failed",
                job_id=job_id,
                bucket=location["bucket"] if isinstance(location["bucket"], str) else "",
                prefix=location["prefix"] if isinstance(location["prefix"], str) else "",
                message=report.message,
                cause=report.cause,
                hint=report.hint,
            ),
        ]
        for event in events:
            await self.publish(event)
        logger.warning("job %s (never stored) failed: %s", job_id, report.message)

    # --- Run events --------------------------------------------------------------------------

    async def on_process(self, event: RunProcessChanged) -> None:
        async with self.lock:
            found = self._current(event.job_id, event.run_id)
            if found is None:
                return
            job, run = found
            if event.role == "server":
                await self._on_server_process(job, run, event)
            else:
                await self._on_client_process(job, event)

    async def _on_server_process(
        self, job: JobPublic, run: RunPublic, event: RunProcessChanged
    ) -> None:
        if event.phase == ProcessPhase.READY and run.server_ready_at is None:
            self.store.update_run(run.run_id, RunUpdate(server_ready_at=self.clock()))
            await self._running_once_all_connected(job)
        elif event.phase == ProcessPhase.EXITED and not event.expected:
            message = event.error or (
                f"the FL server on {event.agent_id} exited with code {event.exit_code}"
            )
            report = FailureReport.from_error(message)
            if self._server_replaceable(job, run, report):
                # The reconciler replaces it like a lost server agent's (or fails the job once
                # the server was replaced too often, quoting `server_error`).
                crash = RunUpdate(server_exited_at=self.clock(), server_error=message)
                self.store.update_run(run.run_id, crash)
                self.wake.set()
                return
            await self.machine.fail(job.job_id, report)

    async def _on_client_process(self, job: JobPublic, event: RunProcessChanged) -> None:
        slot = self._slot_number(job, event)
        if slot is None:
            return
        if event.phase == ProcessPhase.READY:
            update = RunSlotUpdate(status=SlotStatus.CONNECTED, error=None)
            await self.machine.progress(job.job_id, slot_updates={slot: update})
            await self._running_once_all_connected(job)
        elif event.phase == ProcessPhase.EXITED and event.expected:
            done = RunSlotUpdate(status=SlotStatus.DONE)
            await self.machine.progress(job.job_id, slot_updates={slot: done})
        elif event.phase == ProcessPhase.EXITED:
            crashed = bool(event.error) or event.exit_code not in (0, None)
            status = SlotStatus.ERROR if crashed else SlotStatus.DISCONNECTED
            # The agent's error text is the job's message as is (e.g. a rejected shard).
            message = event.error or (
                f"worker {slot} ({event.site_name}) on {event.agent_id} exited with code "
                f"{event.exit_code}"
            )
            report = FailureReport.from_error(message)
            replaceable = self._replaceable(job, slot, report)
            update = RunSlotUpdate(status=status, error=event.error)
            await self.machine.progress(job.job_id, slot_updates={slot: update})
            if crashed and not replaceable:
                await self.machine.fail(job.job_id, report)
            else:
                # The reconciler replaces the worker (or fails the job once it stayed below
                # min_clients for the grace period with no replacement possible).
                self.wake.set()

    def _replaceable(self, job: JobPublic, slot: int, report: FailureReport) -> bool:
        """Whether a worker that exited unasked is replaced rather than failing the job: it
        was training (connected in a RUNNING job) and its error is not the user's to fix.
        A process that never got ready failed in a way a new run would repeat."""
        status = next(s.status for s in self.machine.slots(job) if s.slot == slot)
        return (
            job.state == JobState.RUNNING
            and status == SlotStatus.CONNECTED
            and report.cause not in USER_ERRORS
        )

    def _server_replaceable(self, job: JobPublic, run: RunPublic, report: FailureReport) -> bool:
        """Whether an FL server that exited unasked is replaced rather than failing the job: as
        for a worker, once it was up in a RUNNING job (one that never got up would fail the
        same way again) and for errors not the user's to fix."""
        return (
            job.state == JobState.RUNNING
            and (run.server_ready_at is not None or run.started_at is not None)
            and report.cause not in USER_ERRORS
        )

    def _slot_number(self, job: JobPublic, event: RunProcessChanged) -> int | None:
        """The job's slot the event's site is (its site name is unique within the run)."""
        for slot in self.machine.slots(job):
            if slot.site_name == event.site_name:
                return slot.slot
        logger.warning("job %s: no slot for site %s", job.job_id, event.site_name)
        return None

    async def _running_once_all_connected(self, job: JobPublic) -> None:
        """RUNNING as soon as the FL server is up and every worker is connected (the product's
        definition), without waiting for NVFlare to start its job processes."""
        found = self._current(job.job_id, job.run_id) if job.run_id else None
        if found is None:
            return
        job, run = found
        slots = self.machine.slots(job)
        if run.server_ready_at is not None and all(s.status == SlotStatus.CONNECTED for s in slots):
            await self._ensure_running(job)

    async def _ensure_running(self, job: JobPublic) -> None:
        """RUNNING, every client connected. Consumers run in parallel, so a round or the
        run's end may be handled before RunStarted: either means the run did start."""
        if job.state != JobState.PENDING:
            return
        await self.machine.transition(
            job.job_id, JobState.RUNNING, slot_updates=self._assigned_connected(job)
        )

    def _assigned_connected(self, job: JobPublic) -> dict[int, RunSlotUpdate]:
        """Slots still waiting for their process, marked connected: the run has started."""
        connected = RunSlotUpdate(status=SlotStatus.CONNECTED)
        slots = self.machine.slots(job)
        return {s.slot: connected for s in slots if s.status == SlotStatus.ASSIGNED}

    async def on_run_started(self, event: RunStarted) -> None:
        async with self.lock:
            found = self._current(event.job_id, event.run_id)
            if found is None:
                return
            job, run = found
            if run.started_at is None:
                update = RunUpdate(started_at=self.clock(), nvflare_job_id=event.nvflare_job_id)
                self.store.update_run(run.run_id, update)
            if job.state == JobState.RUNNING:
                # A replacement run started: its workers are in, the replacing is over.
                await self.machine.progress(
                    job.job_id, reason="", slot_updates=self._assigned_connected(job)
                )
            await self._ensure_running(job)

    async def on_round_completed(self, event: RoundCompleted) -> None:
        async with self.lock:
            found = self._current(event.job_id, event.run_id)
            if found is None:
                return
            job, _ = found
            await self._ensure_running(job)
            await self.machine.progress(job.job_id, current_round=event.round + 1)

    async def on_run_ended(self, event: RunEnded) -> None:
        async with self.lock:
            found = self._current(event.job_id, event.run_id)
            if found is None:
                return
            job, _ = found
            if event.completed:
                await self._ensure_running(job)
                await self.machine.progress(job.job_id, current_round=job.num_rounds)
                await self.machine.transition(
                    job.job_id, JobState.FINISHED, stop_reason="run completed"
                )
            else:
                message = event.error or (
                    f"the NVFlare run ended after {job.current_round} of {job.num_rounds} rounds"
                )
                await self.machine.fail(job.job_id, FailureReport.from_error(message))
        self.wake.set()

    # --- Workers -----------------------------------------------------------------------------

    def on_heartbeat(self, event: WorkerHeartbeat) -> None:
        self.on_heartbeats([event])

    def on_heartbeats(self, events: list[WorkerHeartbeat]) -> None:
        if self.registry.observe_all(events, self.lost_after_s):
            self.wake.set()

    # --- Placement ---------------------------------------------------------------------------

    async def place_pending(self) -> None:
        """Place every PENDING job that has no run yet, oldest first; dispatch those that fit."""
        async with self.lock:
            queue = [job for job in self.store.list_jobs([JobState.PENDING]) if not job.run_id]
            if not queue:
                return
            requests = [
                PlacementRequest(job.job_id, len(job.submitted.shard_keys), job.submitted.gpu)
                for job in queue
            ]
            for job, decision in zip(queue, plan(requests, self.capacities()), strict=True):
                if isinstance(decision, Placement):
                    await self._dispatch(job, decision)
                else:
                    await self.machine.progress(job.job_id, reason=decision.reason)

    def capacities(self, *, freeing: str | None = None) -> list[AgentCapacity]:
        """Online agents with the slots and ports that live runs hold on them.

        `freeing` names a run about to be replaced: its slots count as free (its successor
        takes them), its FL server's ports do not (they stay bound until that server ends).
        """
        busy: dict[str, set[int]] = defaultdict(set)
        ports: dict[str, set[int]] = defaultdict(set)
        servers: dict[str, int] = defaultdict(int)
        for slot in self.store.list_active_slots():
            if slot.run_id != freeing:
                busy[slot.agent_id].add(slot.device_index)
        for run in self.store.list_active_runs():
            ports[run.server_agent_id] |= {run.fed_learn_port, run.admin_port}
            servers[run.server_agent_id] += 1
        capacities = []
        for heartbeat in self.registry.online(self.lost_after_s):
            agent_id = heartbeat.agent_id
            # An ended run's FL server that is still shutting down keeps its ports a while.
            for process in heartbeat.running:
                run = self.store.get_run(process.run_id) if process.role == "server" else None
                if run is not None and not run.active:
                    ports[agent_id] |= {run.fed_learn_port, run.admin_port}
            capacities.append(
                AgentCapacity(
                    agent_id=agent_id,
                    host=heartbeat.host,
                    slots=heartbeat.slots,
                    fl_port_range=heartbeat.fl_port_range,
                    busy_slots=frozenset(busy[agent_id]),
                    used_ports=frozenset(ports[agent_id]),
                    server_roles=servers[agent_id],
                )
            )
        return capacities

    async def prepare_run(
        self,
        job: JobPublic,
        placement: Placement,
        *,
        generations: Mapping[int, int] | None = None,
        resume: ResumePoint | None = None,
    ) -> RunPlan | FailureReport:
        """Provision, upload and presign a run of `job` in a worker thread; if that fails,
        the report to fail the job with (a missing shard or checkpoint is named)."""
        agents = {agent_id: self.registry.get(agent_id) for agent_id in placement.agents}
        known = {agent_id: hb for agent_id, hb in agents.items() if hb is not None}
        resume = resume or ResumePoint(start_round=0, checkpoint_key=None)
        create = partial(
            self.dispatcher.create_run,
            job.submitted,
            placement,
            known,
            generations=generations,
            start_round=resume.start_round,
            initial_checkpoint_key=resume.checkpoint_key,
        )
        try:
            return await asyncio.to_thread(create)
        except MissingObjectError as error:
            cause = FailureCause.MISSING_FILE
            return FailureReport(str(error), cause, HINTS[cause])
        except Exception as error:
            logger.exception("job %s: creating its run failed", job.job_id)
            return FailureReport.from_error(f"could not start the job's run: {error}")

    async def _dispatch(self, job: JobPublic, placement: Placement) -> None:
        run_plan = await self.prepare_run(job, placement)
        if isinstance(run_plan, FailureReport):
            await self.machine.fail(job.job_id, run_plan)
            return
        count = len(run_plan.slots)
        reason = f"starting the FL server and {count} worker{'s' if count != 1 else ''}"
        run = await self.machine.start_run(
            job.job_id, run_plan.run, run_plan.slots, run_plan.dispatches, reason=reason
        )
        if run is None:
            logger.warning(
                "job %s moved on, or another scheduler took its slots, while run %s was created",
                job.job_id,
                run_plan.run.run_id,
            )
        else:
            logger.info(
                "job %s: run %s on %s (server %s:%d)",
                job.job_id,
                run.run_id,
                ", ".join(placement.agents),
                run.server_host,
                run.fed_learn_port,
            )


# How long a cancel of a job the scheduler does not know waits for the job's submission.
UNKNOWN_JOB_CANCEL_WAIT_S = 300.0


class JobNotKnownYet(RetryLater):
    """An event about a job whose `job.submitted` has not arrived (yet)."""


DEAD_LETTER_HINT = (
    "an event of this job was malformed and set aside; the operator can read it on "
    "the dead-letter stream (rondo.deadletter.*)"
)


def dead_letter_report(letter: DeadLetter) -> FailureReport:
    """Why a dead letter fails its job: the event's subject, who set it aside, and why."""
    message = (
        f"the event {letter.event_subject} of this job could not be handled "
        f"({letter.durable}): {letter.error}"
    )
    return FailureReport(message, FailureCause.OTHER, DEAD_LETTER_HINT)


# Events whose subject names the agent that sent it (`rondo.run.{agent_id}.started`).
AGENT_EVENTS = tuple(event for event in ALL_EVENTS if issubclass(event, AgentEvent))


def sending_agent(subject: str) -> str | None:
    """The agent an agent event's subject names, or None for another sender's subject."""
    tokens = subject.split(".")
    for event in AGENT_EVENTS:
        template = event.SUBJECT.split(".")
        if len(template) == len(tokens) and all(
            part.startswith("{") or part == token
            for part, token in zip(template, tokens, strict=True)
        ):
            return tokens[template.index("{agent_id}")]
    return None


def _payload_of(letter: DeadLetter) -> dict[str, Any]:
    try:
        payload = json.loads(letter.payload)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def register_handlers(consumers: DurableConsumers, scheduler: Scheduler) -> None:
    """Subscribe the scheduler: durable consumers of RONDO_JOBS, and of the dead letters of
    every service (heartbeats come in through `HeartbeatIntake`)."""
    consumers(JobSubmitted, Durables.SCHEDULER_SUBMITTED)(scheduler.on_submitted)
    consumers(JobCancelRequested, Durables.SCHEDULER_CANCEL)(scheduler.on_cancel)
    consumers(RunProcessChanged, Durables.SCHEDULER_RUN_PROCESS)(scheduler.on_process)
    consumers(RunStarted, Durables.SCHEDULER_RUN_STARTED)(scheduler.on_run_started)
    consumers(RoundCompleted, Durables.SCHEDULER_ROUNDS)(scheduler.on_round_completed)
    consumers(RunEnded, Durables.SCHEDULER_RUN_ENDED)(scheduler.on_run_ended)
    consumers(DeadLetter, Durables.SCHEDULER_DEAD_LETTERS)(scheduler.on_dead_letter)


def build_app(
    settings: SchedulerSettings,
    *,
    provisioner: Provisioner | None = None,
    clock: Clock = utc_now,
) -> tuple[FastStream, Scheduler]:
    """The scheduler as a FastStream app; starting the app starts the reconciler too."""
    broker = make_broker(settings, SERVICE)
    store = make_store(settings.sqlalchemy_url)
    dispatcher = Dispatcher(
        platform_s3_client(settings),
        settings.platform_bucket,
        settings.work_dir,
        clock,
        provisioner=provisioner,
        spare_sites_per_slot=settings.spare_sites_per_slot,
    )
    scheduler = Scheduler(settings, store, dispatcher, partial(publish, broker), clock)
    reconciler = Reconciler(scheduler)
    register_handlers(DurableConsumers(broker, settings), scheduler)
    register_health(broker, SERVICE, scheduler.health)
    tasks: list[asyncio.Task[None]] = []

    async def connect_and_declare() -> None:
        restored = scheduler.registry.restore()
        logger.info("scheduler starting; %d known workers restored", restored)
        await broker.connect()
        await declare_streams(
            broker, settings.nats_stream_replicas, settings.nats_staging_max_age_s
        )

    async def start_reconciler() -> None:
        tasks.append(asyncio.create_task(reconciler.run(), name="scheduler-reconciler"))

    async def stop_reconciler() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()

    async def start_heartbeats() -> None:
        await heartbeats.start(broker.connection)

    heartbeats = HeartbeatIntake(scheduler.on_heartbeats)
    app = FastStream(
        broker,
        on_startup=[connect_and_declare],
        after_startup=[start_reconciler, start_heartbeats],
        on_shutdown=[heartbeats.stop, stop_reconciler],
    )
    return app, scheduler
