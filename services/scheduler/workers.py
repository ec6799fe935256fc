"""The worker registry: which worker-agents are alive, built from their core-NATS heartbeats.

A worker is online while it was heard within `Timing.worker_lost_after_s`. What an agent said
last is stored, so a restarted scheduler knows the fleet at once: each known agent gets one
lost-after period from the restart to be heard again before it counts as lost, and is offered
to placement only once a fresh heartbeat arrived.

An agent process that restarts sends a new `started_at`; the registry notes (on its own clock,
so hosts' clocks never matter) when it first heard that new life.

Heartbeats are frequent (thousands a second on a large fleet), so the registry keeps them in
memory and writes to the store only what a restarted scheduler needs: a new agent, a change of
its identity (host, ports, life, slot hardware), and otherwise at most every `PERSIST_EVERY_S`.
Free memory moves with every beat; it is kept in memory only and read by the next placement
pass (the reconciler's tick) without waking it.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from rondo.contracts.clock import Clock
from rondo.contracts.events import RunningProcess, WorkerHeartbeat
from rondo.scheduler.models import WorkerCreate
from rondo.scheduler.store import JobStore

logger = logging.getLogger(__name__)


# An unchanged heartbeat is written to the database at most this often.
PERSIST_EVERY_S = 30.0


# What a restored agent's current life began at, as far as this scheduler knows: long ago.
LONG_AGO = datetime.min.replace(tzinfo=UTC)


@dataclass
class KnownWorker:
    heartbeat: WorkerHeartbeat
    last_heard: datetime
    fresh: bool = True  # heard since this scheduler started
    persisted_at: datetime | None = None
    life_heard_since: datetime = LONG_AGO  # when this scheduler first heard its current life

    def silent_for(self, now: datetime) -> float:
        return (now - self.last_heard).total_seconds()


class WorkerRegistry:
    def __init__(self, store: JobStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._workers: dict[str, KnownWorker] = {}

    def restore(self) -> int:
        """Load the agents the store knows; returns how many. Call once at startup."""
        now = self._clock()
        for record in self._store.list_workers():
            heartbeat = WorkerHeartbeat(
                agent_id=record.agent_id,
                host=record.host,
                slots=record.slot_list,
                fl_port_range=(record.fl_port_low, record.fl_port_high),
                started_at=record.started_at,
                occurred_at=record.last_seen_at,
            )
            self._workers[record.agent_id] = KnownWorker(
                heartbeat, last_heard=now, fresh=False, persisted_at=now, life_heard_since=LONG_AGO
            )
        return len(self._workers)

    def observe(self, heartbeat: WorkerHeartbeat, lost_after_s: float) -> bool:
        """Record a heartbeat. True when placement may now decide differently.

        That is: a new or returning agent, a restarted agent, or changed slot hardware, port
        range or running processes.
        """
        return self.observe_all([heartbeat], lost_after_s)

    def observe_all(self, heartbeats: Iterable[WorkerHeartbeat], lost_after_s: float) -> bool:
        """Record heartbeats in arrival order, then write what is due in one store call.
        True when placement may now decide differently for any of them (see `observe`)."""
        now = self._clock()
        due: dict[str, WorkerCreate] = {}
        changed = False
        for heartbeat in heartbeats:
            worker, worker_changed, save = self._record(heartbeat, lost_after_s, now)
            changed |= worker_changed
            if save or heartbeat.agent_id in due:  # the latest word of an agent is saved
                due[heartbeat.agent_id] = _worker_row(worker.heartbeat, now)
                worker.persisted_at = now
        if due:
            self._store.save_workers(list(due.values()))
        return changed

    def _record(
        self, heartbeat: WorkerHeartbeat, lost_after_s: float, now: datetime
    ) -> tuple[KnownWorker, bool, bool]:
        """Keep the heartbeat; (the worker, placement may change, the store needs it)."""
        known = self._workers.get(heartbeat.agent_id)
        if known is None:
            logger.info("worker %s (%s) joined", heartbeat.agent_id, heartbeat.host)
            changed = identity_changed = True
        else:
            previous = known.heartbeat
            identity_changed = _identity(previous) != _identity(heartbeat)
            changed = (
                identity_changed
                or not known.fresh
                or known.silent_for(now) > lost_after_s
                or _running_keys(previous.running) != _running_keys(heartbeat.running)
            )
        persisted_at = known.persisted_at if known else None
        same_life = known is not None and known.heartbeat.started_at == heartbeat.started_at
        worker = KnownWorker(
            heartbeat,
            last_heard=now,
            persisted_at=persisted_at,
            life_heard_since=known.life_heard_since if known and same_life else now,
        )
        save = (
            identity_changed
            or persisted_at is None
            or (now - persisted_at).total_seconds() > PERSIST_EVERY_S
        )
        self._workers[heartbeat.agent_id] = worker
        return worker, changed, save

    def get(self, agent_id: str) -> WorkerHeartbeat | None:
        known = self._workers.get(agent_id)
        return known.heartbeat if known else None

    def last_heard(self, agent_id: str) -> datetime | None:
        known = self._workers.get(agent_id)
        return known.last_heard if known else None

    def is_lost(self, agent_id: str, lost_after_s: float) -> bool:
        """Not heard within `lost_after_s` (an agent never heard of is lost)."""
        known = self._workers.get(agent_id)
        return known is None or known.silent_for(self._clock()) > lost_after_s

    def restarted_since(self, agent_id: str, moment: datetime) -> bool:
        """Whether the agent's current process was first heard after `moment` (a restart)."""
        known = self._workers.get(agent_id)
        return known is not None and known.life_heard_since > moment

    def online(self, lost_after_s: float) -> list[WorkerHeartbeat]:
        """Agents heard since startup and within `lost_after_s`, by agent id."""
        now = self._clock()
        return [
            known.heartbeat
            for _, known in sorted(self._workers.items())
            if known.fresh and known.silent_for(now) <= lost_after_s
        ]

    def running(self, agent_id: str) -> list[RunningProcess]:
        """The processes the agent reported in its last heartbeat."""
        known = self._workers.get(agent_id)
        return list(known.heartbeat.running) if known else []

    def summary(self, lost_after_s: float) -> dict[str, int]:
        online = self.online(lost_after_s)
        return {
            "workers_known": len(self._workers),
            "workers_online": len(online),
            "slots_online": sum(len(heartbeat.slots) for heartbeat in online),
        }


def _worker_row(heartbeat: WorkerHeartbeat, seen_at: datetime) -> WorkerCreate:
    low, high = heartbeat.fl_port_range
    return WorkerCreate(
        agent_id=heartbeat.agent_id,
        host=heartbeat.host,
        slots=[slot.model_dump() for slot in heartbeat.slots],
        fl_port_low=low,
        fl_port_high=high,
        started_at=heartbeat.started_at,
        last_seen_at=seen_at,
    )


def _identity(heartbeat: WorkerHeartbeat) -> tuple[object, ...]:
    """What an agent is, as placement and a restarted scheduler know it: everything in its
    heartbeat but what moves all the time (free memory, running processes, timestamps)."""
    slots = tuple((s.index, s.kind, s.model, s.total_memory_mb) for s in heartbeat.slots)
    return heartbeat.host, heartbeat.fl_port_range, heartbeat.started_at, slots


def _running_keys(processes: list[RunningProcess]) -> set[tuple[str, str, str]]:
    return {(process.run_id, process.role, process.site_name) for process in processes}
