"""Contracts: events round-trip, the AsyncAPI document is current, and the bus keeps promises."""

import asyncio
import json
from pathlib import Path
from uuid import uuid4

import pytest
from faststream.nats import PullSub

from rondo.contracts import asyncapi
from rondo.contracts.bus import declare_streams, make_broker, publish, start_broker
from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import (
    ALL_EVENTS,
    JobCancelRequested,
    JobDispatched,
    LogBatch,
    LogSource,
)
from rondo.contracts.states import JobState, is_legal_transition
from rondo.contracts.subjects import JOBS_STREAM
from rondo.contracts.training import TrainingConfig

ASYNCAPI_FILE = Path(asyncapi.__file__).with_name("asyncapi.json")
DOWN_JOB_ID = f"j-down-{uuid4().hex}"


def test_every_event_round_trips_through_json() -> None:
    for event_type in ALL_EVENTS:
        schema = event_type.model_json_schema()
        assert {"event_id", "occurred_at", "schema_version"} <= set(schema["properties"])
    event = LogBatch(
        agent_id="agent-1",
        job_id="j1",
        run_id="r1",
        source=LogSource(role="client", slot=1),
        first_line=0,
        lines=["a"],
    )
    again = LogBatch.model_validate_json(event.model_dump_json())
    assert again == event
    assert again.subject == "rondo.logs.agent-1.j1"
    assert again.source.file_name == "client_1.log"


def test_subject_templates_are_filled_from_fields() -> None:
    event = JobDispatched(job_id="j", agent_id="agent-7", run_id="r", server_host="127.0.0.1")
    assert event.subject == "rondo.agent.agent-7.dispatch"


def test_only_legal_state_transitions() -> None:
    assert is_legal_transition(JobState.PENDING, JobState.RUNNING)
    assert is_legal_transition(JobState.RUNNING, JobState.FINISHED)
    assert not is_legal_transition(JobState.FINISHED, JobState.RUNNING)
    assert not is_legal_transition(JobState.RUNNING, JobState.PENDING)


def test_committed_asyncapi_document_is_current() -> None:
    committed = ASYNCAPI_FILE.read_text()
    assert committed == asyncapi.render(), (
        "libs/contracts/asyncapi.json is stale: run "
        "`python -m rondo.contracts.asyncapi > libs/contracts/asyncapi.json`"
    )
    assert "JobSubmitted" in json.loads(committed)["components"]["schemas"]


async def _collect(
    settings: ServiceSettings, durable: str, into: list[str], seconds: float
) -> None:
    broker = make_broker(settings, "test-consumer")

    @broker.subscriber(
        JobCancelRequested.SUBJECT,
        stream=JOBS_STREAM.ref,
        durable=durable,
        pull_sub=PullSub(timeout=0.2),
    )
    async def on_cancel(event: JobCancelRequested) -> None:
        if event.job_id == DOWN_JOB_ID:  # other suites share the session stream
            into.append(event.event_id)

    await start_broker(broker, settings)
    await asyncio.sleep(seconds)
    await broker.stop()


@pytest.mark.timeout(60)
async def test_durable_consumer_gets_what_was_published_while_it_was_down(
    service_settings: ServiceSettings,
) -> None:
    received: list[str] = []
    # First run creates the durable consumer, then it goes away.
    await _collect(service_settings, "test-durable", received, 0.5)

    publisher = make_broker(service_settings, "test-publisher")
    await publisher.connect()
    await declare_streams(publisher, replicas=1)
    first = JobCancelRequested(job_id=DOWN_JOB_ID, requested_by="u")
    second = JobCancelRequested(job_id=DOWN_JOB_ID, requested_by="u")
    await publish(publisher, first)
    await publish(publisher, first)  # same event_id: de-duplicated by JetStream
    await publish(publisher, second)
    await publisher.stop()

    await _collect(service_settings, "test-durable", received, 1.5)
    assert received == [first.event_id, second.event_id]


def test_required_clients_are_min_clients_or_every_worker() -> None:
    assert TrainingConfig().required_clients(3) == 3
    assert TrainingConfig(min_clients=2).required_clients(3) == 2
    assert TrainingConfig(min_clients=5).required_clients(3) == 3
