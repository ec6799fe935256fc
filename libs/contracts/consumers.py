"""One policy for every durable consumer on the Rondo bus: no event is ever silently dropped.

A service makes one `DurableConsumers` for its broker and declares each consumer with it:

    consumers = DurableConsumers(broker, settings)

    @consumers(JobSubmitted, Durables.SCHEDULER_SUBMITTED)
    async def on_job_submitted(event: JobSubmitted) -> None: ...

Underneath it is a FastStream `NatsRouter` (included into the broker) whose middleware,
`ConsumerPolicy`, decides every message's fate:

- the event's body names another subject than the one it arrived on (another sender, for
  events whose subject names theirs) → refused and logged: a forgery, and not dead-lettered
  (a dead letter fails the job it names, which a forger does not own);
- the handler returns → ack;
- the handler raises → nack with a delay that doubles per delivery, from
  `RONDO_CONSUMER_RETRY_DELAY_S` up to `RONDO_CONSUMER_MAX_RETRY_DELAY_S`; the consumer has no
  delivery limit, so the event is retried until it is handled (a database that is locked, an
  S3 that is down, a job not known yet: all just raise);
- the event can never be valid (it fails the handler's pydantic validation, or a model the
  handler makes of it, or the handler raises `NeverValid`) → a `DeadLetter` with the raw
  payload, the original subject, the durable and the error is published on
  `rondo.deadletter.<durable>` (stream RONDO_DEADLETTER), then the original is terminated. If
  the dead letter cannot be stored, the original is nacked instead (retried), so even a poison
  event is only let go once it is kept elsewhere. The scheduler consumes the dead letters: one
  about a job fails that job visibly.

The current span (the telemetry middleware's consume span) is tagged with the event's `job_id`
when it has one, so `rondo trace JOB_ID` finds every handler of the job.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from fast_depends.exceptions import ValidationError as ArgumentsInvalid
from faststream import AckPolicy
from faststream.exceptions import HandlerException, NackMessage, RejectMessage
from faststream.message import StreamMessage
from faststream.middlewares import BaseMiddleware
from faststream.nats import NatsBroker, NatsRouter, PullSub
from nats.js.api import ConsumerConfig
from pydantic import Field, ValidationError

from rondo.contracts.bus import publish, pull_inbox_prefix
from rondo.contracts.config import ServiceSettings
from rondo.contracts.events import Event
from rondo.contracts.subjects import stream_of
from rondo.contracts.telemetry import tag_job

if TYPE_CHECKING:
    from faststream._internal.context.repository import ContextRepo

logger = logging.getLogger(__name__)

# How long a pull consumer waits on an empty stream before asking again. A message is handed
# over as soon as it arrives; this only bounds how quickly a stopping consumer notices.
PULL_TIMEOUT_S = 1.0
# Events dated further ahead than this are from a wrong clock, or forged (see `dated_ahead`).
MAX_CLOCK_SKEW_S = 30.0
# A payload quoted in a dead letter is cut to this many characters (the stream keeps events of
# at most 1 MiB; the dead letter also carries the error).
MAX_PAYLOAD_CHARS = 256 * 1024
# The first failure of an event is logged with its traceback, then every this many deliveries.
TRACEBACK_EVERY = 10

H = TypeVar("H", bound=Callable[..., Any])


class NeverValid(Exception):
    """Raised by a handler for an event that no retry can make right (a path outside the
    job's folder, a checksum that does not match): the event is dead-lettered, not retried."""


class RetryLater(Exception):
    """Raised by a handler for an event that cannot be handled yet, as expected (its job is
    not known yet, an earlier event is still on the way): retried like any failure, but
    logged as information, without a traceback."""


class DeadLetter(Event):
    """An event a durable consumer set aside because it can never be handled: it failed
    validation, or its handler said so (`NeverValid`). A dead letter about a job fails it."""

    SUBJECT: ClassVar[str] = "rondo.deadletter.{durable}"

    durable: str = Field(description="The consumer that set the event aside")
    event_subject: str = Field(description="Subject the event was published on")
    stream: str
    stream_sequence: int
    deliveries: int = Field(description="How often the consumer was handed the event")
    error: str
    payload: str = Field(description="The event's raw body (UTF-8; cut to 256 KiB)")
    job_id: str | None = Field(default=None, description="The raw payload's job_id, if any")


@dataclass(frozen=True)
class RetryDelays:
    """Redelivery delay of an event whose handler failed: base, 2*base, 4*base, ... up to max."""

    base_s: float
    max_s: float

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> "RetryDelays":
        return cls(settings.consumer_retry_delay_s, settings.consumer_max_retry_delay_s)

    def after(self, deliveries: int) -> float:
        """The delay after the `deliveries`-th failed delivery (1 for the first)."""
        return min(self.base_s * 2 ** min(max(deliveries, 1) - 1, 30), self.max_s)


def job_id_of(body: Any) -> str | None:
    """The `job_id` of a decoded event body, if it names one."""
    if isinstance(body, dict):
        job_id = body.get("job_id")
        if isinstance(job_id, str) and job_id:
            return job_id
    return None


def dated_ahead(occurred_at: datetime, now: datetime, skew_s: float = MAX_CLOCK_SKEW_S) -> bool:
    """Whether an event claims to have happened later than `now` plus the allowed clock skew.
    Such an event would shadow every real one after it (a forged "round 9999 in 2099")."""
    return occurred_at > now + timedelta(seconds=skew_s)


def describe_invalid(error: ValidationError, handler_names: frozenset[str] = frozenset()) -> str:
    """A validation error as one line per field: `timing.worker_lost_after_s: Input should be
    a finite number`. FastStream validates a handler's arguments as one model titled after the
    handler (`handler_names`); the argument's name is left out of those locations."""
    arguments = error.title in handler_names
    problems = []
    for problem in error.errors(include_url=False):
        location = [str(part) for part in problem.get("loc", ())]
        if arguments:
            location = location[1:]
        problems.append(f"{'.'.join(location) or 'event'}: {problem.get('msg', '')}")
    return "; ".join(problems) or str(error)


class ConsumerPolicy:
    """The FastStream middleware of `DurableConsumers` (see the module docstring): it makes
    one `_MessagePolicy` per message, as FastStream asks of a broker middleware."""

    def __init__(self, broker: NatsBroker, delays: RetryDelays) -> None:
        self.broker = broker
        self.delays = delays
        # The event each durable consumes, to check the subject an event arrived on.
        self.events: dict[str, type[Event]] = {}

    def __call__(self, msg: Any, /, *, context: "ContextRepo") -> "_MessagePolicy":
        return _MessagePolicy(msg, context=context, policy=self)

    async def dead_letter(self, message: StreamMessage[Any], error: str) -> None:
        """Keep the event on its dead-letter subject; raises if that cannot be stored."""
        meta = message.raw_message.metadata
        payload = bytes(message.body).decode("utf-8", errors="backslashreplace")
        letter = DeadLetter(
            # One dead letter per stored event, however often it is set aside again.
            event_id=f"deadletter.{meta.stream}.{meta.sequence.stream}",
            durable=meta.consumer,
            event_subject=message.raw_message.subject,
            stream=meta.stream,
            stream_sequence=meta.sequence.stream,
            deliveries=meta.num_delivered or 1,
            error=error,
            payload=payload[:MAX_PAYLOAD_CHARS],
            job_id=job_id_of(_parse_json(message.body)),
        )
        await publish(self.broker, letter)
        logger.error(
            "%s on %s (job %s) set aside as %s: %s",
            letter.event_subject,
            letter.durable,
            letter.job_id or "-",
            letter.subject,
            error,
        )


class _MessagePolicy(BaseMiddleware):
    """Applies `ConsumerPolicy` to one message."""

    def __init__(self, msg: Any, /, *, context: "ContextRepo", policy: ConsumerPolicy) -> None:
        super().__init__(msg, context=context)
        self.policy = policy

    async def consume_scope(self, call_next: Callable[..., Any], msg: StreamMessage[Any]) -> Any:
        body = _parse_json(msg.body)
        if (job_id := job_id_of(body)) is not None:
            tag_job(job_id)
        meta = msg.raw_message.metadata
        event_type = self.policy.events.get(meta.consumer)
        if event_type is not None and not names_its_subject(
            event_type, body, msg.raw_message.subject
        ):
            # Not dead-lettered: a dead letter fails the job its body names, and this body
            # names what its sender may not speak for.
            logger.error(
                "%s on %s refused: its body names another sender or job than its subject",
                msg.raw_message.subject,
                meta.consumer,
            )
            raise RejectMessage()
        try:
            return await call_next(msg)
        except HandlerException:
            raise  # the handler chose the message's fate itself (AckMessage, NackMessage, ...)
        except ValidationError as error:
            # The event fails its model (or one the handler makes of it): no retry changes that.
            problems = describe_invalid(error, self._handler_names())
            await self._set_aside(msg, f"invalid event: {problems}")
        except ArgumentsInvalid as error:  # FastDepends' wrapper of the same
            await self._set_aside(msg, f"invalid event: {error.original_error}")
        except NeverValid as error:
            await self._set_aside(msg, f"{type(error).__name__}: {error}")
        except Exception as error:
            raise self._retry(msg, error) from error

    def _handler_names(self) -> frozenset[str]:
        subscriber = self.context.get_local("handler_")
        return frozenset(call.name for call in getattr(subscriber, "calls", ()))

    async def _set_aside(self, msg: StreamMessage[Any], error: str) -> None:
        try:
            await self.policy.dead_letter(msg, error)
        except Exception as publish_error:
            raise self._retry(msg, publish_error) from publish_error
        raise RejectMessage()  # terminated: JetStream never hands it out again

    def _retry(self, msg: StreamMessage[Any], error: Exception) -> NackMessage:
        meta = msg.raw_message.metadata
        deliveries = meta.num_delivered or 1
        delay_s = self.policy.delays.after(deliveries)
        if isinstance(error, RetryLater):
            logger.info(
                "%s on %s waits (delivery %d): %s; retry in %.1f s",
                msg.raw_message.subject, meta.consumer, deliveries, error, delay_s,
            )  # fmt: skip
            return NackMessage(delay=delay_s)
        logger.warning(
            "%s on %s failed (delivery %d): %r; retry in %.1f s",
            msg.raw_message.subject,
            meta.consumer,
            deliveries,
            error,
            delay_s,
            exc_info=error if deliveries % TRACEBACK_EVERY == 1 else None,
        )
        return NackMessage(delay=delay_s)


def names_its_subject(event_type: type[Event], body: Any, subject: str) -> bool:
    """Whether a raw event body names the subject it arrived on, for events whose subject
    template has fields (`rondo.run.{agent_id}.started`): the bus lets a sender publish only
    on subjects naming itself, so a body naming another sender (or job) is forged. A body
    that cannot fill the template is left to validation."""
    if "{" not in event_type.SUBJECT or not isinstance(body, dict):
        return True
    try:
        return event_type.SUBJECT.format(**body) == subject
    except (KeyError, IndexError, ValueError):
        return True


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, TypeError):
        return None


