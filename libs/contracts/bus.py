"""Connecting a service to the bus: the broker, stream declaration, publishing, health replies."""

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.js.errors import BadRequestError

from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import Event, HealthReply
from rondo.contracts.subjects import ALL_STREAMS, STAGING_OBJECT_STORE, health_subject

logger = logging.getLogger(__name__)

# A service whose broker cannot reach NATS keeps retrying instead of exiting.
RECONNECT_FOREVER = -1


def make_broker(settings: ServiceSettings, service: str) -> NatsBroker:
    """A FastStream NATS broker that carries trace context across every hop."""
    return NatsBroker(
        settings.nats_url,
        name=f"rondo-{service}",
        middlewares=(NatsTelemetryMiddleware(),),
        max_reconnect_attempts=RECONNECT_FOREVER,
        reconnect_time_wait=0.5,
        logger=logging.getLogger(f"rondo.{service}.bus"),
    )


async def declare_streams(broker: NatsBroker, replicas: int) -> None:
    """Create (or update) every Rondo stream and the staging object store. Idempotent."""
    js = broker.config.connection_state.stream
    for spec in ALL_STREAMS:
        config = spec.stream_config(replicas)
        try:
            await js.add_stream(config=config)
        except BadRequestError:
            await js.update_stream(config=config)
    await broker.object_storage(STAGING_OBJECT_STORE)


async def publish(broker: NatsBroker, event: Event) -> None:
    """Publish an event on its own subject; `event_id` is the JetStream de-duplication id."""
    await broker.publish(
        event,
        subject=event.subject,
        headers={"Nats-Msg-Id": event.event_id},
    )


def register_health(
    broker: NatsBroker, service: str, detail: Callable[[], dict[str, Any]] | None = None
) -> None:
    """Answer `rondo.health.<service>` requests; `rondo status` asks every service this way."""
    instance = f"{socket.gethostname()}:{os.getpid()}"

    @broker.subscriber(health_subject(service), include_in_schema=False)
    async def health() -> HealthReply:
        return HealthReply(
            service=service,
            instance=instance,
            healthy=True,  # answering at all means connected and serving
            detail=detail() if detail else {},
        )


async def start_broker(broker: NatsBroker, settings: ServiceSettings) -> None:
    """Connect, make sure the streams exist, then start the subscribers."""
    await broker.connect()
    await declare_streams(broker, settings.nats_stream_replicas)
    await broker.start()
