"""Connecting a service to the bus: the broker, stream declaration, publishing, health replies."""

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.errors import NoRespondersError
from nats.js.api import ObjectStoreConfig
from nats.js.errors import BadRequestError, NoStreamResponseError, ServiceUnavailableError
from nats.js.object_store import ObjectStore

from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import Event, HealthReply
from rondo.contracts.subjects import (
    ALL_STREAMS,
    STAGING_OBJECT_STORE,
    health_subject,
    staging_stream_name,
    stream_of,
)

logger = logging.getLogger(__name__)

# A service whose broker cannot reach NATS keeps retrying instead of exiting.
RECONNECT_FOREVER = -1
# What JetStream answers while it cannot store a publish (no stream leader, mid-reconnect).
UNSTORED_PUBLISH_ERRORS = (
    NoStreamResponseError,
    NoRespondersError,
    ServiceUnavailableError,
    TimeoutError,
)
PUBLISH_ACK_TIMEOUT_S = 5.0
PUBLISH_RETRY_S = 60.0
PUBLISH_FIRST_RETRY_S = 0.1
PUBLISH_MAX_RETRY_DELAY_S = 2.0


def make_broker(settings: ServiceSettings, service: str) -> NatsBroker:
    """A FastStream NATS broker that carries trace context across every hop."""
    return NatsBroker(
        settings.nats_servers,
        name=f"rondo-{service}",
        middlewares=(NatsTelemetryMiddleware(),),
        max_reconnect_attempts=RECONNECT_FOREVER,
        reconnect_time_wait=0.5,
        logger=logging.getLogger(f"rondo.{service}.bus"),
    )


async def declare_streams(broker: NatsBroker, replicas: int) -> ObjectStore:
    """Create (or update) every Rondo stream and the staging object store, each with
    `replicas` copies, and return the staging store. Idempotent; a store or stream made
    earlier with another replica count is changed to this one."""
    js = broker.config.connection_state.stream
    for spec in ALL_STREAMS:
        config = spec.stream_config(replicas)
        try:
            await js.add_stream(config=config)
        except BadRequestError:
            await js.update_stream(config=config)
    # Declared here, not through `broker.object_storage`, which declares a bucket only the
    # first time a broker asks for it (and looks it up afterwards: a lookup fails while a
    # cluster has not yet elected the new store's leader).
    config = ObjectStoreConfig(bucket=STAGING_OBJECT_STORE, replicas=replicas)
    try:
        return await js.create_object_store(STAGING_OBJECT_STORE, config=config)
    except BadRequestError:  # exists with another replica count
        info = await js.stream_info(staging_stream_name())
        info.config.num_replicas = replicas
        await js.update_stream(config=info.config)
        return await js.create_object_store(STAGING_OBJECT_STORE, config=config)


async def publish(broker: NatsBroker, event: Event) -> None:
    """Publish an event on its own subject. An event that a stream stores returns once
    JetStream acknowledged it; `event_id` is the de-duplication id, so a retry is stored once.
    While the stream has no leader (a failover takes seconds) it is retried; after
    `PUBLISH_RETRY_S` the last error is raised. Core NATS events (heartbeats) are not
    acknowledged: a lost one is simply superseded by the next."""
    headers = {"Nats-Msg-Id": event.event_id}
    stream = stream_of(event.subject)
    if stream is None:
        await broker.publish(event, subject=event.subject, headers=headers)
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PUBLISH_RETRY_S
    delay_s = PUBLISH_FIRST_RETRY_S
    while True:
        try:
            await broker.publish(
                event,
                subject=event.subject,
                headers=headers,
                stream=stream.name,
                timeout=PUBLISH_ACK_TIMEOUT_S,
            )
            return
        except UNSTORED_PUBLISH_ERRORS as error:
            if loop.time() + delay_s > deadline:
                raise
            logger.info("%s not stored yet (%r); retrying", event.subject, error)
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, PUBLISH_MAX_RETRY_DELAY_S)


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
