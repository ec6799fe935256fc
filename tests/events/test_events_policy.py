"""The durable-consumer policy itself (`rondo.contracts.consumers`), on a real nats-server: a
handler that raises is redelivered with a growing delay until it succeeds; an event that can
never be valid is set aside on its dead-letter subject with its payload and error, and is not
handed out again."""

import asyncio
import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ClassVar

import pytest
from events_helpers import Watcher, eventually
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rondo.contracts.bus import make_broker, publish, start_broker
from rondo.contracts.config import ServiceSettings
from rondo.contracts.consumers import DeadLetter, DurableConsumers, NeverValid
from rondo.contracts.events import Event
from rondo.contracts.subjects import DEADLETTER_STREAM, JOBS_STREAM
from rondo.contracts.telemetry import JOB_ID_ATTRIBUTE

pytestmark = pytest.mark.timeout(60)

# A subject the jobs stream stores, whatever its exact patterns: `rondo.job.test.<topic>`.
TEST_SUBJECT = JOBS_STREAM.subjects[0].replace(">", "test.{topic}")


class Ping(Event):
    """A tiny event of a job; each test uses its own topic (so its own subject)."""

    SUBJECT: ClassVar[str] = TEST_SUBJECT

    topic: str
    job_id: str
    value: int


class Forbidden(NeverValid):
    pass


Handler = Callable[[Ping], Awaitable[None]]
Service = Callable[[str, Handler], Awaitable[NatsBroker]]


@pytest.fixture
async def service(events_settings: ServiceSettings) -> AsyncIterator[Service]:
    """Starts a service whose one durable consumer of the topic's subject runs `handler`."""
    brokers: list[NatsBroker] = []

    async def start(topic: str, handler: Handler) -> NatsBroker:
        broker = make_broker(events_settings, f"test-{topic}")
        brokers.append(broker)
        consumers = DurableConsumers(broker, events_settings)
        consumers(Ping, f"test-{topic}", subject=Ping.SUBJECT.format(topic=topic))(handler)
        await start_broker(broker, events_settings)
        return broker

    yield start
    for broker in brokers:
        await broker.stop()


def topic() -> str:
    return f"t{secrets.token_hex(4)}"


async def test_a_failing_handler_is_retried_with_a_growing_delay_until_it_succeeds(
    service: Service, watcher: Watcher, events_settings: ServiceSettings
) -> None:
    name = topic()
    calls: list[float] = []
    state: dict[str, int] = {}

    async def handler(event: Ping) -> None:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise OSError("the database is locked")
        state[event.job_id] = event.value

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    await watcher.watch(DeadLetter.SUBJECT.format(durable=">"))
    broker = await service(name, handler)
    broker.add_middleware(NatsTelemetryMiddleware(tracer_provider=provider))

    await publish(watcher.broker, Ping(topic=name, job_id="job-retried", value=7))
    await eventually(lambda: state.get("job-retried") == 7, "the event handled")

    assert len(calls) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    base, cap = events_settings.consumer_retry_delay_s, events_settings.consumer_max_retry_delay_s
    wanted = [min(base * 2**n, cap) for n in range(3)]  # 0.2, 0.4, 0.5 (capped)
    assert all(gap >= 0.9 * want for gap, want in zip(gaps, wanted, strict=True)), gaps
    assert watcher.on("rondo.deadletter.") == []
    # Each try ran in a span tagged with the job, so `rondo trace` finds them all.
    tagged = [s for s in spans.get_finished_spans() if s.attributes.get(JOB_ID_ATTRIBUTE)]
    assert len(tagged) >= 4
    assert {s.attributes[JOB_ID_ATTRIBUTE] for s in tagged} == {"job-retried"}


