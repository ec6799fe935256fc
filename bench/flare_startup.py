"""How soon a freshly started NVFlare federation takes a job: NVFlare's defaults against the
worker-agent's start-up (`rondo.worker_agent.flare_runs`).

    .venv/bin/python bench/flare_startup.py [--repeats 5]

Each repeat provisions a run (server, two clients, admin), starts the server and both clients
at the same moment, as the agents of a run do, and submits a one-round job as soon as the
federation takes it. Variants, alternated:

- NVFlare defaults: the clients from their kits' `startup/sub_start.sh --once` (a failed
  registration is retried after 2 s); the admin session asked for at once and retried (its
  connector waits 1, 2, 4 s between failed attempts while the server is not up yet);
- Rondo agent: the clients from `flare_runs.client_process` and the job through
  `flare_runs.submit_run`, exactly as a run's agents start them.

Prints, per variant, the median seconds from the start of the processes until the server
logged "Server started", until the last client registered, and until the job was submitted.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from nvflare.fuel.flare_api.flare_api import new_secure_session
from plain_flare import JOB_DIR, SITES, VENV_BIN, bench_env

from rondo.contracts.events import ServerAssignment
from rondo.contracts.training import TrainingConfig
from rondo.scheduler.provisioning import ProvisionedKits, ProvisionRequest, provision
from rondo.stack.ports import free_ports
from rondo.stack.processes import kill_tree, spawn
from rondo.worker_agent.flare_app import build_job_folder
from rondo.worker_agent.flare_runs import (
    ClientRunSpec,
    ServerRunSpec,
    client_process,
    registered_sites,
    submit_run,
)

SUBMIT_TIMEOUT_S = 120.0
VARIANTS = ("NVFlare defaults", "Rondo agent")


@dataclass(frozen=True)
class Startup:
    server_started_s: float
    clients_registered_s: float
    submitted_s: float


def server_spec(root: Path, kits: ProvisionedKits, ports: list[int]) -> ServerRunSpec:
    job_files = root / "job_files"
    (job_files / "scripts").mkdir(parents=True)
    shutil.copy(JOB_DIR / "model_def.py", job_files / "scripts" / "model_def.py")
    assignment = ServerAssignment(
        kit_url="-",
        admin_kit_url="-",
        admin_name=kits.admin.name,
        fed_learn_port=ports[0],
        admin_port=ports[1],
        site_names=SITES,
        job_files=[],
        has_custom_app=False,
        config=TrainingConfig(num_rounds=1, model_class="TinyNet"),
    )
    return ServerRunSpec(
        kit_dir=kits.server,
        admin_kit_dir=kits.admin,
        admin_name=kits.admin.name,
        job_files_dir=job_files,
        work_dir=root / "work",
        spool_dir=root / "spool",
        assignment=assignment,
        initial_checkpoint=None,
        python=sys.executable,
    )


def submit_with_defaults(spec: ServerRunSpec, timeout_s: float) -> str:
    """What an operator's script does: ask for a session until the server answers, wait for
    the sites, submit."""
    job_dir = build_job_folder(
        spec.job_files_dir, spec.work_dir / "job", spec.assignment, None, "bench", spec.spool_dir
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            session = new_secure_session(spec.admin_name, str(spec.admin_kit_dir), timeout=10)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        while set(SITES) - registered_sites(session):
            time.sleep(0.2)
        return session.submit_job(str(job_dir.resolve()))
    finally:
        session.close()


def start_from_kit(kit: Path, log: Path) -> subprocess.Popen[bytes]:
    """A participant as its kit starts it: `startup/sub_start.sh --once`."""
    env = bench_env()
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return spawn(["bash", str(kit / "startup" / "sub_start.sh"), "--once"], log, env, kit)


def start_clients_from_kits(kits: ProvisionedKits, root: Path) -> list[subprocess.Popen[bytes]]:
    return [start_from_kit(kits.clients[site], root / f"{site}.log") for site in SITES]


def start_clients_as_agents(kits: ProvisionedKits, root: Path) -> list[subprocess.Popen[bytes]]:
    processes = []
    for slot, site in enumerate(SITES):
        data = root / "data" / site
        data.mkdir(parents=True)
        spec = client_process(
            ClientRunSpec(
                kit_dir=kits.clients[site],
                site_name=site,
                slot=slot,
                data_root=data,
                out_spool=root / "out" / site,
                device="cpu",
                python=sys.executable,
            )
        )
        processes.append(spawn(spec.argv, root / f"{site}.log", env=spec.env, cwd=spec.cwd))
    return processes


def one_startup(root: Path, variant: str) -> Startup:
    ports = free_ports(2)
    request = ProvisionRequest(
        project="startup",
        server_host="localhost",
        fed_learn_port=ports[0],
        admin_port=ports[1],
        site_names=SITES,
    )
    kits = provision(request, parent_dir=root)
    spec = server_spec(root, kits, ports)
    server_log = root / "server.log"
    started_at = time.time()
    processes = [start_from_kit(kits.server, server_log)]
    try:
        if variant == "Rondo agent":
            processes += start_clients_as_agents(kits, root)
            submit: Callable[[ServerRunSpec, float], str] = submit_run
        else:
            processes += start_clients_from_kits(kits, root)
            submit = submit_with_defaults
        submit(spec, SUBMIT_TIMEOUT_S)
        submitted_at = time.time()
    finally:
        for process in processes:
            kill_tree(process.pid)
    lines = server_log.read_text(errors="replace").splitlines()
    return Startup(
        server_started_s=_logged_at(lines, "Server started")[0] - started_at,
        clients_registered_s=max(_logged_at(lines, "registered with site_config")) - started_at,
        submitted_s=submitted_at - started_at,
    )


def _logged_at(lines: list[str], text: str) -> list[float]:
    """The log times (epoch seconds) of the lines that contain `text`."""
    return [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in lines
        if text in line
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[Startup]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="rondo-flare-startup-") as work:
        for repeat in range(args.repeats):
            for variant in VARIANTS:
                root = Path(work) / f"{repeat}-{variant.split()[0]}"
                root.mkdir()
                results[variant].append(one_startup(root, variant))
    print(f"\nSeconds from starting server and clients ({args.repeats} runs each, medians):")
    print(f"{'':<20}{'server started':>16}{'clients registered':>20}{'job submitted':>15}")
    for variant, runs in results.items():
        print(
            f"{variant:<20}"
            f"{statistics.median(r.server_started_s for r in runs):>16.2f}"
            f"{statistics.median(r.clients_registered_s for r in runs):>20.2f}"
            f"{statistics.median(r.submitted_s for r in runs):>15.2f}"
        )


if __name__ == "__main__":
    main()
