"""Per-round overhead of Rondo against bare NVFlare (default settings) and the NVFlare
simulator, on the same job: same model, data, rounds and training function, two clients.

    .venv/bin/python bench/round_overhead.py [--rounds 10] [--large] [--keep]
        [--rondo-only] [--trust-user-code]

Prints, for each way: wall time per round, local training time, overhead (wall - training)
and the ratios to Rondo; Rondo's submit -> RUNNING latency (cold and warm requirements cache)
with where that time goes; the idle CPU of the NVFlare server and of a waiting client while
a round waits for a straggler (Rondo's tuned polling against NVFlare's defaults); and the peak
memory (sum of RSS) of every process of the 2-worker Rondo stack during the job.
`--large` adds the 25M-parameter model (~101 MB of weights) to show transfer cost.
See bench/README.md.
"""

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from job_data import write_site_folders
from measure import RoundStats, RssSampler, cpu_percent, round_stats
from plain_flare import SITES, Deployment, JobSpec, bench_env, run_simulator, write_job_folder
from rondo_runs import RondoBench, RondoJob, rondo_stack

from rondo.stack.processes import process_tree

LOCAL_EPOCHS = 2
BATCH_SIZE = 32
LEARNING_RATE = 0.01
LARGE_ROUNDS = 3
STRAGGLER_S = 6.0  # how long the straggler trains in the idle-CPU job
IDLE_ROUNDS = 3
JOB_TIMEOUT_S = 600.0
MODEL_SIZES = {"TinyNet": "2.8k parameters", "LargeNet": "25.2M parameters, 101 MB"}


@dataclass(frozen=True)
class Row:
    way: str
    model: str
    stats: RoundStats


@dataclass(frozen=True)
class IdleCpu:
    way: str
    server_percent: float
    client_percent: float


# --- Rondo --------------------------------------------------------------------------------------


def rondo_config(model: str, rounds: int) -> dict[str, Any]:
    return {
        "num_rounds": rounds,
        "local_epochs": LOCAL_EPOCHS,
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
        "model_class": model,
        "extra": {"model": model},
    }


def nvflare_role(proc: psutil.Process) -> str | None:
    """'server' or 'client' for an NVFlare participant or job process, else None."""
    command = " ".join(proc.cmdline())
    if "server_train" in command or "runner_process" in command:
        return "server"
    if "client_train" in command or "worker_process" in command:
        return "client"
    return None


def rondo_idle_cpu(rondo: RondoBench) -> tuple[IdleCpu, RondoJob]:
    """CPU of the FL server and of the waiting client while slot 0 straggles in round 1.

    The job also builds the requirements env, so the jobs after it find the cache warm; its
    submit -> RUNNING is the cold-cache figure."""
    submitted_at = time.monotonic()
    job_id = rondo.run_job("bench-idle", rondo_config("TinyNet", IDLE_ROUNDS), STRAGGLER_S)
    running_at = rondo.wait_running(job_id, JOB_TIMEOUT_S)
    rondo.wait_round(job_id, 1)
    time.sleep(1.0)  # the fast client trains, then waits for the next task
    groups: dict[str, list[psutil.Process]] = {"server": [], "client": []}
    for proc in rondo.nvflare_processes():
        with contextlib.suppress(psutil.Error):
            role = nvflare_role(proc)
            waiting_client = role == "client" and proc.environ().get("RONDO_SLOT") == "1"
            if role == "server" or waiting_client:
                groups[role].append(proc)
    usage = cpu_percent(groups, STRAGGLER_S - 2.5)
    rondo.platform.wait_for_state(job_id, timeout_s=JOB_TIMEOUT_S)
    job = RondoJob(job_id, submitted_at, running_at, "", "", rondo.recorder.events(job_id))
    return IdleCpu("Rondo", usage["server"], usage["client"]), job


def stack_part(proc: psutil.Process) -> str:
    """What a process of the stack is, for the memory breakdown."""
    command = " ".join(proc.cmdline())
    role = nvflare_role(proc)
    if role is not None:
        return f"NVFlare {role}s"
    for module in ("gateway", "scheduler", "artifacts", "worker_agent"):
        if f"rondo.{module}" in command:
            return module.replace("_", "-") + "s" * (module == "worker_agent")
    return proc.name()


