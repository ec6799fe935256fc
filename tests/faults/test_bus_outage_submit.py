"""NATS is down while a job is submitted: the submit answers promptly (the gateway's outbox,
`rondo.gateway.submissions`, hands the job over once the bus is back), and the job then runs
to FINISHED with every round there exactly once.

`OUTAGE_S` is the issue's 90 s. What matters is that it exceeds every retry window a publish
has (`rondo.contracts.bus.PUBLISH_RETRY_S` plus one ack timeout), so no retry loop can bridge
the outage and only the outbox can deliver the submission; a shorter outage that still
exceeds that window tests the same path.
"""

import time

import pytest
from support.faults import assert_every_round_once, kill_part, restart_part
from support.platform import Platform
from support.tiny_job import tiny_job_files

from rondo.contracts.bus import PUBLISH_ACK_TIMEOUT_S, PUBLISH_RETRY_S
from rondo.contracts.states import JobState
from rondo.gateway.submissions import SUBMIT_ACK_TIMEOUT_S, SUBMIT_PUBLISH_RETRY_S

OUTAGE_S = 90.0
# What "promptly" means: the submit's own short window, plus the S3 reads and the DB write.
SUBMIT_ANSWERS_WITHIN_S = SUBMIT_PUBLISH_RETRY_S + SUBMIT_ACK_TIMEOUT_S + 5.0


@pytest.mark.timeout(OUTAGE_S + 240)
def test_submit_while_nats_is_down_answers_promptly_and_the_job_finishes(
    platform: Platform,
) -> None:
    assert OUTAGE_S > PUBLISH_RETRY_S + PUBLISH_ACK_TIMEOUT_S
    name = "bus-outage"
    platform.upload_job(name, tiny_job_files(shards=2))

    kill_part(platform, "nats")
    down_since = time.monotonic()
    started = time.monotonic()
    response = platform.api.post(
        "/api/jobs",
        json={"name": name, "config": {"num_rounds": 2}},
    )
    answered_s = time.monotonic() - started
    assert response.status_code == 201, response.text
    assert answered_s < SUBMIT_ANSWERS_WITHIN_S, f"submit blocked {answered_s:.1f} s"
    job_id = str(response.json()["id"])
    assert platform.job(job_id)["state"] == JobState.PENDING

    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_since)))
    assert platform.job(job_id)["state"] == JobState.PENDING
    restart_part(platform, "nats")

    job = platform.wait_for_state(job_id, timeout_s=180)
    assert job["state"] == JobState.FINISHED, job
    assert [t["state"] for t in job["transitions"]] == ["PENDING", "RUNNING", "FINISHED"]
    assert_every_round_once(platform, name, rounds=2)
    print(f"submit answered in {answered_s:.2f} s with NATS down")