async def test_an_invalid_event_is_dead_lettered_with_its_payload_and_never_redelivered(
    service: Service, watcher: Watcher
) -> None:
    name = topic()
    handled: list[Ping] = []

    async def handler(event: Ping) -> None:
        handled.append(event)

    durable = f"test-{name}"
    await watcher.watch(DeadLetter.SUBJECT.format(durable=durable))
    await service(name, handler)
    subject = Ping.SUBJECT.format(topic=name)
    poison = json.dumps({"job_id": "job-poison", "topic": name, "value": "Infinity?"}).encode()
    garbage = b"\xff not json at all"
    for body in (poison, garbage):
        await watcher.broker.publish(body, subject=subject, stream=JOBS_STREAM.name)
    await publish(watcher.broker, Ping(topic=name, job_id="job-fine", value=1))

    await eventually(lambda: len(watcher.on("rondo.deadletter.")) == 2, "two dead letters")
    await eventually(lambda: len(handled) == 1, "the valid event handled")
    letters = [DeadLetter.model_validate_json(m.data) for m in watcher.on("rondo.deadletter.")]
    by_job = {letter.job_id: letter for letter in letters}
    assert set(by_job) == {"job-poison", None}
    letter = by_job["job-poison"]
    assert letter.payload == poison.decode()
    assert letter.event_subject == subject
    assert letter.durable == durable
    assert letter.stream == JOBS_STREAM.name
    assert letter.error.startswith("invalid event: value:"), letter.error
    assert by_job[None].payload.startswith("\\xff not json")

    # Stored for the scheduler (and an operator) to read, and the originals are done with.
    js = watcher.broker.config.connection_state.stream
    stored = await js.get_last_msg(
        DEADLETTER_STREAM.name, DeadLetter.SUBJECT.format(durable=durable)
    )
    assert DeadLetter.model_validate_json(stored.data).durable == durable
    await asyncio.sleep(1.0)  # time for a (wrong) redelivery, were there one
    info = await js.consumer_info(JOBS_STREAM.name, durable)
    assert info.num_redelivered == 0
    assert info.num_ack_pending == 0
    assert info.num_pending == 0
    assert [event.job_id for event in handled] == ["job-fine"]


async def test_a_handler_that_says_never_valid_dead_letters_the_event(
    service: Service, watcher: Watcher
) -> None:
    name = topic()
    calls: list[Ping] = []

    async def handler(event: Ping) -> None:
        calls.append(event)
        raise Forbidden("path ../../etc/passwd leaves files_out/")

    durable = f"test-{name}"
    await watcher.watch(DeadLetter.SUBJECT.format(durable=durable))
    await service(name, handler)
    await publish(watcher.broker, Ping(topic=name, job_id="job-unsafe", value=3))

    await eventually(lambda: watcher.on("rondo.deadletter."), "the dead letter")
    letter = DeadLetter.model_validate_json(watcher.on("rondo.deadletter.")[0].data)
    assert letter.job_id == "job-unsafe"
    assert letter.error == "Forbidden: path ../../etc/passwd leaves files_out/"
    assert json.loads(letter.payload)["value"] == 3
    js = watcher.broker.config.connection_state.stream
    info = await js.consumer_info(JOBS_STREAM.name, durable)
    assert info.num_ack_pending == 0
    assert len(calls) == 1


async def test_an_event_whose_body_names_another_subject_is_refused_not_dead_lettered(
    service: Service, watcher: Watcher
) -> None:
    """The bus lets a sender publish only on subjects naming itself; a body naming another
    (a forgery) is refused. It is not dead-lettered: a dead letter fails the job it names."""
    name = topic()
    handled: list[Ping] = []

    async def handler(event: Ping) -> None:
        handled.append(event)

    durable = f"test-{name}"
    await watcher.watch(DeadLetter.SUBJECT.format(durable=durable))
    await service(name, handler)
    forged = Ping(topic="someone-else", job_id="job-victim", value=1)
    subject = Ping.SUBJECT.format(topic=name)
    await watcher.broker.publish(forged, subject=subject, stream=JOBS_STREAM.name)
    await publish(watcher.broker, Ping(topic=name, job_id="job-own", value=2))

    await eventually(lambda: handled, "the genuine event handled")
    await asyncio.sleep(0.5)
    assert [event.job_id for event in handled] == ["job-own"]
    assert watcher.on("rondo.deadletter.") == []
    js = watcher.broker.config.connection_state.stream
    info = await js.consumer_info(JOBS_STREAM.name, durable)
    assert info.num_ack_pending == 0
    assert info.num_redelivered == 0
