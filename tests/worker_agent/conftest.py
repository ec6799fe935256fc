"""Worker-agent test helpers: every message on `rondo.>` captured from the real nats-server."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import nats
import pytest
from nats.aio.msg import Msg
from pydantic import ValidationError

from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import Event

E = TypeVar("E", bound=Event)


@dataclass
class BusLog:
    """Messages seen on the bus, parsed on demand into the event type asked for."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)

    async def on_message(self, msg: Msg) -> None:
        self.messages.append((msg.subject, msg.data))

    def events(self, event_type: type[E], **fields: object) -> list[E]:
        """Messages that are `event_type` (their subject matches) and have these field values."""
        found = []
        for subject, data in self.messages:
            try:
                event = event_type.model_validate_json(data)
            except ValidationError:
                continue
            if event.subject != subject:
                continue
            if all(getattr(event, name) == value for name, value in fields.items()):
                found.append(event)
        return found

    async def wait_for(
        self, event_type: type[E], timeout_s: float = 15.0, count: int = 1, **fields: object
    ) -> list[E]:
        """Wait until at least `count` matching events arrived; fails the test otherwise."""
        return await wait_until(
            lambda: found if len(found := self.events(event_type, **fields)) >= count else None,
            timeout_s,
            f"{count} x {event_type.__name__} {fields}",
        )


T = TypeVar("T")


async def wait_until(probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def bus_log(service_settings: ServiceSettings) -> AsyncIterator[BusLog]:
    log = BusLog()
    client = await nats.connect(service_settings.nats_url)
    await client.subscribe("rondo.>", cb=log.on_message)
    await client.flush()
    yield log
    await client.drain()
