"""Publishing what the store committed: events leave the outbox in commit order, then go."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from rondo.contracts.events import Event
from rondo.scheduler.store import JobStore

logger = logging.getLogger(__name__)

Publish = Callable[[Event], Awaitable[None]]


class Outbox:
    """Publishes the store's pending events; a failed publish is retried on the next flush.

    Each event keeps its `event_id`, so a retried publish is de-duplicated by JetStream.
    """

    def __init__(self, store: JobStore, publish: Publish) -> None:
        self._store = store
        self._publish = publish
        self._lock = asyncio.Lock()

    async def flush(self) -> int:
        """Publish every pending event in order; stops at the first failure. Returns the count."""
        published = 0
        async with self._lock:
            while entries := self._store.list_outbox():
                for entry in entries:
                    try:
                        await self._publish(entry.event())
                    except Exception:
                        logger.exception("publishing %s failed; will retry", entry.event_type)
                        return published
                    self._store.delete_outbox([entry.id])
                    published += 1
        return published
