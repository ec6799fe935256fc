"""Who may publish and subscribe what on the bus: one identity per service, per worker-agent,
and the operator; the table nats-server enforces (`authorization { users = [...] }`).

Services are trusted with the JetStream API, except reading `RONDO_AGENTS` (dispatches carry
presigned URLs and startup kits meant for one agent) and, for all but artifacts, reading the
staging object store. An agent is allowed exactly: publishing events whose subject names itself
(see `rondo.contracts.events`), consuming its own two durables on `rondo.agent.<id>.>`, writing
(never reading) staging objects, answering its health requests, and its own reply inbox. Every
identity subscribes only to `_INBOX.<identity>.>` for replies, so nobody reads another's
replies or pull deliveries (`ServiceSettings.nats_inbox_prefix`).
"""

import re
from dataclasses import dataclass, field
from typing import Any

from rondo.contracts.config import inbox_prefix
from rondo.contracts.events import (
    ALL_EVENTS,
    AgentEvent,
    Event,
    JobCancelRequested,
    JobDispatched,
    JobFailed,
    JobFinished,
    JobOutputsWritten,
    JobProgress,
    JobStateChanged,
    JobSubmitted,
    RunStopRequested,
    WorkerHeartbeat,
)
from rondo.contracts.subjects import (
    AGENTS_STREAM,
    STAGING_OBJECT_STORE,
    Durables,
    agent_dispatch_subject,
    agent_stop_subject,
    health_subject,
    staging_stream_name,
)

OPERATOR = "operator"
SERVICES = ("gateway", "scheduler", "artifacts")
AGENT_IDENTITY_PREFIX = "agent-"
# Identity names and agent ids become subject tokens: no dots, spaces or wildcards.
SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")

JS_API = "$JS.API"
# `rondo.contracts.consumers.DeadLetter`: `rondo.deadletter.<durable>`.
DEAD_LETTERS = "rondo.deadletter"
STAGING_SUBJECTS = f"$O.{STAGING_OBJECT_STORE}.>"


def agent_identity(agent_id: str) -> str:
    """The bus user of a worker-agent."""
    return AGENT_IDENTITY_PREFIX + agent_id


@dataclass(frozen=True)
class Permissions:
    """Subjects one identity may publish to and subscribe to (deny wins over allow).
    `allow_responses`: it may answer requests it received (health replies)."""

    publish_allow: list[str]
    subscribe_allow: list[str]
    publish_deny: list[str] = field(default_factory=list)
    allow_responses: bool = False

    def config(self) -> dict[str, Any]:
        """The `permissions` block of a nats-server user."""
        publish: dict[str, list[str]] = {"allow": self.publish_allow}
        if self.publish_deny:
            publish["deny"] = self.publish_deny
        block: dict[str, Any] = {"publish": publish, "subscribe": {"allow": self.subscribe_allow}}
        if self.allow_responses:
            block["allow_responses"] = True
        return block


def _reading(stream: str) -> list[str]:
    """Every JetStream API subject that reads a stream's messages: consumers (all ways of
    creating, binding and pulling) and single-message gets."""
    return [
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.*.{stream}",
        f"{JS_API}.CONSUMER.*.{stream}.>",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.>",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
    ]


def _publishes(*events: type[Event]) -> list[str]:
    return [event.filter_subject() for event in events]


def _naming_agent(event: type[Event], agent_id: str) -> str:
    """`event`'s subjects that name `agent_id` (every other field a wildcard)."""
    return event.SUBJECT.replace("{agent_id}", agent_id).format_map(_Wildcards())


