"""How fast a lost worker (or FL server) is noticed and replaced, on a real local stack.

Runs the scenario of tests/faults/test_worker_faults.py (three worker-agents, one of them a
spare; the fault settings: agents beat every 0.5 s, a worker is lost after 5 s of silence): the
tiny job runs and is held in round `--after`; a worker host (its agent and its NVFlare
processes, not the FL server's) is killed with SIGKILL there and the hold released. Prints, per
run, the seconds from the kill until the worker is Disconnected, until its replacement is
connected, and until the next round completed (which needs the replacement): as the scheduler
announced them on the bus, and as the gateway's API showed them. Targets: detection <= 10 s,
replacement training <= 30 s.

    .venv/bin/python bench/failover.py [--runs 1] [--after 2] [--product-timing] [--kill server]

`--product-timing` uses the product's defaults instead (agents beat every 2 s, a worker is
lost after 10 s of silence). `--kill server` kills the job's FL server process instead (its
agent stays up): detection is the job saying it replaces the server, replacement is every
worker connected to the new run's server.
"""

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

# The scenario lives with the tests that check it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.faults import (
    FAST,
    PRODUCT,
    Failover,
    FailoverTimes,
    RoundHold,
    fault_stack,
    kill_fl_server_mid_round,
    kill_worker_mid_round,
    submit_tiny_job,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--after", type=int, default=2, help="rounds done before the kill")
    parser.add_argument("--product-timing", action="store_true", help="2 s beats, lost after 10 s")
    parser.add_argument("--kill", choices=("worker", "server"), default="worker")
    args = parser.parse_args()
    kill_mid_round = kill_fl_server_mid_round if args.kill == "server" else kill_worker_mid_round
    liveness = PRODUCT if args.product_timing else FAST

    print(
        f"agents beat every {liveness.heartbeat_interval_s:g} s, a worker is lost after "
        f"{liveness.worker_lost_after_s:g} s of silence",
        flush=True,
    )
    failovers: list[Failover] = []
    for run_number in range(1, args.runs + 1):
        with (
            tempfile.TemporaryDirectory(prefix="rondo-failover-") as work_dir,
            fault_stack(Path(work_dir), workers=3, liveness=liveness) as platform,
        ):
            rounds = args.after + 3
            hold = RoundHold.at(Path(work_dir), from_round=args.after)
            job_id = submit_tiny_job(platform, "failover", rounds, hold, liveness=liveness)
            failover = kill_mid_round(platform, job_id, hold)
            job = platform.wait_for_state(job_id, timeout_s=300)
        failovers.append(failover)
        victim = (
            "the FL server process"
            if failover.slot is None
            else f"{failover.killed_agent} (worker {failover.slot})"
        )
        print(
            f"run {run_number}: killed {victim} in round {failover.round_at_kill}; job "
            f"{job['state']} with {job['current_round']}/{rounds} rounds",
            flush=True,
        )
        print(f"  scheduler (bus): {describe(failover.announced)}", flush=True)
        print(f"  gateway (API):   {describe(failover.shown)}", flush=True)
    for where, pick in (
        ("scheduler (bus)", lambda f: f.announced),
        ("gateway (API)", lambda f: f.shown),
    ):
        times = [pick(f) for f in failovers]
        median = FailoverTimes(
            *(
                statistics.median(getattr(t, field.name) for t in times)
                for field in dataclasses.fields(FailoverTimes)
            )
        )
        print(f"median of {args.runs} run(s), {where}: {describe(median)}")
    print("targets: detection <= 10 s, replacement training (next round) <= 30 s")


def describe(times: FailoverTimes) -> str:
    return (
        f"lost shown after {times.detected_s:.2f} s, replacement connected after "
        f"{times.replaced_s:.2f} s, next round completed after {times.next_round_s:.2f} s"
    )


if __name__ == "__main__":
    main()
