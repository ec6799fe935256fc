"""The worker registry: which worker-agents are alive, built from their core-NATS heartbeats.

A worker is online while it was heard within `Timing.worker_lost_after_s`. What an agent said
last is stored, so a restarted scheduler knows the fleet at once: each known agent gets one
lost-after period from the restart to be heard again before it counts as lost, and is offered
to placement only once a fresh heartbeat arrived.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rondo.contracts.events import RunningProcess, WorkerHeartbeat
from rondo.scheduler.models import WorkerCreate
from rondo.scheduler.store import JobStore

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# An unchanged heartbeat is written to the database at most this often.
PERSIST_EVERY_S = 30.0


@dataclass
class KnownWorker:
    heartbeat: WorkerHeartbeat
    last_heard: datetime
    fresh: bool = True  # heard since this scheduler started
    persisted_at: datetime | None = None

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
                heartbeat, last_heard=now, fresh=False, persisted_at=now
            )
        return len(self._workers)

    def observe(self, heartbeat: WorkerHeartbeat, lost_after_s: float) -> bool:
        """Record a heartbeat. True when placement may now decide differently.

        That is: a new or returning agent, a restarted agent, or changed slots, port range or
        running processes.
        """
        now = self._clock()
        known = self._workers.get(heartbeat.agent_id)
        if known is None:
            logger.info("worker %s (%s) joined", heartbeat.agent_id, heartbeat.host)
            changed = True
        else:
            previous = known.heartbeat
            changed = (
                not known.fresh
                or known.silent_for(now) > lost_after_s
                or previous.started_at != heartbeat.started_at
                or previous.slots != heartbeat.slots
                or previous.fl_port_range != heartbeat.fl_port_range
                or previous.host != heartbeat.host
                or _running_keys(previous.running) != _running_keys(heartbeat.running)
            )
        persisted_at = known.persisted_at if known else None
        worker = KnownWorker(heartbeat, last_heard=now, persisted_at=persisted_at)
        if (
            changed
            or persisted_at is None
            or (now - persisted_at).total_seconds() > PERSIST_EVERY_S
        ):
            self._persist(worker, now)
        self._workers[heartbeat.agent_id] = worker
        return changed

    def _persist(self, worker: KnownWorker, now: datetime) -> None:
        heartbeat = worker.heartbeat
        low, high = heartbeat.fl_port_range
        self._store.save_worker(
            WorkerCreate(
                agent_id=heartbeat.agent_id,
                host=heartbeat.host,
                slots=[slot.model_dump() for slot in heartbeat.slots],
                fl_port_low=low,
                fl_port_high=high,
                started_at=heartbeat.started_at,
                last_seen_at=now,
            )
        )
        worker.persisted_at = now

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


def _running_keys(processes: list[RunningProcess]) -> set[tuple[str, str, str]]:
    return {(process.run_id, process.role, process.site_name) for process in processes}
