"""The artifacts service is down for a whole job, then comes back: the job's outputs are
complete, and `outputs_written` is announced only after the final model is written.

The last-round wait is measured from when artifacts caught up with the job
(`rondo.artifacts.catch_up`), not from the job's end: here the service comes back after the
wait (shortened to `LAST_ROUND_WAIT_S`) has long passed since the job ended, so a wait counted
from the end would announce the outputs at once, before the backlog's rounds are written.
"""

import datetime
import time
from pathlib import Path

import pytest
from support.faults import (
    RoundHold,
    assert_every_round_once,
    environment,
    kill_part,
    restart_part,
    submit_tiny_job,
)
from support.platform import Platform

from rondo.contracts.states import JobState

ROUNDS = 3
LAST_ROUND_WAIT_S = 15.0


@pytest.mark.timeout(300)
def test_artifacts_down_for_the_whole_job_then_back_writes_everything_before_announcing(
    platform: Platform, tmp_path: Path
) -> None:
    name = "artifacts-outage"
    kill_part(platform, "artifacts")
    hold = RoundHold.at(tmp_path, from_round=ROUNDS)
    hold.release()  # nothing held: the job runs straight through
    job_id = submit_tiny_job(platform, name, rounds=ROUNDS, hold=hold)
    job = platform.wait_for_state(job_id, timeout_s=180)
    assert job["state"] == JobState.FINISHED, job
    assert job["outputs_written_at"] is None, "announced with the artifacts service down"
    time.sleep(LAST_ROUND_WAIT_S + 2)  # a wait counted from the job's end is over now

    with environment({"RONDO_ARTIFACTS_LAST_ROUND_WAIT_S": str(LAST_ROUND_WAIT_S)}):
        restart_part(platform, "artifacts")
    job = platform.wait_for_outputs(job_id, timeout_s=120)

    # At the moment the outputs are announced, the final model and every round are there.
    out = f"jobs/{name}/model_out/"
    final = platform.s3.head_object(Bucket=platform.bucket, Key=f"{out}global_model.pt")
    assert platform.read(f"{out}global_model.pt") == platform.read(
        f"{out}model_round_{ROUNDS - 1}.pt"
    ), "global_model.pt is not the final round's model"
    written_at = datetime.datetime.fromisoformat(job["outputs_written_at"])
    if written_at.tzinfo is None:
        written_at = written_at.replace(tzinfo=datetime.UTC)
    assert final["LastModified"] <= written_at + datetime.timedelta(seconds=1), (
        f"outputs announced at {written_at}, final model written at {final['LastModified']}"
    )
    assert_every_round_once(platform, name, rounds=ROUNDS)
    assert [t["state"] for t in platform.job(job_id)["transitions"]] == [
        "PENDING",
        "RUNNING",
        "FINISHED",
    ]
