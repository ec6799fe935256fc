"""The bus refuses what an identity may not do: a real nats-server with the auth config `rondo
up` writes (`rondo.stack.bus_auth`), and plain nats-py clients trying each forgery and read of
issue 12 as a worker-agent (or as a service that must not read). Every attempt is its own
test, and each fails if the server lets it through (checked once with the permissions block
emptied); the legitimate flows are checked on the same server.
"""

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from faststream.nats import PullSub
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import ConsumerConfig

from rondo.contracts.bus import (
    connect_options,
    declare_streams,
    look_up_staging,
    make_broker,
    message_id,
    publish,
    register_health,
)
from rondo.contracts.bus_permissions import (
    OPERATOR,
    SERVICE_EVENTS,
    agent_identity,
    agent_permissions,
)
from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import (
    ALL_EVENTS,
    AgentEvent,
    HealthReply,
    JobDispatched,
    JobSubmitted,
    RunStarted,
    WorkerHeartbeat,
    arrived_on_own_subject,
)
from rondo.contracts.subjects import (
    AGENTS_STREAM,
    STAGING_OBJECT_STORE,
    Durables,
    agent_dispatch_subject,
    health_subject,
    staging_stream_name,
    subject_matches,
)
from rondo.stack.bus_auth import write_auth_config
from rondo.stack.servers import NatsServer

AGENT, OTHER = "a1", "a2"
IDENTITIES = ("gateway", "scheduler", "artifacts", agent_identity(AGENT), agent_identity(OTHER))
REFUSAL_WAIT_S = 3.0
STAGED_NAME = "job-b/run-b/round_0.pt"


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {identity: secrets.token_urlsafe(32) for identity in (*IDENTITIES, OPERATOR)}


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]) -> Iterator[str]:
    """A nats-server started with the auth config; yields its URL."""
    folder = tmp_path_factory.mktemp("bus-auth")
    config = write_auth_config(folder / "nats-auth.conf", passwords)
    assert config.stat().st_mode & 0o777 == 0o600
    assert not any(p in config.read_text() for p in passwords.values()), "plain password"
    server = NatsServer(store_dir=folder / "nats", config_file=config)
    server.start(folder / "nats.log")
    yield server.url
    server.stop()


def settings_of(bus: str, passwords: dict[str, str], identity: str) -> ServiceSettings:
    return ServiceSettings(nats_url=bus, nats_user=identity, nats_password=passwords[identity])


