"""Open event streams end once their API key stops authenticating (revoked, or user removed).

A request is authenticated once, when it arrives; an SSE stream then lives for hours. Each
stream registers its key's hash and its listener queue with `StreamGuard`; while any stream is
open, one task asks the database every `check_interval_s` which of those keys still belong to
an existing user and are not revoked (one query for all streams), and hands every stream whose
key is gone `None`, which ends it (the same end-of-stream as a gateway shutdown). The database
is the source of truth, so a key revoked through any replica ends streams on every replica.
"""

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from rondo.gateway.models import ApiKey, User
from rondo.gateway.pubsub import Listener

logger = logging.getLogger(__name__)


class StreamGuard:
    """Ends streams whose key is no longer valid. Single event loop; not thread-safe."""

    def __init__(self, engine: Engine, check_interval_s: float) -> None:
        self._engine = engine
        self._interval_s = check_interval_s
        self._streams: defaultdict[str, set[Listener]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    @contextmanager
    def watch(self, key_hash: str, listener: Listener) -> Iterator[None]:
        """Within the block, `listener` gets `None` once the key of `key_hash` stops
        authenticating. Must be entered on the event loop (it may start the checking task)."""
        self._streams[key_hash].add(listener)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._check_forever())
        try:
            yield
        finally:
            listeners = self._streams.get(key_hash)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._streams[key_hash]

    def stream_count(self) -> int:
        return sum(len(listeners) for listeners in self._streams.values())

    async def _check_forever(self) -> None:
        """Check while streams are open; ends with the last one (the next `watch` restarts it)."""
        while self._streams:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check_now()
            except Exception:  # a database hiccup must not leave streams unchecked for good
                logger.exception("checking the API keys of open streams failed; retrying")

    async def check_now(self) -> int:
        """End the streams whose key is gone; returns how many were ended."""
        hashes = set(self._streams)
        if not hashes:
            return 0
        valid = await asyncio.to_thread(self._valid_hashes, hashes)
        ended = 0
        for key_hash in hashes - valid:
            for listener in self._streams.pop(key_hash, set()):
                _end(listener)
                ended += 1
        if ended:
            logger.info("ended %d event stream(s) whose API key was revoked or removed", ended)
        return ended

    def _valid_hashes(self, hashes: set[str]) -> set[str]:
        statement = (
            select(ApiKey.key_hash)
            .join(User, col(User.id) == col(ApiKey.user_id))
            .where(col(ApiKey.key_hash).in_(hashes), col(ApiKey.revoked_at).is_(None))
        )
        with Session(self._engine) as session:
            return set(session.exec(statement).all())


def _end(listener: Listener) -> None:
    """Hand the stream its end, making room if its queue is full (it is being cut off)."""
    if listener.full():
        listener.get_nowait()
    listener.put_nowait(None)
