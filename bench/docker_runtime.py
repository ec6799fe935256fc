"""The Docker runtime against the process runtime: the same local stack, the same tiny job
(tests/support/tiny_job.py, two clients, instant training), run first by the stack's agents as
local processes, then by the same agents restarted with RONDO_AGENT_RUNTIME=docker (every
NVFlare process in its own locked-down container from the locally built agent image).

    .venv/bin/python bench/docker_runtime.py [--rounds 5]

Needs a Docker engine (scripts/docker-engine up; root starts one) and builds rondo/agent:test.
Prints per runtime: submit -> RUNNING, the mean and max seconds per round (between the job's
round counter moving), and submit -> FINISHED. Each runtime first runs a one-round warm-up
job, so caches (page cache of the image, the agents' kit downloads) are warm for both.
"""

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.docker_engine import docker_images, start_docker_agent, stop_agent
from support.platform import Platform, running_platform
from support.tiny_job import tiny_job_files

from rondo.contracts.states import TERMINAL_STATES, JobState


@dataclass
class JobTimes:
    running_s: float
    round_s: list[float]
    finished_s: float
    state: str


def run_job(platform: Platform, name: str, rounds: int) -> JobTimes:
    platform.upload_job(name, tiny_job_files(shards=2))
    submitted = time.monotonic()
    response = platform.submit(name, num_rounds=rounds)
    response.raise_for_status()
    job_id = response.json()["id"]
    running_s = 0.0
    last_round, last_change = 0, 0.0
    gaps: list[float] = []
    while True:
        job = platform.job(job_id)
        now = time.monotonic() - submitted
        if not running_s and job["state"] != JobState.PENDING:
            running_s = now
            last_change = now
        current = job.get("current_round") or 0
        if current > last_round:
            gaps.append((now - last_change) / (current - last_round))
            last_round, last_change = current, now
        if JobState(job["state"]) in TERMINAL_STATES:
            return JobTimes(running_s, gaps[1:] or gaps, now, job["state"])
        time.sleep(0.05)


def report(runtime: str, times: JobTimes) -> None:
    rounds = times.round_s
    print(
        f"{runtime:8} submit->RUNNING {times.running_s:5.1f} s | per round mean "
        f"{statistics.mean(rounds) if rounds else float('nan'):5.2f} s, max "
        f"{max(rounds) if rounds else float('nan'):5.2f} s | submit->{times.state} "
        f"{times.finished_s:5.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    image = docker_images()
    with (
        tempfile.TemporaryDirectory(prefix="rondo-bench-docker-") as folder,
        running_platform(Path(folder), workers=2) as platform,
    ):
        run_job(platform, "warm-process", 1)
        report("process", run_job(platform, "bench-process", args.rounds))
        pids = []
        for index, agent in enumerate(platform.state.agents):
            stop_agent(platform.state.processes[agent.part_name].pid)
            pids.append(start_docker_agent(platform, index, image))
        try:
            run_job(platform, "warm-docker", 1)
            report("docker", run_job(platform, "bench-docker", args.rounds))
        finally:
            for pid in pids:
                stop_agent(pid)


if __name__ == "__main__":
    main()
