"""Every stream is declared bounded (age, size, discard policy) and the staging object store
expires what the artifacts service never copied; a state stream that is full refuses a publish
rather than silently deleting unread events. Against a real nats-server."""

from uuid import uuid4

import pytest
from nats.js.api import DiscardPolicy
from nats.js.errors import ServiceUnavailableError

from rondo.contracts.bus import declare_streams, make_broker
from rondo.contracts.config import ServiceSettings
from rondo.contracts.subjects import (
    ALL_STREAMS,
    JOBS_STREAM,
    LOGS_STREAM,
    STAGING_MAX_AGE_S,
    StreamSpec,
    staging_stream_name,
)


@pytest.mark.timeout(60)
async def test_declared_streams_and_staging_store_carry_their_limits(
    service_settings: ServiceSettings,
) -> None:
    broker = make_broker(service_settings, "test-stream-limits")
    await broker.connect()
    try:
        js = broker.config.connection_state.stream
        await declare_streams(broker, replicas=1)
        for spec in ALL_STREAMS:
            config = (await js.stream_info(spec.name)).config
            assert config.max_bytes == spec.max_bytes > 0, spec.name
            assert config.max_age == spec.max_age_s, spec.name
            assert config.discard == spec.discard, spec.name
        assert JOBS_STREAM.discard == DiscardPolicy.NEW, "job events are never dropped silently"
        assert LOGS_STREAM.discard == DiscardPolicy.OLD
        staging = (await js.stream_info(staging_stream_name())).config
        assert staging.max_age == STAGING_MAX_AGE_S

        # A store declared earlier without expiry (or with another one) gets the configured one.
        await declare_streams(broker, replicas=1, staging_max_age_s=600.0)
        assert (await js.stream_info(staging_stream_name())).config.max_age == 600.0
        await declare_streams(broker, replicas=1)
        assert (await js.stream_info(staging_stream_name())).config.max_age == STAGING_MAX_AGE_S
    finally:
        await broker.stop()


@pytest.mark.timeout(60)
async def test_a_full_discard_new_stream_refuses_instead_of_dropping_unread_events(
    service_settings: ServiceSettings,
) -> None:
    name = f"TEST_FULL_{uuid4().hex[:8].upper()}"
    subject = f"test.full.{name.lower()}"
    spec = StreamSpec(name, (subject,), 3600.0, max_bytes=4096, discard=DiscardPolicy.NEW)
    broker = make_broker(service_settings, "test-stream-full")
    await broker.connect()
    js = broker.config.connection_state.stream
    try:
        await js.add_stream(config=spec.stream_config(1))
        stored, refused = 0, None
        for index in range(100):
            try:
                await js.publish(subject, f"{index:04d}".encode() * 64, stream=name)
                stored += 1
            except ServiceUnavailableError as error:  # 503 "maximum bytes exceeded"
                refused = error
                break
        assert refused is not None, "a full stream kept taking messages"
        info = await js.stream_info(name)
        assert info.state.messages == stored and info.state.first_seq == 1, (
            "the oldest (unread) events were kept"
        )
    finally:
        await js.delete_stream(name)
        await broker.stop()
