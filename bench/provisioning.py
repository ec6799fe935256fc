"""How long the scheduler takes to provision one run's NVFlare kits (it is on the path from
submit to RUNNING): in-process, as `rondo.scheduler.provisioning` does it, and through the
`nvflare provision` command, as it did before.

    .venv/bin/python bench/provisioning.py [--slots 2] [--spares 2] [--repeats 5]

A run has a server, an admin and one client per slot plus `--spares` spare names per slot
(the scheduler's default: 2). Prints the median and the range of each way, in seconds.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from rondo.scheduler.provisioning import ProvisionRequest, project_yaml, provision


def in_process(request: ProvisionRequest, work: Path) -> None:
    shutil.rmtree(provision(request, parent_dir=work).root)


def nvflare_command(request: ProvisionRequest, work: Path) -> None:
    project = work / "project.yml"
    project.write_text(yaml.safe_dump(project_yaml(request), sort_keys=False))
    subprocess.run(
        [sys.executable, "-m", "nvflare.cli", "provision", "-p", str(project), "-w", str(work)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(work / request.project)


def timed(way: Callable[[ProvisionRequest, Path], None], request: ProvisionRequest) -> float:
    with tempfile.TemporaryDirectory(prefix="rondo-provision-") as work:
        started = time.perf_counter()
        way(request, Path(work))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--spares", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    request = ProvisionRequest(
        project="run-bench",
        server_host="localhost",
        fed_learn_port=40001,
        admin_port=40002,
        site_names=[
            f"site-{slot}-{generation}"
            for slot in range(args.slots)
            for generation in range(args.spares + 1)
        ],
    )
    participants = len(request.site_names) + 2
    print(f"{participants} participants (server, admin, {len(request.site_names)} clients)")
    timed(in_process, request)  # imports NVFlare's provisioning, as a running scheduler has
    for name, way in (("in-process", in_process), ("nvflare provision", nvflare_command)):
        seconds = [timed(way, request) for _ in range(args.repeats)]
        print(
            f"{name:<20} median {statistics.median(seconds):.3f} s  "
            f"(min {min(seconds):.3f}, max {max(seconds):.3f}, {args.repeats} runs)"
        )


if __name__ == "__main__":
    main()
