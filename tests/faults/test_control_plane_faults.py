"""The control plane fails mid-job: nats-server is restarted on its store, then the scheduler
and the artifacts service are killed with -9 while the job's last rounds complete, and
restarted; nothing is lost and every round is there exactly once. Cancel and stop end a
running job within 15 s and kill every process of it."""

import json
import time
from pathlib import Path

import pytest
from support.faults import (
    RoundHold,
    assert_every_round_once,
    held,
    kill_part,
    restart_part,
    submit_tiny_job,
)
from support.platform import Platform

from rondo.contracts.states import JobState
from rondo.stack.processes import wait_until

ENDS_WITHIN_S = 15.0


def run_ended_on_its_server(platform: Platform, job_id: str) -> bool:
    """Whether the FL server reported the end of the job's NVFlare run (its spool file, see
    docs/design.md): true even while no scheduler listens."""
    agents = platform.state.data_dir / "agents"
    return any(agents.glob(f"*/runs/{job_id}/*/server/spool/run_ended.json"))


@pytest.mark.timeout(180)
def test_nats_scheduler_and_artifacts_restarts_lose_nothing(
    platform: Platform, tmp_path: Path
) -> None:
    hold = RoundHold.at(tmp_path, from_round=1)
    job_id = submit_tiny_job(platform, "restarts", rounds=4, hold=hold)
    held(platform, job_id, hold)
    restart_part(platform, "nats")  # every service and agent reconnects
    assert platform.job(job_id)["state"] == JobState.RUNNING

    kill_part(platform, "scheduler")
    kill_part(platform, "artifacts")
    hold.release()  # the remaining rounds complete with neither service running
    assert wait_until(lambda: run_ended_on_its_server(platform, job_id), 60, 0.2)
    restart_part(platform, "scheduler")
    restart_part(platform, "artifacts")

    job = platform.wait_for_state(job_id, timeout_s=60)
    assert job["state"] == JobState.FINISHED, job
    assert [t["state"] for t in job["transitions"]] == ["PENDING", "RUNNING", "FINISHED"]
    assert [view["site_name"] for view in job["slots"]] == ["site-0-0", "site-1-0"], (
        "nothing was replaced"
    )
    assert_every_round_once(platform, "restarts", rounds=4)
    assert not platform.wait_no_nvflare_processes(), "NVFlare processes outlived the job"


@pytest.mark.timeout(120)
def test_cancel_ends_the_job_and_every_process_of_it(platform: Platform, tmp_path: Path) -> None:
    hold = RoundHold.at(tmp_path, from_round=1)
    job_id = submit_tiny_job(platform, "cancelled", rounds=3, hold=hold)
    held(platform, job_id, hold)
    asked = time.monotonic()
    response = platform.api.post(f"/api/jobs/{job_id}/cancel")
    assert response.status_code == 202, response.text

    job = platform.wait_for_state(job_id, timeout_s=ENDS_WITHIN_S)
    assert job["state"] == JobState.CANCELLED, job
    left = ENDS_WITHIN_S - (time.monotonic() - asked)
    assert not platform.wait_no_nvflare_processes(timeout_s=left), "processes outlived cancel"
    assert not platform.wait_for_objects(["jobs/cancelled/model_out/model_round_0.pt"])


@pytest.mark.timeout(120)
def test_stop_finishes_with_the_completed_rounds(platform: Platform, tmp_path: Path) -> None:
    hold = RoundHold.at(tmp_path, from_round=2)
    job_id = submit_tiny_job(platform, "stopped", rounds=4, hold=hold)
    held(platform, job_id, hold)
    asked = time.monotonic()
    response = platform.api.post(f"/api/jobs/{job_id}/stop")
    assert response.status_code == 202, response.text

    job = platform.wait_for_state(job_id, timeout_s=ENDS_WITHIN_S)
    assert (job["state"], job["current_round"]) == (JobState.FINISHED, 2), job
    left = ENDS_WITHIN_S - (time.monotonic() - asked)
    assert not platform.wait_no_nvflare_processes(timeout_s=left), "processes outlived stop"

    # The final model is the last completed round's, once the artifacts service wrote it.
    platform.wait_for_outputs(job_id)
    models = "jobs/stopped/model_out/"
    assert not {f"{models}global_model.pt", f"{models}model_round_1.pt"} - set(platform.objects())
    metrics = json.loads(platform.read("jobs/stopped/files_out/metrics.json"))
    assert [entry["round"] for entry in metrics["rounds"]] == [0, 1]
    final = platform.read(f"{models}global_model.pt")
    assert final == platform.read(f"{models}model_round_1.pt")
