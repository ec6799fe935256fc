"""In-process fan-out of read-model changes to live listeners (the job SSE streams).

The bus consumers publish after committing; each SSE connection subscribes to one job. A slow
listener never blocks a consumer: its queue is bounded and the oldest item is dropped. `close()`
(on shutdown) hands every listener `None`, which ends its stream.
"""

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.sse import ServerSentEvent

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 256

# Subscribing to this key hears every job's events (the dashboard's list-level stream).
ANY_JOB = "*"

# What a listener reads: events, then `None` once the hub closes.
Listener = asyncio.Queue[ServerSentEvent | None]


class JobEventHub:
    """Per-job broadcast of `ServerSentEvent`s. Single event loop; not thread-safe."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._closed = False
        self._listeners: defaultdict[str, set[Listener]] = defaultdict(set)

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[Listener]:
        """A queue receiving every event published for `job_id` until the block exits;
        `None` means the hub closed and the listener should stop."""
        queue: Listener = asyncio.Queue(maxsize=self._queue_size)
        if self._closed:
            queue.put_nowait(None)
        self._listeners[job_id].add(queue)
        try:
            yield queue
        finally:
            listeners = self._listeners.get(job_id)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self._listeners[job_id]

    def publish(self, job_id: str, event: ServerSentEvent, *, to_any_job: bool = True) -> int:
        """Hand `event` to every listener of `job_id` and of `ANY_JOB`; returns how many got it.

        `to_any_job=False` keeps high-volume events (log lines) off the `ANY_JOB` listeners,
        whose bounded queues would otherwise drop job changes to make room for them."""
        listeners = [
            *self._listeners.get(job_id, ()),
            *(self._listeners.get(ANY_JOB, ()) if to_any_job else ()),
        ]
        for queue in listeners:
            if queue.full():
                queue.get_nowait()
                logger.warning("SSE listener of job %s is slow; dropped its oldest event", job_id)
            queue.put_nowait(event)
        return len(listeners)

    def close(self) -> None:
        """End every listener (server shutdown): open streams would otherwise hold it up."""
        self._closed = True
        for queues in self._listeners.values():
            for queue in queues:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(None)

    def listener_count(self, job_id: str | None = None) -> int:
        if job_id is not None:
            return len(self._listeners.get(job_id, ()))
        return sum(len(queues) for queues in self._listeners.values())
