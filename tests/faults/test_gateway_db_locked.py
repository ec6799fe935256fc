"""The gateway's SQLite database is locked for 15 s mid-job (a long write elsewhere, a backup)
while the job's remaining rounds complete and it ends: every event the gateway could not
store meanwhile is redelivered (the consumer policy, `rondo.contracts.consumers`), so the job
ends FINISHED with every transition and every round in the gateway's read model."""

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from support.faults import RoundHold, held, submit_tiny_job
from support.platform import Platform

from rondo.contracts.states import JobState
from rondo.stack.processes import wait_until

LOCKED_S = 15.0
ROUNDS = 3


@pytest.mark.timeout(240)
def test_gateway_database_locked_mid_job_loses_no_event(platform: Platform, tmp_path: Path) -> None:
    url = make_url(platform.state.databases["gateway"])
    if url.get_backend_name() != "sqlite":
        pytest.skip(f"the stack's gateway database is {url.get_backend_name()}, not SQLite")
    hold = RoundHold.at(tmp_path, from_round=1)
    job_id = submit_tiny_job(platform, "db-locked", rounds=ROUNDS, hold=hold)
    held(platform, job_id, hold)

    connection = sqlite3.connect(str(url.database), isolation_level=None)
    try:
        connection.execute("BEGIN EXCLUSIVE")
        hold.release()  # rounds 1.. and the job's end happen while the gateway cannot write
        time.sleep(LOCKED_S)
        connection.execute("COMMIT")
    finally:
        connection.close()

    job = platform.wait_for_state(job_id, timeout_s=120)
    assert job["state"] == JobState.FINISHED, job
    assert [t["state"] for t in job["transitions"]] == ["PENDING", "RUNNING", "FINISHED"]

    # Each consumer redelivers on its own schedule (a growing delay, at most
    # `consumer_max_retry_delay_s` = 30 s by default): a round that met the lock may be applied
    # after the job's end was. Nothing is lost: every round arrives within one more delay.
    def rounds() -> list[int]:
        metrics = platform.api.get(f"/api/jobs/{job_id}/metrics").json()
        return [entry["round"] for entry in metrics["rounds"]]

    wait_until(lambda: rounds() == list(range(ROUNDS)), timeout_s=60, interval_s=0.5)
    assert rounds() == list(range(ROUNDS))
    job = platform.job(job_id)
    assert job["current_round"] == job["num_rounds"] == ROUNDS, job
