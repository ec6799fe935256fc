"""Handing submitted jobs to the scheduler through an outbox.

A job is stored PENDING together with its `job.submitted` (`Job.submitted_event`) before the
event is published. When the bus does not take it (NATS unreachable for longer than `publish`
retries), the submission still succeeds: the job is stored, and `republish_forever` publishes
the event of every PENDING job the scheduler has not acknowledged yet (no snapshot of it was
applied) and that is older than `REPUBLISH_AFTER_S`, every `REPUBLISH_INTERVAL_S`. The event
keeps its `event_id`, and the scheduler stores a job once, so a republished job runs once.

The submit request itself tries the bus only briefly (`SUBMIT_PUBLISH_RETRY_S`, each try
waiting at most `SUBMIT_ACK_TIMEOUT_S` for JetStream): with NATS unreachable it answers 201
within seconds, not after `publish`'s full retry window, and the outbox does the rest.
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import anyio
from faststream.nats import NatsBroker
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from rondo.contracts.bus import publish
from rondo.contracts.events import JobSubmitted
from rondo.contracts.states import JobState
from rondo.gateway.models import Job

logger = logging.getLogger(__name__)

REPUBLISH_INTERVAL_S = 30.0
REPUBLISH_AFTER_S = 30.0
# A submit answers within about SUBMIT_PUBLISH_RETRY_S + SUBMIT_ACK_TIMEOUT_S on a dead bus.
SUBMIT_PUBLISH_RETRY_S = 2.0
SUBMIT_ACK_TIMEOUT_S = 3.0


async def hand_over(
    broker: NatsBroker,
    job: Job,
    retry_s: float = SUBMIT_PUBLISH_RETRY_S,
    ack_timeout_s: float = SUBMIT_ACK_TIMEOUT_S,
) -> bool:
    """Publish the job's stored `job.submitted`, trying for about `retry_s` only. False
    (logged) when the bus did not take it: the job stays in the outbox and is republished
    later, so nothing waits on a dead bus longer than that."""
    if job.submitted_event is None:
        return False
    event = JobSubmitted.model_validate(job.submitted_event)
    try:
        await publish(broker, event, retry_s=retry_s, ack_timeout_s=ack_timeout_s)
    except Exception as error:  # whatever the bus answers, the stored job is handed over later
        logger.warning("job %s stored; handing it over failed (%r): retried later", job.id, error)
        return False
    return True


def unacknowledged(engine: Engine, created_before: datetime) -> list[Job]:
    """PENDING jobs created before `created_before` of which no scheduler snapshot was applied."""
    statement = select(Job).where(
        Job.state == JobState.PENDING,
        col(Job.snapshot_at).is_(None),
        Job.created_at < created_before,
    )
    with Session(engine) as session:
        jobs = list(session.exec(statement).all())
    # A JSON column may hold JSON null rather than SQL NULL: checked here, not in SQL.
    return [job for job in jobs if job.submitted_event is not None]


async def republish_unacknowledged(engine: Engine, broker: NatsBroker, now: datetime) -> int:
    """One pass of the outbox; returns how many jobs were handed over."""
    jobs = await anyio.to_thread.run_sync(
        unacknowledged, engine, now - timedelta(seconds=REPUBLISH_AFTER_S)
    )
    handed = 0
    for job in jobs:
        if await hand_over(broker, job):
            handed += 1
    if handed:
        logger.info("republished %d job(s) the scheduler has not acknowledged", handed)
    return handed


async def republish_forever(
    engine: Engine, broker: NatsBroker, clock: Callable[[], datetime]
) -> None:
    """Run `republish_unacknowledged` every `REPUBLISH_INTERVAL_S` until cancelled."""
    while True:
        await asyncio.sleep(REPUBLISH_INTERVAL_S)
        try:
            await republish_unacknowledged(engine, broker, clock())
        except Exception:  # the database may be briefly unavailable: next pass
            logger.exception("republishing unacknowledged jobs failed")