def run_rondo(
    work: Path, rounds: int, large: bool, trust_user_code: bool = False
) -> tuple[list[Row], IdleCpu, RondoJob, RondoJob, RssSampler]:
    with rondo_stack(work / "rondo", trust_user_code=trust_user_code) as rondo:
        idle, cold = rondo_idle_cpu(rondo)
        with RssSampler(rondo.platform.stack_processes, stack_part) as rss:
            warm = rondo.run_to_end("bench-tiny", rondo_config("TinyNet", rounds))
        rows = [Row("Rondo", "TinyNet", round_stats(warm.server_log, warm.client_logs))]
        if large:
            job = rondo.run_to_end("bench-large", rondo_config("LargeNet", LARGE_ROUNDS))
            rows.append(Row("Rondo", "LargeNet", round_stats(job.server_log, job.client_logs)))
    return rows, idle, cold, warm, rss


# --- bare NVFlare and the simulator ------------------------------------------------------------


def job_spec(work: Path, model: str, rounds: int, data: str = "data") -> JobSpec:
    return JobSpec(model, rounds, LOCAL_EPOCHS, BATCH_SIZE, LEARNING_RATE, work / data)


def bare_idle_cpu(deployment: Deployment, work: Path) -> IdleCpu:
    """As `rondo_idle_cpu`, on the bare deployment: site-1 straggles, site-2 waits."""
    write_site_folders(work / "data-straggler", SITES, STRAGGLER_S)
    spec = job_spec(work, "TinyNet", IDLE_ROUNDS, data="data-straggler")
    job_dir = write_job_folder(spec, work / "job-idle")
    sizes = deployment.log_sizes()
    job_id = deployment.submit(job_dir)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while "Round 0 finished." not in deployment.logs_since(sizes)[0]:
        if time.monotonic() > deadline:
            raise TimeoutError("bare NVFlare: round 0 of the idle job did not finish")
        time.sleep(0.05)
    time.sleep(1.0)
    pids = deployment.pids()
    groups = {
        "server": process_tree(pids["server"]),
        "client": process_tree(pids[SITES[1]]),
    }
    usage = cpu_percent(groups, STRAGGLER_S - 2.5)
    deployment.wait(job_id, JOB_TIMEOUT_S)
    return IdleCpu("bare NVFlare (defaults)", usage["server"], usage["client"])


def run_bare(work: Path, models: dict[str, int]) -> tuple[list[Row], IdleCpu, float]:
    """Rows per model, the idle CPU, and how long the deployment took to start."""
    root = work / "bare"
    root.mkdir()
    deployment = Deployment(root, bench_env())
    rows = []
    try:
        started = time.monotonic()
        deployment.start()
        start_s = time.monotonic() - started
        for model, rounds in models.items():
            job_dir = write_job_folder(job_spec(work, model, rounds), work / f"job-{model}")
            sizes = deployment.log_sizes()
            deployment.wait(deployment.submit(job_dir), JOB_TIMEOUT_S)
            server_log, client_logs = deployment.logs_since(sizes)
            rows.append(Row("bare NVFlare (defaults)", model, round_stats(server_log, client_logs)))
        idle = bare_idle_cpu(deployment, work)
    finally:
        deployment.stop()
    return rows, idle, start_s


def run_simulated(work: Path, models: dict[str, int]) -> list[Row]:
    rows = []
    for model, rounds in models.items():
        job_dir = write_job_folder(job_spec(work, model, rounds), work / f"job-{model}")
        output = run_simulator(job_dir, work / f"sim-{model}", bench_env(), JOB_TIMEOUT_S)
        rows.append(Row("NVFlare simulator", model, round_stats(output, output)))
    return rows


# --- report ---------------------------------------------------------------------------------


def print_rounds(rows: list[Row], rounds: dict[str, int]) -> None:
    for model, num_rounds in rounds.items():
        print(
            f"\nPer round, {model} ({MODEL_SIZES[model]}), 2 clients, {num_rounds} rounds "
            f"(means over rounds 1..{num_rounds - 1}):"
        )
        print(
            f"{'way':<26}{'wall s':>9}{'train s':>9}{'overhead s':>12}"
            f"{'wall x':>9}{'overhead x':>12}"
        )
        model_rows = [row for row in rows if row.model == model]
        rondo = next(row.stats for row in model_rows if row.way == "Rondo")
        for row in model_rows:
            stats = row.stats
            print(
                f"{row.way:<26}{stats.wall_s:>9.3f}{stats.train_s:>9.3f}{stats.overhead_s:>12.3f}"
                f"{stats.wall_s / rondo.wall_s:>9.1f}{stats.overhead_s / rondo.overhead_s:>12.1f}"
            )


