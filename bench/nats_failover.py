"""How long a JetStream stream-leader failover holds a running job up.

Runs the scenario of tests/scaleout/test_nats_cluster.py (3-node NATS cluster on loopback,
the local stack's services on it, the digits demo job; the node leading RONDO_JOBS killed with
SIGKILL after the first round) and prints, per run: seconds from the kill until a surviving
node leads the stream, and until the job's next completed round shows in the API.

    .venv/bin/python bench/nats_failover.py [--runs 1] [--rounds 5]
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

# The scenario lives with the tests that check it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.failover import leader_failover_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    elections: list[float] = []
    resumes: list[float] = []
    for run_number in range(1, args.runs + 1):
        with (
            tempfile.TemporaryDirectory(prefix="rondo-failover-") as work_dir,
            leader_failover_run(Path(work_dir), args.rounds) as run,
        ):
            state = run.job["state"]
            rounds = f"{run.job['current_round']}/{args.rounds}"
        elections.append(run.new_leader_after_s)
        resumes.append(run.job_resumed_after_s)
        print(
            f"run {run_number}: killed {run.killed_node} after round {run.round_at_kill}; "
            f"new RONDO_JOBS leader after {run.new_leader_after_s:.2f} s, next round visible "
            f"after {run.job_resumed_after_s:.2f} s; job {state} with {rounds} rounds",
            flush=True,
        )
    print(
        f"stream leader failover: new leader median {statistics.median(elections):.2f} s, "
        f"job resumed median {statistics.median(resumes):.2f} s ({args.runs} run(s))"
    )


if __name__ == "__main__":
    main()