class Connection:
    """A plain nats-py client as one identity, collecting the server's refusals."""

    def __init__(self, client: Client, errors: list[str]) -> None:
        self.client = client
        self.errors = errors
        self.js = client.jetstream(timeout=1.0)

    async def refused(self, what: str) -> bool:
        """Whether the server reported a permissions violation naming `what` (nats-py
        lower-cases the error)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REFUSAL_WAIT_S
        while loop.time() < deadline:
            if any("permissions violation" in e and what.lower() in e for e in self.errors):
                return True
            await asyncio.sleep(0.05)
        return False


async def connect(bus: str, passwords: dict[str, str], identity: str) -> Connection:
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error))

    options = connect_options(settings_of(bus, passwords, identity))
    client = await nats.connect(bus, error_cb=on_error, allow_reconnect=False, **options)
    return Connection(client, errors)


@pytest.fixture
async def as_identity(bus: str, passwords: dict[str, str]) -> AsyncIterator[Any]:
    opened: list[Connection] = []

    async def open_as(identity: str) -> Connection:
        connection = await connect(bus, passwords, identity)
        opened.append(connection)
        return connection

    yield open_as
    for connection in opened:
        await connection.client.close()


@pytest.fixture(scope="module")
async def declared(bus: str, passwords: dict[str, str]) -> None:
    """The streams and staging store, declared by a service (agents may not); one staged
    object and one dispatch for agent a2 are in them."""
    broker = make_broker(settings_of(bus, passwords, "scheduler"), "scheduler")
    await broker.connect()
    try:
        await declare_streams(broker, replicas=1)
        dispatch = JobDispatched(
            job_id="job-b", agent_id=OTHER, run_id="run-b", server_host="h", clients=[]
        )
        await publish(broker, dispatch)
    finally:
        await broker.stop()
    agent = make_broker(settings_of(bus, passwords, agent_identity(OTHER)), "agent")
    await agent.connect()
    try:
        store = await look_up_staging(agent)
        await store.put(STAGED_NAME, b"checkpoint of another tenant")
    finally:
        await agent.stop()


# --- authentication -------------------------------------------------------------------------


async def test_a_connection_without_credentials_is_refused(bus: str) -> None:
    with pytest.raises(NatsError, match=r"(?i)authorization violation"):
        await nats.connect(bus, allow_reconnect=False, max_reconnect_attempts=0)


async def test_a_wrong_password_is_refused(bus: str) -> None:
    with pytest.raises(NatsError, match=r"(?i)authorization violation"):
        await nats.connect(
            bus, user="scheduler", password="guess", allow_reconnect=False, max_reconnect_attempts=0
        )


# --- what an agent may not publish ----------------------------------------------------------

FORGERIES = [
    "rondo.job.cancel_requested",
    "rondo.job.submitted",
    "rondo.job.progress",
    "rondo.job.failed",
    "rondo.job.state_changed",
    "rondo.job.finished",
    f"rondo.run.{OTHER}.started",
    f"rondo.run.{OTHER}.process",
    f"rondo.round.{OTHER}.completed",
    f"rondo.artifact.{OTHER}.staged",
    f"rondo.logs.{OTHER}.job-b",
    f"rondo.worker.heartbeat.{OTHER}",
    agent_dispatch_subject(OTHER),
    f"$JS.API.STREAM.CREATE.{AGENTS_STREAM.name}",
    f"$JS.API.STREAM.UPDATE.{AGENTS_STREAM.name}",
    f"$JS.API.STREAM.DELETE.{staging_stream_name()}",
    f"$JS.API.STREAM.PURGE.{staging_stream_name()}",
]


@pytest.mark.parametrize("subject", FORGERIES)
async def test_an_agent_cannot_publish(declared: None, as_identity: Any, subject: str) -> None:
    agent = await as_identity(agent_identity(AGENT))
    observer = await as_identity(OPERATOR)
    seen: list[str] = []

    async def on_message(msg: Any) -> None:
        seen.append(msg.subject)

    await observer.client.subscribe(subject, cb=on_message)
    await observer.client.flush()
    await agent.client.publish(subject, json.dumps({"job_id": "job-b"}).encode())
    await agent.client.flush()
    assert await agent.refused(subject), f"{subject} was not refused"
    await asyncio.sleep(0.2)
    assert seen == [], f"{subject} reached a subscriber"


# --- what an agent may not read -------------------------------------------------------------

READS = [
    # A consumer on the other agent's dispatches, however it is asked for.
    f"$JS.API.CONSUMER.CREATE.{AGENTS_STREAM.name}.spy.{agent_dispatch_subject(OTHER)}",
    f"$JS.API.CONSUMER.CREATE.{AGENTS_STREAM.name}.spy",
    f"$JS.API.CONSUMER.CREATE.{AGENTS_STREAM.name}",
    f"$JS.API.CONSUMER.DURABLE.CREATE.{AGENTS_STREAM.name}.spy",
    f"$JS.API.CONSUMER.MSG.NEXT.{AGENTS_STREAM.name}.{Durables.agent_dispatch(OTHER)}",
    f"$JS.API.CONSUMER.INFO.{AGENTS_STREAM.name}.{Durables.agent_dispatch(OTHER)}",
    f"$JS.API.STREAM.MSG.GET.{AGENTS_STREAM.name}",
    f"$JS.API.DIRECT.GET.{AGENTS_STREAM.name}",
    f"$JS.API.DIRECT.GET.{AGENTS_STREAM.name}.{agent_dispatch_subject(OTHER)}",
    # The staging store: agents write, never read.
    f"$JS.API.STREAM.MSG.GET.{staging_stream_name()}",
    f"$JS.API.DIRECT.GET.{staging_stream_name()}",
    f"$JS.API.DIRECT.GET.{staging_stream_name()}.$O.{STAGING_OBJECT_STORE}.M.x",
    f"$JS.API.CONSUMER.CREATE.{staging_stream_name()}",
    f"$JS.API.CONSUMER.CREATE.{staging_stream_name()}.spy.$O.{STAGING_OBJECT_STORE}.C.>",
    # Stream contents by other means.
    f"$JS.API.STREAM.INFO.{AGENTS_STREAM.name}",
    "$JS.API.STREAM.LIST",
]


@pytest.mark.parametrize("subject", READS)
async def test_an_agent_cannot_ask(declared: None, as_identity: Any, subject: str) -> None:
    agent = await as_identity(agent_identity(AGENT))
    body = json.dumps({"seq": 1, "stream_name": AGENTS_STREAM.name, "config": {}}).encode()
    with pytest.raises(Exception):  # noqa: B017 - no answer comes: the request times out
        await agent.client.request(subject, body, timeout=1.0)
    assert await agent.refused(subject), f"{subject} was not refused"


SUBSCRIPTIONS = [
    agent_dispatch_subject(OTHER),  # the scheduler's publish itself, presigned URLs inside
    "rondo.agent.>",
    "rondo.>",
    "_INBOX.>",  # everyone's replies and pull deliveries
    f"_INBOX.{agent_identity(OTHER)}.>",
    "_INBOX.scheduler.>",
    "$O.>",
    health_subject("scheduler"),  # answering for a service
]


@pytest.mark.parametrize("subject", SUBSCRIPTIONS)
async def test_an_agent_cannot_subscribe(declared: None, as_identity: Any, subject: str) -> None:
    agent = await as_identity(agent_identity(AGENT))
    await agent.client.subscribe(subject)
    await agent.client.flush()
    assert await agent.refused(subject), f"subscribing to {subject} was not refused"


async def test_an_agent_cannot_name_its_durable_but_filter_another_agent(
    declared: None, as_identity: Any
) -> None:
    """The allowed create subject names the agent's own filter; a body asking for another
    filter (or several) is refused by the server itself."""
    agent = await as_identity(agent_identity(AGENT))
    durable = Durables.agent_dispatch(AGENT)
    subject = (
        f"$JS.API.CONSUMER.CREATE.{AGENTS_STREAM.name}.{durable}.{agent_dispatch_subject(AGENT)}"
    )
    for config in (
        {"durable_name": durable, "name": durable, "filter_subject": "rondo.agent.>"},
        {"durable_name": durable, "name": durable, "filter_subjects": ["rondo.agent.>"]},
    ):
        body = json.dumps({"stream_name": AGENTS_STREAM.name, "config": config}).encode()
        reply = await agent.client.request(subject, body, timeout=2.0)
        answer = json.loads(reply.data)
        assert "error" in answer, f"{config} was accepted: {answer}"


async def test_an_agent_cannot_read_a_staged_object(declared: None, as_identity: Any) -> None:
    agent = await as_identity(agent_identity(AGENT))
    store = await agent.js.object_store(STAGING_OBJECT_STORE)
    with pytest.raises(Exception):  # noqa: B017 - the meta read gets no answer
        await store.get(STAGED_NAME)
    assert await agent.refused(f"$JS.API.STREAM.MSG.GET.{staging_stream_name()}")


@pytest.mark.parametrize("service", ["gateway", "scheduler"])
async def test_services_but_artifacts_cannot_read_staging(
    declared: None, as_identity: Any, service: str
) -> None:
    connection = await as_identity(service)
    store = await connection.js.object_store(STAGING_OBJECT_STORE)
    with pytest.raises(Exception):  # noqa: B017
        await store.get(STAGED_NAME)
    assert await connection.refused(f"$JS.API.STREAM.MSG.GET.{staging_stream_name()}")


@pytest.mark.parametrize("service", ["gateway", "scheduler", "artifacts"])
async def test_no_service_reads_the_agents_stream(
    declared: None, as_identity: Any, service: str
) -> None:
    connection = await as_identity(service)
    with pytest.raises(Exception):  # noqa: B017
        await connection.js.pull_subscribe(
            agent_dispatch_subject(OTHER), durable="spy", stream=AGENTS_STREAM.name
        )
    assert await connection.refused("$JS.API.CONSUMER.")
    with pytest.raises(Exception):  # noqa: B017
        await connection.js.get_msg(AGENTS_STREAM.name, seq=1)
    assert await connection.refused(f"$JS.API.STREAM.MSG.GET.{AGENTS_STREAM.name}")


@pytest.mark.parametrize(
    ("service", "subject"),
    [
        ("gateway", "rondo.job.state_changed"),
        ("gateway", "rondo.job.failed"),
        ("gateway", agent_dispatch_subject(AGENT)),
        ("artifacts", "rondo.job.failed"),
        ("artifacts", "rondo.job.cancel_requested"),
        ("scheduler", "rondo.job.submitted"),
        ("scheduler", "rondo.job.cancel_requested"),
    ],
)
async def test_a_service_publishes_only_its_own_events(
    declared: None, as_identity: Any, service: str, subject: str
) -> None:
    connection = await as_identity(service)
    await connection.client.publish(subject, b"{}")
    await connection.client.flush()
    assert await connection.refused(subject), f"{service} published {subject}"


# --- the legitimate flows -------------------------------------------------------------------


async def test_the_legitimate_flows_work(
    bus: str, passwords: dict[str, str], declared: None, tmp_path: Path
) -> None:
    """The agent consumes its own dispatches, answers health, sends its heartbeat and run
    events and stages a file; artifacts reads the file; the gateway submits a job; a
    service consumes the agent's events on a wildcard filter."""
    agent_settings = settings_of(bus, passwords, agent_identity(AGENT))
    agent = make_broker(agent_settings, "worker-agent")
    dispatches: asyncio.Queue[JobDispatched] = asyncio.Queue()

    @agent.subscriber(
        agent_dispatch_subject(AGENT),
        stream=AGENTS_STREAM.ref,
        durable=Durables.agent_dispatch(AGENT),
        pull_sub=PullSub(timeout=1.0),
    )
    async def on_dispatch(event: JobDispatched) -> None:
        await dispatches.put(event)

    register_health(agent, f"worker-agent.{AGENT}")

    scheduler = make_broker(settings_of(bus, passwords, "scheduler"), "scheduler")
    started: asyncio.Queue[tuple[str, RunStarted]] = asyncio.Queue()

    @scheduler.subscriber(
        RunStarted.filter_subject(),
        stream="RONDO_JOBS",
        durable="security-test-run-started",
        pull_sub=PullSub(timeout=1.0),
        config=ConsumerConfig(),
    )
    async def on_started(event: RunStarted) -> None:
        await started.put((event.subject, event))

    gateway = make_broker(settings_of(bus, passwords, "gateway"), "gateway")
    artifacts = make_broker(settings_of(bus, passwords, "artifacts"), "artifacts")
    brokers = (agent, scheduler, gateway, artifacts)
    for broker in brokers:
        await broker.start()
    try:
        store = await look_up_staging(agent)
        info = await store.put("job-a/run-a/round_0.pt", b"weights")
        assert info.size == len(b"weights")
        # A file of several chunks, as the agent's spool stages checkpoints.
        large = tmp_path / "round_1.pt"
        large.write_bytes(secrets.token_bytes(300 * 1024))
        with large.open("rb") as data:
            await store.put("job-a/run-a/round_1.pt", data)

        await publish(
            scheduler,
            JobDispatched(job_id="job-a", agent_id=AGENT, run_id="run-a", server_host="h"),
        )
        received = await asyncio.wait_for(dispatches.get(), 15)
        assert received.run_id == "run-a"

        await publish(
            agent, RunStarted(job_id="job-a", agent_id=AGENT, run_id="run-a", nvflare_job_id="n")
        )
        subject, event = await asyncio.wait_for(started.get(), 15)
        assert subject == f"rondo.run.{AGENT}.started" and arrived_on_own_subject(event, subject)

        operator = await connect(bus, passwords, OPERATOR)
        heartbeats = await operator.client.subscribe(WorkerHeartbeat.filter_subject())
        await operator.client.flush()
        beat = WorkerHeartbeat(
            agent_id=AGENT, host="h", slots=[], fl_port_range=(1, 2), started_at=event.occurred_at
        )
        await publish(agent, beat)
        assert (await heartbeats.next_msg(timeout=5)).subject == beat.subject

        reader = await artifacts.config.connection_state.stream.object_store(STAGING_OBJECT_STORE)
        assert (await reader.get("job-a/run-a/round_0.pt")).data == b"weights"
        assert (await reader.get("job-a/run-a/round_1.pt")).data == large.read_bytes()
        await reader.delete("job-a/run-a/round_1.pt")  # artifacts empties the store

        submitted = JobSubmitted(
            job_id="job-a",
            user_id="u",
            bucket="b",
            name="n",
            prefix="jobs/n/",
            shard_keys=[],
            has_custom_app=False,
        )
        await publish(gateway, submitted)

        try:
            reply = await operator.client.request(
                health_subject(f"worker-agent.{AGENT}"), b"", timeout=5
            )
            assert HealthReply.model_validate_json(reply.data).healthy
        finally:
            await operator.client.close()
    finally:
        for broker in brokers:
            await broker.stop()