def print_start(cold: RondoJob, warm: RondoJob, bare_start_s: float | None) -> None:
    print("\nSubmit -> RUNNING through Rondo (from POST /api/jobs):")
    print(f"{'':<42}{'RUNNING':>9}{'all connected':>15}")
    for label, job in (("cold requirements cache (builds the env)", cold), ("warm", warm)):
        print(f"  {label:<40}{job.submit_to_running_s:>8.2f}s{job.submit_to_connected_s:>14.2f}s")
    print(
        "  (RUNNING: the scheduler's state, set once the FL server and every client are ready; "
        "all connected: FL server up and every client registered)"
    )
    if bare_start_s is not None:
        print(
            f"  (for scale: starting the bare deployment until both clients registered: "
            f"{bare_start_s:.2f} s, before any job is submitted)"
        )
    print("  where the warm start's time goes (seconds after the POST):")
    for offset, what in warm.start_timeline():
        print(f"    {offset:7.2f}  {what}")


def print_idle(idle: list[IdleCpu]) -> None:
    print(
        f"\nIdle CPU while a round waits ({STRAGGLER_S:.0f} s straggler; % of one core, "
        "NVFlare process trees):"
    )
    print(f"{'way':<26}{'FL server':>11}{'waiting client':>16}")
    for row in idle:
        print(f"{row.way:<26}{row.server_percent:>10.1f}%{row.client_percent:>15.1f}%")


def print_memory(rss: RssSampler) -> None:
    print("\nMemory of the 2-worker Rondo stack during the TinyNet job (peak of the summed RSS):")
    for part, size in sorted(rss.peak_parts.items(), key=lambda item: -item[1]):
        print(f"  {part:<24}{size / 2**20:>8.0f} MiB")
    print(f"  {'total':<24}{rss.peak_bytes / 2**20:>8.0f} MiB")


def timed(what: str, step: Callable[[], Any]) -> Any:
    started = time.monotonic()
    result = step()
    print(f"[{what}: {time.monotonic() - started:.0f} s]", flush=True)
    return result


def print_load(when: str) -> None:
    one, five, _ = os.getloadavg()
    print(f"[load average {when}: {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds of the TinyNet job")
    parser.add_argument("--large", action="store_true", help="also run the 25M-parameter model")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--rondo-only", action="store_true", help="skip the bare NVFlare and simulator baselines"
    )
    parser.add_argument(
        "--trust-user-code",
        action="store_true",
        help="run the workers unsandboxed (rondo up --trust-user-code), to price the sandbox",
    )
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (round 0 is not measured)")

    models = {"TinyNet": args.rounds} | ({"LargeNet": LARGE_ROUNDS} if args.large else {})
    work = Path(tempfile.mkdtemp(prefix="rondo-bench-"))
    os.chmod(work, 0o711)  # sandboxed workers' uids pass through to their run folders
    print_load("at start")
    print(f"[user code: {'trusted, unsandboxed' if args.trust_user_code else 'sandboxed'}]")
    bare_rows: list[Row] = []
    simulated: list[Row] = []
    idle_rows: list[IdleCpu] = []
    bare_start_s = None
    try:
        write_site_folders(work / "data", SITES)
        rondo_rows, rondo_idle, cold, warm, rss = timed(
            "Rondo", lambda: run_rondo(work, args.rounds, args.large, args.trust_user_code)
        )
        if not args.rondo_only:
            bare_rows, bare_idle, bare_start_s = timed(
                "bare NVFlare", lambda: run_bare(work, models)
            )
            simulated = timed("simulator", lambda: run_simulated(work, models))
            idle_rows = [bare_idle]
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print_load("at end")
    print_rounds([*rondo_rows, *bare_rows, *simulated], models)
    print_start(cold, warm, bare_start_s)
    print_idle([rondo_idle, *idle_rows])
    print_memory(rss)


if __name__ == "__main__":
    main()