class DurableConsumers:
    """The durable consumers of one service, every one under `ConsumerPolicy`.

    Made before the broker starts (its router is included into the broker at once); call it
    with a subject and a durable name to decorate a handler: a typed async function of one
    pydantic event. The subject's stream is found from `rondo.contracts.subjects`.
    """

    def __init__(self, broker: NatsBroker, settings: ServiceSettings) -> None:
        self.broker = broker
        self.delays = RetryDelays.from_settings(settings)
        # Deliveries into this identity's own inbox: the bus allows no other (bus_permissions).
        self.inbox_prefix = pull_inbox_prefix(settings)
        self.policy = ConsumerPolicy(broker, self.delays)
        self.router = NatsRouter(
            middlewares=(self.policy,),
            # Only an exception the policy lets through (none it catches) meets this.
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )
        broker.include_router(self.router)

    def __call__(
        self,
        event: type[Event],
        durable: str,
        *,
        subject: str | None = None,
        ack_wait_s: float | None = None,
        pull_timeout_s: float = PULL_TIMEOUT_S,
        title: str | None = None,
    ) -> Callable[[H], H]:
        """A durable pull consumer named `durable` of `event`s, one message at a time: on
        every subject the event's template allows (`event.filter_subject()`), or on `subject`
        (a narrower filter, e.g. one agent's dispatches).

        An event whose body does not name the subject it arrived on is refused (logged).
        `ack_wait_s`: how long one handling may take before JetStream hands the event out
        again (the server's default, 30 s, when None); long copies ask for more.
        """
        subject = subject or event.filter_subject()
        stream = stream_of(subject)
        if stream is None:
            raise ValueError(f"no stream stores {subject}: a durable consumer needs one")
        # No max_deliver: an event is retried until handled or dead-lettered, never dropped.
        config = ConsumerConfig(ack_wait=ack_wait_s, max_deliver=-1)
        subscriber = self.router.subscriber(
            subject,
            stream=stream.ref,
            durable=durable,
            config=config,
            # One at a time: FastStream would handle a fetched batch concurrently.
            pull_sub=PullSub(batch_size=1, timeout=pull_timeout_s),
            inbox_prefix=self.inbox_prefix,
            title=title or f"{durable}:{subject}",
        )

        self.policy.events[durable] = event

        def register(handler: H) -> H:
            subscriber(handler)
            return handler

        return register