class _Wildcards(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "*"


# What each service publishes (besides the JetStream API and its acks).
SERVICE_EVENTS: dict[str, tuple[type[Event], ...]] = {
    "gateway": (JobSubmitted, JobCancelRequested),
    "scheduler": (
        JobStateChanged,
        JobProgress,
        JobFailed,
        JobFinished,
        JobDispatched,
        RunStopRequested,
    ),
    "artifacts": (JobOutputsWritten,),
}


def service_permissions(service: str) -> Permissions:
    """A Rondo service: its own events, the JetStream API (streams are declared by services)
    and acks; never a consumer or message read on `RONDO_AGENTS`, and the staging store is
    read (and emptied) only by artifacts."""
    # Never an ack of an agent's durable either: that would swallow its dispatches.
    publish_deny = [*_reading(AGENTS_STREAM.name), f"$JS.ACK.{AGENTS_STREAM.name}.>"]
    publish_allow = [
        *_publishes(*SERVICE_EVENTS[service]),
        f"{DEAD_LETTERS}.>",
        f"{JS_API}.>",
        "$JS.ACK.>",
    ]
    if service != "artifacts":
        publish_deny += _reading(staging_stream_name())
        publish_deny += [f"{JS_API}.STREAM.PURGE.{staging_stream_name()}"]
    else:
        # Reading an object is an ordered push consumer (flow control replies); deleting one
        # writes its meta.
        publish_allow += [STAGING_SUBJECTS, f"$JS.FC.{staging_stream_name()}.>"]
    subscribe = [f"{inbox_prefix(service)}.>", health_subject(service)]
    if service in ("gateway", "scheduler"):
        subscribe.append(WorkerHeartbeat.filter_subject())
    return Permissions(
        publish_allow=publish_allow,
        publish_deny=publish_deny,
        subscribe_allow=subscribe,
        allow_responses=True,
    )


def agent_permissions(agent_id: str) -> Permissions:
    """A worker-agent: events naming itself, its own durables on `RONDO_AGENTS`, write-only
    staging (chunks and meta; no read, no purge), the staging store's lookup."""
    if not SAFE_TOKEN.match(agent_id):
        raise ValueError(f"agent id {agent_id!r} is not a safe subject token")
    # Heartbeats, and every event an agent sends about its runs (they name it in the subject).
    events = (WorkerHeartbeat, *(e for e in ALL_EVENTS if issubclass(e, AgentEvent)))
    publish_allow = [_naming_agent(event, agent_id) for event in events]
    stream = AGENTS_STREAM.name
    for durable, subject in (
        (Durables.agent_dispatch(agent_id), agent_dispatch_subject(agent_id)),
        (Durables.agent_stop(agent_id), agent_stop_subject(agent_id)),
    ):
        publish_allow += [
            # nats-py creates a durable with its filter in the API subject; the server
            # refuses a body whose filter differs, so this names the only filter allowed.
            f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.{subject}",
            f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
            f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
            # Its consumers set an event they can never handle aside here.
            f"{DEAD_LETTERS}.{durable}",
        ]
    publish_allow += [
        f"{JS_API}.INFO",
        f"{JS_API}.STREAM.INFO.{staging_stream_name()}",
        f"$O.{STAGING_OBJECT_STORE}.C.>",
        f"$O.{STAGING_OBJECT_STORE}.M.>",
    ]
    return Permissions(
        publish_allow=publish_allow,
        subscribe_allow=[
            f"{inbox_prefix(agent_identity(agent_id))}.>",
            health_subject(f"worker-agent.{agent_id}"),
        ],
        allow_responses=True,
    )


def operator_permissions() -> Permissions:
    """The operator (CLI, `rondo status`, tests' admin): everything. Its password is in the
    stack's state file, which already holds every other secret of the stack."""
    return Permissions(publish_allow=[">"], subscribe_allow=[">"])


def permissions_for(identity: str) -> Permissions:
    """The permissions of `identity`: a service name, `agent-<id>`, or the operator."""
    if identity == OPERATOR:
        return operator_permissions()
    if identity in SERVICES:
        return service_permissions(identity)
    if identity.startswith(AGENT_IDENTITY_PREFIX):
        return agent_permissions(identity.removeprefix(AGENT_IDENTITY_PREFIX))
    raise ValueError(f"unknown bus identity {identity!r}")