def test_a_body_naming_another_agent_than_its_subject_is_forged() -> None:
    event = RunStarted(job_id="j", agent_id=OTHER, run_id="r", nvflare_job_id="n")
    assert arrived_on_own_subject(event, f"rondo.run.{OTHER}.started")
    assert not arrived_on_own_subject(event, f"rondo.run.{AGENT}.started")


def test_every_event_has_exactly_one_kind_of_sender() -> None:
    """A new event must be given to its sender here, or nobody may publish it."""
    for event in ALL_EVENTS:
        senders = [s for s, events in SERVICE_EVENTS.items() if event in events]
        by_agent = issubclass(event, AgentEvent) or event is WorkerHeartbeat
        assert len(senders) + by_agent == 1, f"{event.__name__}: {senders}, agent={by_agent}"
        if by_agent:
            own = event.SUBJECT.replace("{agent_id}", AGENT).replace("{job_id}", "j")
            allowed = agent_permissions(AGENT).publish_allow
            assert any(subject_matches(own, pattern) for pattern in allowed), event.__name__


async def test_an_agent_cannot_preempt_another_agents_event_by_its_id(
    bus: str, passwords: dict[str, str], declared: None
) -> None:
    """Agents' event ids are predictable (job, run, file); one agent publishing first with
    the id of another's coming event must not make the stream drop that event."""
    victim_id = "0123456789abcdef0123456789abcdef"
    attacker = make_broker(settings_of(bus, passwords, agent_identity(AGENT)), "attacker")
    victim = make_broker(settings_of(bus, passwords, agent_identity(OTHER)), "victim")
    await attacker.connect()
    await victim.connect()
    try:
        fields = {"job_id": "job-b", "run_id": "run-b", "nvflare_job_id": "n"}
        early = RunStarted(event_id=victim_id, agent_id=AGENT, **fields)
        real = RunStarted(event_id=victim_id, agent_id=OTHER, **fields)
        await publish(attacker, early)
        js = victim.config.connection_state.stream
        ack = await js.publish(
            real.subject,
            real.model_dump_json().encode(),
            headers={"Nats-Msg-Id": message_id(victim, real)},
        )
        assert not ack.duplicate, "the victim's event was dropped as a duplicate"
        again = await js.publish(
            real.subject,
            real.model_dump_json().encode(),
            headers={"Nats-Msg-Id": message_id(victim, real)},
        )
        assert again.duplicate, "the victim's own retry must still be de-duplicated"
    finally:
        await attacker.stop()
        await victim.stop()
