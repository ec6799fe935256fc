"""The fleet as the gateway shows it: an in-memory registry fed by the agents' heartbeats.

Heartbeats are core NATS (nothing is replayed), so a restarted gateway knows no worker until
each one is heard again, within one heartbeat interval. They arrive through
`rondo.contracts.heartbeats.HeartbeatIntake`, in batches, without a span or log line each. A
worker is online while it was heard within `online_s`; one silent for `forget_after_s` is
dropped.
"""

from dataclasses import dataclass
from datetime import datetime

from rondo.contracts.api import WorkerList, WorkerPublic
from rondo.contracts.clock import Clock, utc_now
from rondo.contracts.events import WorkerHeartbeat

FORGET_AFTER_S = 24 * 3600.0


@dataclass(frozen=True)
class HeardWorker:
    heartbeat: WorkerHeartbeat
    heard_at: datetime


class WorkerRegistry:
    """The last heartbeat of each agent. Used from the event loop only (not thread-safe)."""

    def __init__(
        self, online_s: float, forget_after_s: float = FORGET_AFTER_S, clock: Clock = utc_now
    ) -> None:
        self._online_s = online_s
        self._forget_after_s = forget_after_s
        self._clock = clock
        self._workers: dict[str, HeardWorker] = {}

    def observe(self, heartbeats: list[WorkerHeartbeat]) -> None:
        """A batch from `HeartbeatIntake`, in arrival order (the newest of an agent wins)."""
        heard_at = self._clock()
        for heartbeat in heartbeats:
            self._workers[heartbeat.agent_id] = HeardWorker(heartbeat, heard_at)

    def workers(self) -> list[tuple[HeardWorker, bool]]:
        """Every remembered worker by agent id, with whether it is online now."""
        now = self._clock()
        for agent_id, heard in list(self._workers.items()):
            if (now - heard.heard_at).total_seconds() > self._forget_after_s:
                del self._workers[agent_id]
        return [
            (heard, (now - heard.heard_at).total_seconds() <= self._online_s)
            for _, heard in sorted(self._workers.items())
        ]

    def job_ids(self) -> set[str]:
        """Jobs with a process on any remembered worker."""
        return {p.job_id for heard in self._workers.values() for p in heard.heartbeat.running}

    def view(self, visible_jobs: set[str]) -> WorkerList:
        """The fleet as one user sees it: every worker, but only `visible_jobs` (theirs)."""
        workers = [
            WorkerPublic(
                agent_id=heard.heartbeat.agent_id,
                host=heard.heartbeat.host,
                online=online,
                last_heartbeat_at=heard.heard_at,
                slots=heard.heartbeat.slots,
                jobs=sorted(
                    {p.job_id for p in heard.heartbeat.running if p.job_id in visible_jobs}
                ),
            )
            for heard, online in self.workers()
        ]
        online = [worker for worker in workers if worker.online]
        return WorkerList(
            online_count=len(online),
            total_free_memory_mb=sum(slot.free_memory_mb for w in online for slot in w.slots),
            workers=workers,
        )
