"""A worker cut off, not killed: a worker-agent alone in a network namespace (joined to the
host by a veth pair; the stack's servers listen on the host side) loses its link mid-job. It
is replaced by a spare; when the link comes back the old agent ends its stale client and
changes nothing in the job, which finishes every round exactly once. Needs root."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.faults import (
    NetworkNamespace,
    RoundHold,
    assert_every_round_once,
    fault_stack,
    held,
    slot_view,
    submit_tiny_job,
    watch,
    worker_processes,
)
from support.platform import Platform

from rondo.contracts.states import JobState
from rondo.stack.processes import wait_until

# Sorts after local-0 and local-1, and has a host of its own: placement gives it slot 1 (slot 0
# and the FL server go to local-0), local-1 is the spare.
CUT_OFF_AGENT = "netns-0"


@pytest.fixture(scope="module")
def namespace() -> Iterator[NetworkNamespace]:
    with NetworkNamespace.created() as space:
        yield space


@pytest.fixture(scope="module")
def platform(
    namespace: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    data_dir = Path(tmp_path_factory.mktemp("partition"))
    with fault_stack(data_dir, workers=2, host=namespace.host_ip) as platform:
        namespace.start_agent(platform, CUT_OFF_AGENT, fl_ports="20000-20019")
        yield platform


@pytest.mark.timeout(240)
def test_cut_off_worker_is_replaced_and_harmless_once_back(
    platform: Platform, namespace: NetworkNamespace, tmp_path: Path
) -> None:
    hold = RoundHold.at(tmp_path, from_round=1)
    job_id = submit_tiny_job(platform, "cut-off", rounds=3, hold=hold)
    job = held(platform, job_id, hold)
    assert slot_view(job, 1)["agent_id"] == CUT_OFF_AGENT, job["slots"]
    stale = worker_processes(platform, CUT_OFF_AGENT)
    assert stale, "the cut-off agent runs its client"

    namespace.cut()
    job = watch(
        platform,
        job_id,
        lambda j: (
            slot_view(j, 1)["site_name"] == "site-1-1" and slot_view(j, 1)["status"] == "connected"
        ),
        "the replacement of the cut-off worker",
    )
    assert slot_view(job, 1)["agent_id"] == "local-1"
    assert all(process.is_running() for process in stale), "cut off, not killed"

    namespace.connect()  # mid-job: the old agent hears the stop of its superseded run
    assert wait_until(lambda: not worker_processes(platform, CUT_OFF_AGENT), 60, 0.5), (
        "the old agent kept its stale client"
    )
    hold.release()
    job = platform.wait_for_state(job_id, timeout_s=120)
    assert job["state"] == JobState.FINISHED, job
    assert [t["state"] for t in job["transitions"]] == ["PENDING", "RUNNING", "FINISHED"]
    assert slot_view(job, 1)["site_name"] == "site-1-1"
    assert_every_round_once(platform, "cut-off", rounds=3)
    assert not platform.wait_no_nvflare_processes(), "NVFlare processes outlived the job"
