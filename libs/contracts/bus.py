"""Connecting a service to the bus: the broker, stream declaration, publishing, health replies."""

import asyncio
import hashlib
import hmac
import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.security import NatsSecurity, NatsUserPassword
from nats.errors import NoRespondersError
from nats.js.api import ObjectStoreConfig
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    NoStreamResponseError,
    ServiceUnavailableError,
)
from nats.js.object_store import ObjectStore

from rondo.contracts.append_only_store import AppendOnlyObjectStore
from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import Event, HealthReply
from rondo.contracts.subjects import (
    ALL_STREAMS,
    STAGING_MAX_AGE_S,
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


class RondoBroker(NatsBroker):
    """A NatsBroker whose JetStream pull subscribers receive into the identity's own inbox.

    FastStream gives every pull subscriber the fixed inbox prefix `_INBOX.` unless told
    otherwise; the bus lets an identity subscribe only to `_INBOX.<identity>.>`, so each pull
    subscriber gets that prefix here (a subscriber passing its own `inbox_prefix` keeps it)."""

    def __init__(
        self, *args: Any, pull_inbox_prefix: bytes, msg_id_key: bytes = b"", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._pull_inbox_prefix = pull_inbox_prefix
        self.msg_id_key = msg_id_key

    def subscriber(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("pull_sub"):
            kwargs.setdefault("inbox_prefix", self._pull_inbox_prefix)
        return super().subscriber(*args, **kwargs)


def pull_inbox_prefix(settings: ServiceSettings) -> bytes:
    """The `inbox_prefix` a JetStream pull subscriber must be given (FastStream's default,
    `_INBOX.`, is an inbox no identity of the bus may subscribe to)."""
    return f"{settings.nats_inbox_prefix}.".encode()


def tls_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    """The TLS context that trusts only `RONDO_NATS_TLS_CA` (server certificate and host name
    both verified); without one, the system's trust store for `tls://` URLs, and None (plain
    TCP) for `nats://` ones."""
    if settings.nats_tls_ca is not None:
        ca = str(settings.nats_tls_ca)
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if any(url.startswith("tls://") for url in settings.nats_servers):
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    return None


def make_broker(settings: ServiceSettings, service: str) -> NatsBroker:
    """A FastStream NATS broker that carries trace context across every hop, connected as
    the settings' bus identity (`RONDO_NATS_USER` / `RONDO_NATS_PASSWORD`) when one is set,
    over TLS verified against `RONDO_NATS_TLS_CA` when that is set, with replies and pull
    deliveries on that identity's own inbox."""
    password = settings.nats_password.get_secret_value()
    context = tls_context(settings)
    security: NatsSecurity | None = None
    if settings.nats_user:
        security = NatsUserPassword(settings.nats_user, password, ssl_context=context)
    elif context is not None:
        security = NatsSecurity(ssl_context=context)
    return RondoBroker(
        settings.nats_servers,
        name=f"rondo-{service}",
        security=security,
        inbox_prefix=settings.nats_inbox_prefix,
        pull_inbox_prefix=pull_inbox_prefix(settings),
        msg_id_key=password.encode(),
        middlewares=(NatsTelemetryMiddleware(),),
        max_reconnect_attempts=RECONNECT_FOREVER,
        reconnect_time_wait=0.5,
        logger=logging.getLogger(f"rondo.{service}.bus"),
    )


def connect_options(settings: ServiceSettings) -> dict[str, Any]:
    """`nats.connect` keyword arguments for the settings' identity (raw connections)."""
    options: dict[str, Any] = {"inbox_prefix": settings.nats_inbox_prefix}
    context = tls_context(settings)
    if context is not None:
        options["tls"] = context
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password.get_secret_value()
    return options


async def declare_streams(
    broker: NatsBroker, replicas: int, staging_max_age_s: float = STAGING_MAX_AGE_S
) -> ObjectStore:
    """Create (or update) every Rondo stream and the staging object store, each with
    `replicas` copies, and return the staging store. Idempotent; a store or stream made
    earlier with another replica count, size limit or age is changed to this one. Streams
    carry their `StreamSpec` limits; staged objects expire after `staging_max_age_s`."""
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
    config = ObjectStoreConfig(
        bucket=STAGING_OBJECT_STORE, replicas=replicas, ttl=staging_max_age_s
    )
    try:
        return await js.create_object_store(STAGING_OBJECT_STORE, config=config)
    except BadRequestError:  # exists with another replica count or age
        info = await js.stream_info(staging_stream_name())
        info.config.num_replicas = replicas
        info.config.max_age = staging_max_age_s
        await js.update_stream(config=info.config)
        return await js.create_object_store(STAGING_OBJECT_STORE, config=config)


async def look_up_staging(
    broker: NatsBroker, retry_s: float = 0.5, log_every_s: float = 30.0
) -> ObjectStore:
    """The staging object store as a worker-agent sees it: looked up, never declared (only
    services create or change streams), and append-only (`AppendOnlyObjectStore`: an agent
    may write objects but read none). Waits until a service has declared it; services
    declare the store after every stream, so the streams exist once it does."""
    js = broker.config.connection_state.stream
    loop = asyncio.get_running_loop()
    next_log = loop.time()
    while True:
        try:
            await js.object_store(STAGING_OBJECT_STORE)
        except (BucketNotFoundError, *UNSTORED_PUBLISH_ERRORS) as error:
            if loop.time() >= next_log:
                logger.info("waiting for the services to declare the streams (%r)", error)
                next_log = loop.time() + log_every_s
            await asyncio.sleep(retry_s)
            continue
        return AppendOnlyObjectStore(STAGING_OBJECT_STORE, staging_stream_name(), js)


def message_id(broker: NatsBroker, event: Event) -> str:
    """The JetStream de-duplication id of `event` as `broker`'s identity sends it.

    A stream drops a second message with an id it saw in the last minutes, whoever sent it,
    and agents' event ids are predictable (derived from job, run and file names so a restart
    repeats them). Keyed with the sender's bus password, the id stays stable for the sender's
    own retries, but no other identity can send a message that makes the stream drop this
    sender's event. Anonymous brokers (no password) use `event_id` itself."""
    key = getattr(broker, "msg_id_key", b"")
    if not key:
        return event.event_id
    return hmac.new(key, event.event_id.encode(), hashlib.sha256).hexdigest()[:32]


async def publish(
    broker: NatsBroker,
    event: Event,
    retry_s: float = PUBLISH_RETRY_S,
    ack_timeout_s: float = PUBLISH_ACK_TIMEOUT_S,
) -> None:
    """Publish an event on its own subject. An event that a stream stores returns once
    JetStream acknowledged it; its `message_id` is the de-duplication id, so a retry is
    stored once.
    While the stream has no leader (a failover takes seconds) it is retried; after
    `retry_s` the last error is raised (a caller with an outbox passes a short window and
    leaves the rest to it). Each try waits `ack_timeout_s` for JetStream's answer, so the call
    returns within about `retry_s + ack_timeout_s`. Core NATS events (heartbeats) are not
    acknowledged: a lost one is simply superseded by the next."""
    headers = {"Nats-Msg-Id": message_id(broker, event)}
    stream = stream_of(event.subject)
    if stream is None:
        await broker.publish(event, subject=event.subject, headers=headers)
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_s
    delay_s = PUBLISH_FIRST_RETRY_S
    while True:
        try:
            await broker.publish(
                event,
                subject=event.subject,
                headers=headers,
                stream=stream.name,
                timeout=ack_timeout_s,
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
    await declare_streams(broker, settings.nats_stream_replicas, settings.nats_staging_max_age_s)
    await broker.start()
