"""Dead letters fail their job visibly: the scheduler on a real bus (its own nats-server).

A `job.submitted` that can never be read (what the gateway once published for
`"worker_lost_after_s": Infinity`) is set aside on the scheduler's dead-letter subject with its
payload and error, and the job, which the scheduler never stored, is announced FAILED (cause
`other`, naming the event); a poison event of a job the scheduler knows fails it through the
state machine.
"""

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from events_helpers import Watcher, eventually
from nats.aio.msg import Msg

from rondo.contracts.bus import publish
from rondo.contracts.config import ServiceSettings
from rondo.contracts.consumers import DeadLetter
from rondo.contracts.events import (
    FailureCause,
    JobCancelRequested,
    JobFailed,
    JobStateChanged,
    JobSubmitted,
)
from rondo.contracts.states import JobState
from rondo.contracts.subjects import JOBS_STREAM, Durables
from rondo.scheduler.config import SchedulerSettings
from rondo.scheduler.service import Scheduler, build_app

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def scheduler_settings(
    events_settings: ServiceSettings, tmp_path_factory: pytest.TempPathFactory
) -> SchedulerSettings:
    values = events_settings.model_dump()
    values |= {
        "data_dir": tmp_path_factory.mktemp("scheduler-data"),
        "platform_bucket": f"platform-{secrets.token_hex(4)}",
    }
    return SchedulerSettings(**values)


@pytest.fixture
async def scheduler(
    scheduler_settings: SchedulerSettings, watcher: Watcher
) -> AsyncIterator[Scheduler]:
    for subject in (JobStateChanged.SUBJECT, JobFailed.SUBJECT, "rondo.deadletter.>"):
        await watcher.watch(subject)
    app, scheduler = build_app(scheduler_settings)
    async with app:
        yield scheduler


def submitted(job_id: str) -> JobSubmitted:
    return JobSubmitted(
        job_id=job_id,
        user_id="user-1",
        bucket="user-bucket",
        name=f"job-{job_id}",
        prefix=f"jobs/job-{job_id}/",
        shard_keys=[f"jobs/job-{job_id}/shards/shard_0.zip"],
        has_custom_app=False,
    )


def of_job(watcher: Watcher, subject: str, job_id: str) -> list[dict[str, Any]]:
    bodies = [json.loads(m.data) for m in watcher.messages if m.subject == subject]
    return [body for body in bodies if body.get("job_id") == job_id]


def letters(watcher: Watcher, durable: str) -> list[Msg]:
    return [m for m in watcher.messages if m.subject == DeadLetter.SUBJECT.format(durable=durable)]


async def test_an_unreadable_submission_is_dead_lettered_and_its_job_failed(
    scheduler: Scheduler, watcher: Watcher
) -> None:
    job_id = f"job-{secrets.token_hex(4)}"
    body = submitted(job_id).model_dump(mode="json")
    body["timing"]["worker_lost_after_s"] = None  # pydantic's JSON for float("inf")
    raw = json.dumps(body).encode()
    await watcher.broker.publish(raw, subject=JobSubmitted.SUBJECT, stream=JOBS_STREAM.name)

    durable = Durables.SCHEDULER_SUBMITTED
    await eventually(lambda: letters(watcher, durable), "the dead letter")
    letter = DeadLetter.model_validate_json(letters(watcher, durable)[0].data)
    assert letter.job_id == job_id
    assert letter.payload == raw.decode()
    assert letter.event_subject == JobSubmitted.SUBJECT
    assert "timing.worker_lost_after_s" in letter.error

    await eventually(lambda: of_job(watcher, JobFailed.SUBJECT, job_id), "job.failed")
    [changed] = of_job(watcher, JobStateChanged.SUBJECT, job_id)
    snapshot = changed["snapshot"]
    assert snapshot["state"] == JobState.FAILED
    assert snapshot["error"]["cause"] == FailureCause.OTHER
    assert JobSubmitted.SUBJECT in snapshot["error"]["message"]
    assert "timing.worker_lost_after_s" in snapshot["error"]["message"]
    [failed] = of_job(watcher, JobFailed.SUBJECT, job_id)
    assert failed["message"] == snapshot["error"]["message"]
    assert scheduler.store.get_job(job_id) is None  # never stored: it could not be read


async def test_a_poison_event_of_a_known_job_fails_it_through_the_state_machine(
    scheduler: Scheduler, watcher: Watcher
) -> None:
    job_id = f"job-{secrets.token_hex(4)}"
    await publish(watcher.broker, submitted(job_id))
    await eventually(lambda: scheduler.store.get_job(job_id) is not None, "the job stored")

    poison = json.dumps({"job_id": job_id, "mode": "explode", "requested_by": "u"}).encode()
    subject = JobCancelRequested.SUBJECT
    await watcher.broker.publish(poison, subject=subject, stream=JOBS_STREAM.name)

    def state() -> JobState | None:
        job = scheduler.store.get_job(job_id)
        return job.state if job else None

    await eventually(lambda: state() == JobState.FAILED, "the job failed")
    job = scheduler.store.get_job(job_id)
    assert job is not None
    assert job.cause == FailureCause.OTHER
    assert subject in job.message
    assert Durables.SCHEDULER_CANCEL in job.message
    assert "mode" in job.message
    await eventually(lambda: of_job(watcher, JobFailed.SUBJECT, job_id), "job.failed")
    [letter_msg] = letters(watcher, Durables.SCHEDULER_CANCEL)
    assert DeadLetter.model_validate_json(letter_msg.data).payload == poison.decode()
