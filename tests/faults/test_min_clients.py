"""A job that needs fewer workers than it has shards (`min_clients`) runs on when a worker is
lost for good: its rounds aggregate the workers left, and it finishes every round.

Two worker-agents of a stack of its own (the folder's shared stack keeps its three agents for
tests/faults/test_worker_faults.py), so the lost worker has no spare to be replaced by."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.faults import (
    RoundHold,
    assert_every_round_once,
    client_agent_without_server,
    fault_stack,
    held,
    kill_worker,
    slot_view,
    submit_tiny_job,
)
from support.platform import Platform

from rondo.contracts.states import JobState


@pytest.fixture(scope="module")
def two_agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with fault_stack(Path(tmp_path_factory.mktemp("min-clients")), workers=2) as platform:
        yield platform


@pytest.mark.timeout(180)
def test_a_lost_worker_above_min_clients_leaves_the_job_running(
    two_agents: Platform, tmp_path: Path
) -> None:
    platform = two_agents
    hold = RoundHold.at(tmp_path, from_round=1)
    job_id = submit_tiny_job(platform, "one-needed", rounds=3, hold=hold, min_clients=1)
    slot, agent_id = client_agent_without_server(platform, held(platform, job_id, hold))
    kill_worker(platform, agent_id)
    hold.release()

    job = platform.wait_for_state(job_id, timeout_s=150)

    assert job["state"] == JobState.FINISHED, job
    assert [t["state"] for t in job["transitions"]] == ["PENDING", "RUNNING", "FINISHED"]
    assert slot_view(job, slot)["status"] in ("disconnected", "done"), job
    assert_every_round_once(platform, "one-needed", rounds=3)
    rounds = platform.api.get(f"/api/jobs/{job_id}/metrics").json()["rounds"]
    after_the_loss = [r for r in rounds if r["round"] >= 1]
    assert after_the_loss and all(len(r["contributions"]) == 1 for r in after_the_loss), rounds
    assert not platform.wait_no_nvflare_processes(), "NVFlare processes outlived the job"
