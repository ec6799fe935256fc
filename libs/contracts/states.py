"""Job states, the legal transitions between them, and the worker panel a job carries."""

from enum import StrEnum

from pydantic import BaseModel, Field


class JobState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.FINISHED, JobState.FAILED, JobState.CANCELLED})

LEGAL_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.FINISHED, JobState.FAILED, JobState.CANCELLED}),
    JobState.FINISHED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def is_legal_transition(current: JobState, new: JobState) -> bool:
    return new in LEGAL_TRANSITIONS[current]


class WorkerPanel(BaseModel):
    """The four live counters users watch for a job."""

    total: int = 0
    connected: int = 0
    errors: int = 0
    disconnected: int = 0


class SlotStatus(StrEnum):
    ASSIGNED = "assigned"  # dispatched, process not up yet
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    ERROR = "error"
    DONE = "done"


class WorkerSlotView(BaseModel):
    """One worker slot of a job: which shard it trains on and where it runs now."""

    slot: int = Field(description="0-based worker slot; slot n trains on the n-th shard")
    site_name: str
    agent_id: str | None = None
    status: SlotStatus = SlotStatus.ASSIGNED
    last_heartbeat_at: str | None = None
