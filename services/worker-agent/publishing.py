"""How the agent's parts publish events: one async callable, and ids that survive restarts."""

import uuid
from collections.abc import Awaitable, Callable

from rondo.contracts.events import Event

Publish = Callable[[Event], Awaitable[None]]
"""Publishes one event on its subject (in the agent: `rondo.contracts.bus.publish`)."""

# Fixed namespace: the same (job, run, file, ...) always yields the same event id, so an event
# re-published after an agent restart is dropped by JetStream's de-duplication window.
EVENT_ID_NAMESPACE = uuid.UUID("5b0d6f3c-6a57-4c8e-9a31-2f0e8f4f1a10")


def stable_event_id(*parts: object) -> str:
    """An event id determined by `parts` (e.g. job id, run id, spool file name)."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, "/".join(str(p) for p in parts)).hex
