"""Lost workers: a killed NVFlare client is restarted by its own agent, a killed FL server gets a
new run that resumes after the last completed round, a worker host killed
mid-round is replaced from a spare agent (each job keeps its id and finishes every round
exactly once), and with no spare the job fails after the grace period, naming the worker.

The tests share one stack of three agents and run in order: the third kills a host for good,
the fourth pins its job to the two agents left."""

from pathlib import Path

import pytest
from support.faults import (
    CLIENT_ROOT_MARK,
    FAST,
    RoundHold,
    announcements,
    assert_every_round_once,
    client_agent_without_server,
    held,
    kill9,
    kill_fl_server_mid_round,
    kill_worker,
    kill_worker_mid_round,
    slot_view,
    submit_tiny_job,
    watch,
    worker_processes,
)
from support.platform import Platform

from rondo.contracts.states import JobState


@pytest.mark.timeout(180)
def test_killed_client_process_is_restarted_by_its_agent(
    platform: Platform, tmp_path: Path
) -> None:
    hold = RoundHold.at(tmp_path, from_round=1)
    job_id = submit_tiny_job(platform, "client-killed", rounds=3, hold=hold)
    victim = slot_view(held(platform, job_id, hold), 1)
    [client] = worker_processes(platform, victim["agent_id"], CLIENT_ROOT_MARK)
    with announcements(platform.state, job_id) as announced:
        kill9([client])
        restarted = watch(
            platform,
            job_id,
            lambda j: (
                slot_view(j, 1)["site_name"] == "site-1-1"
                and slot_view(j, 1)["status"] == "connected"
            ),
            "the restarted worker",
        )
    assert slot_view(restarted, 1)["agent_id"] == victim["agent_id"]
    snapshots = [snapshot for _, snapshot in announced]
    assert any(s["workers"]["errors"] == 1 for s in snapshots), "the crash counted in Errors"
    assert any(s["reason"] == "replacing worker 1" for s in snapshots)
    hold.release()
    job = platform.wait_for_state(job_id, timeout_s=150)
    assert job["state"] == JobState.FINISHED, job
    assert [t["state"] for t in job["transitions"]] == ["PENDING", "RUNNING", "FINISHED"]
    assert_every_round_once(platform, "client-killed", rounds=3)
    assert not platform.wait_no_nvflare_processes(), "NVFlare processes outlived the job"


@pytest.mark.timeout(180)
def test_killed_fl_server_gets_a_new_run_that_resumes(platform: Platform, tmp_path: Path) -> None:
    hold = RoundHold.at(tmp_path, from_round=1)
    job_id = submit_tiny_job(platform, "server-killed", rounds=3, hold=hold)
    failover = kill_fl_server_mid_round(platform, job_id, hold)
    assert failover.announced.detected_s < failover.announced.replaced_s, (
        "the job said it replaces the FL server, then every worker was connected again"
    )

    job = platform.wait_for_state(job_id, timeout_s=150)
    assert job["state"] == JobState.FINISHED, job
    assert [t["state"] for t in job["transitions"]] == ["PENDING", "RUNNING", "FINISHED"]
    assert [slot_view(job, n)["site_name"] for n in (0, 1)] == ["site-0-0", "site-1-0"]
    assert_every_round_once(platform, "server-killed", rounds=3)
    assert not platform.wait_no_nvflare_processes(), "NVFlare processes outlived the job"


@pytest.mark.timeout(180)
def test_killed_worker_host_is_replaced_by_the_spare(platform: Platform, tmp_path: Path) -> None:
    hold = RoundHold.at(tmp_path, from_round=1)
    job_id = submit_tiny_job(platform, "host-killed", rounds=3, hold=hold)
    failover = kill_worker_mid_round(platform, job_id, hold)
    assert failover.announced.detected_s < failover.announced.replaced_s, (
        "the lost worker was shown Disconnected, then replaced"
    )

    job = platform.wait_for_state(job_id, timeout_s=150)
    assert job["state"] == JobState.FINISHED, job
    assert [t["state"] for t in job["transitions"]] == ["PENDING", "RUNNING", "FINISHED"]
    replacement = slot_view(job, failover.slot)
    assert replacement["site_name"] == f"site-{failover.slot}-1"
    assert replacement["agent_id"] != failover.killed_agent
    assert_every_round_once(platform, "host-killed", rounds=3)
    assert not platform.wait_no_nvflare_processes(), "NVFlare processes outlived the job"


@pytest.mark.timeout(120)
def test_without_a_spare_the_job_fails_naming_the_lost_worker(
    platform: Platform, tmp_path: Path
) -> None:
    alive = sorted(
        name.removeprefix("worker-agent-")
        for name, record in platform.state.processes.items()
        if name.startswith("worker-agent-") and record.process() is not None
    )
    assert len(alive) == 2, "the previous test killed one of the three agents"
    hold = RoundHold.at(tmp_path, from_round=1)
    job_id = submit_tiny_job(platform, "no-spare", rounds=3, hold=hold, worker_ids=alive)
    slot, agent_id = client_agent_without_server(platform, held(platform, job_id, hold))
    kill_worker(platform, agent_id)

    job = platform.wait_for_state(job_id, timeout_s=60)
    assert job["state"] == JobState.FAILED, job
    site_name = slot_view(job, slot)["site_name"]
    grace = FAST.below_min_clients_grace_s
    assert job["error"]["message"] == (
        f"lost worker {slot} ({site_name} on {agent_id}) for more than {grace:.0f} s "
        "(1 of min_clients 2 workers left)"
    )
    assert job["error"]["cause"] == "worker_timeout"
    assert not platform.wait_no_nvflare_processes(), "NVFlare processes outlived the job"
