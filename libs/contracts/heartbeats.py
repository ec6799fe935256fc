"""`HeartbeatIntake`: the fleet's heartbeats, from core NATS into a service in batches.

A large fleet sends thousands of heartbeats a second (`rondo.worker.heartbeat.<agent_id>`).
Through a FastStream subscriber each one would also cost two log lines, a trace span and a
dependency-injection pass, several times the registry update itself, so heartbeats are read
from a plain subscription on the broker's connection instead. Messages that arrive together
are handed over together: the subscription's task runs the callback for every message already
received without yielding, and the batch is handed over once it has. The scheduler and the
gateway both hear every heartbeat this way.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError
from pydantic import ValidationError

from rondo.contracts.events import WorkerHeartbeat
from rondo.contracts.subjects import HEARTBEAT_FILTER

logger = logging.getLogger(__name__)

HandleHeartbeats = Callable[[list[WorkerHeartbeat]], None]


class HeartbeatIntake:
    """Subscribes to every agent's heartbeats and passes them, parsed, to `handle` in batches
    (in arrival order). A heartbeat that does not parse is dropped and logged."""

    def __init__(self, handle: HandleHeartbeats) -> None:
        self._handle = handle
        self._batch: list[WorkerHeartbeat] = []
        self._subscription: Subscription | None = None

    async def start(self, connection: Client) -> None:
        """Subscribe; returns once the server has the subscription."""
        self._subscription = await connection.subscribe(HEARTBEAT_FILTER, cb=self._on_message)
        await connection.flush()

    async def stop(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(ConnectionClosedError):  # gone with the connection
                await self._subscription.unsubscribe()
            self._subscription = None

    async def _on_message(self, message: Msg) -> None:
        try:
            heartbeat = WorkerHeartbeat.model_validate_json(message.data)
        except ValidationError as error:
            logger.warning("dropped a malformed heartbeat on %s: %s", message.subject, error)
            return
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._hand_over)
        self._batch.append(heartbeat)

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, []
        try:
            self._handle(batch)
        except Exception:  # the next batch is handled as usual
            logger.exception("handling %d heartbeats failed", len(batch))
