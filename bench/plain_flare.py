"""The benchmark job run without Rondo: a bare NVFlare deployment with NVFlare's default
settings, and the NVFlare simulator.

The job folder is what an NVFlare user writes for this training: ScatterAndGather with only
`min_clients` and `num_rounds` set, `PTFileModelPersistor`, and the in-process Client API
running `job/client_api_train.py` (which calls the same `fl_train_model` as Rondo's executor).
The deployment is provisioned like Rondo's runs (`rondo.scheduler.provisioning`, a plain
NVFlare project), started with each kit's own `startup/sub_start.sh --once`, and driven
through the admin API, as an operator would.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvflare.fuel.flare_api.flare_api import Session, new_secure_session

from rondo.scheduler.provisioning import ProvisionedKits, ProvisionRequest, provision
from rondo.stack.ports import free_ports
from rondo.stack.processes import kill_tree, spawn

JOB_DIR = Path(__file__).resolve().parent / "job"
SCRIPT = "client_api_train.py"
SITES = ["site-1", "site-2"]  # the simulator's names for two clients
ADMIN_TIMEOUT_S = 30.0
VENV_BIN = str(Path(sys.executable).parent)


@dataclass(frozen=True)
class JobSpec:
    """One run of the benchmark job: which model, how many rounds, the training settings."""

    model: str
    num_rounds: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    data_root: Path  # holds one folder per site name, each with data.pt (and sleep.txt)


def write_job_folder(spec: JobSpec, dest: Path) -> Path:
    """An NVFlare job folder for `spec` with NVFlare's defaults; returns its absolute path."""
    dest = dest.resolve()
    shutil.rmtree(dest, ignore_errors=True)
    custom = dest / "app" / "custom"
    config = dest / "app" / "config"
    custom.mkdir(parents=True)
    config.mkdir()
    for name in ("model_def.py", SCRIPT):
        shutil.copy(JOB_DIR / name, custom / name)
    script_args = (
        f"--data-root {spec.data_root.resolve()} --model {spec.model} "
        f"--local-epochs {spec.local_epochs} --batch-size {spec.batch_size} "
        f"--learning-rate {spec.learning_rate}"
    )
    _write_json(config / "config_fed_server.json", _server_config(spec))
    _write_json(config / "config_fed_client.json", _client_config(script_args))
    meta = {
        "name": f"bench-{spec.model}",
        "resource_spec": {},
        "min_clients": len(SITES),
        "deploy_map": {"app": ["@ALL"]},
    }
    _write_json(dest / "meta.json", meta)
    return dest


def _server_config(spec: JobSpec) -> dict[str, Any]:
    common = "nvflare.app_common"
    return {
        "format_version": 2,
        "workflows": [
            {
                "id": "scatter_and_gather",
                "path": f"{common}.workflows.scatter_and_gather.ScatterAndGather",
                "args": {"min_clients": len(SITES), "num_rounds": spec.num_rounds},
            }
        ],
        "components": [
            {
                "id": "persistor",
                "path": "nvflare.app_opt.pt.file_model_persistor.PTFileModelPersistor",
                "args": {"model": {"path": f"model_def.{spec.model}"}},
            },
            {
                "id": "shareable_generator",
                "path": f"{common}.shareablegenerators.full_model_shareable_generator."
                "FullModelShareableGenerator",
                "args": {},
            },
            {
                "id": "aggregator",
                "path": f"{common}.aggregators.intime_accumulate_model_aggregator."
                "InTimeAccumulateWeightedAggregator",
                "args": {"expected_data_kind": "WEIGHTS"},
            },
        ],
        "task_data_filters": [],
        "task_result_filters": [],
    }


def _client_config(script_args: str) -> dict[str, Any]:
    return {
        "format_version": 2,
        "executors": [
            {
                "tasks": ["*"],
                "executor": {
                    "path": "nvflare.app_common.executors.client_api_executor.ClientAPIExecutor",
                    "args": {
                        "execution_mode": "in_process",
                        "task_script_path": SCRIPT,
                        "task_script_args": script_args,
                        "params_exchange_format": "numpy",
                    },
                },
            }
        ],
        "components": [],
        "task_data_filters": [],
        "task_result_filters": [],
    }


# --- the simulator ----------------------------------------------------------------------------


def run_simulator(job_dir: Path, workspace: Path, env: dict[str, str], timeout_s: float) -> str:
    """`nvflare simulator` with one thread per client; returns its console output (the
    server's and the clients' log lines, and the training function's prints)."""
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir(parents=True)
    argv = [
        f"{VENV_BIN}/nvflare",
        "simulator",
        "-w",
        str(workspace),
        "-n",
        str(len(SITES)),
        "-t",
        str(len(SITES)),
        str(job_dir),
    ]
    result = subprocess.run(
        argv,
        env={**env, "PATH": f"{VENV_BIN}:{env.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"nvflare simulator failed ({result.returncode}):\n{output[-3000:]}")
    return output


# --- a bare deployment ------------------------------------------------------------------------


@dataclass
class Deployment:
    """A provisioned NVFlare server and clients, started from their kits, with NVFlare's
    default settings everywhere."""

    root: Path
    env: dict[str, str]
    kits: ProvisionedKits | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, timeout_s: float = 60) -> None:
        """Provision, start the server and every client, return once all are registered."""
        fed_learn_port, admin_port = free_ports(2)
        self.kits = provision(
            ProvisionRequest(
                project="bench",
                server_host="localhost",
                fed_learn_port=fed_learn_port,
                admin_port=admin_port,
                site_names=SITES,
            ),
            parent_dir=self.root,
        )
        env = {**self.env, "PATH": f"{VENV_BIN}:{self.env.get('PATH', '')}"}
        participants = {"server": self.kits.server, **self.kits.clients}
        for name, kit in participants.items():
            script = kit / "startup" / "sub_start.sh"
            self.processes[name] = spawn(
                ["bash", str(script), "--once"], self.output_log(name), env=env, cwd=kit
            )
        session = self.session(timeout_s)
        try:
            deadline = time.monotonic() + timeout_s
            while set(SITES) - {c.name for c in session.get_system_info().client_info}:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"clients not registered within {timeout_s} s")
                time.sleep(0.2)
        finally:
            session.close()

    def output_log(self, participant: str) -> Path:
        return self.root / f"{participant}.output.log"

    def session(self, timeout_s: float = ADMIN_TIMEOUT_S) -> Session:
        """An admin session (retried while the server starts)."""
        assert self.kits is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return new_secure_session(
                    self.kits.admin.name, str(self.kits.admin), timeout=ADMIN_TIMEOUT_S
                )
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def submit(self, job_dir: Path) -> str:
        """Submit the job folder (absolute path); returns the NVFlare job id."""
        session = self.session()
        try:
            return session.submit_job(str(job_dir))
        finally:
            session.close()

    def wait(self, job_id: str, timeout_s: float) -> None:
        """Until the job is done; raises unless it completed."""
        session = self.session()
        try:
            session.monitor_job(job_id, timeout=timeout_s, poll_interval=0.2)
            status = session.get_job_meta(job_id).get("status")
        finally:
            session.close()
        if status != "FINISHED:COMPLETED":
            raise RuntimeError(f"bare NVFlare job {job_id} ended as {status}")

    def log_sizes(self) -> dict[str, int]:
        """How long each participant's output log is now (to read a later job's part)."""
        return {name: self.output_log(name).stat().st_size for name in self.processes}

    def logs_since(self, sizes: dict[str, int]) -> tuple[str, str]:
        """(server log, client logs) written after `log_sizes()` returned `sizes`."""

        def tail(name: str) -> str:
            with self.output_log(name).open("rb") as log:
                log.seek(sizes[name])
                return log.read().decode(errors="replace")

        return tail("server"), "".join(tail(site) for site in SITES)

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            kill_tree(process.pid)
        self.processes.clear()


def bench_env() -> dict[str, str]:
    """The environment every benchmarked NVFlare process gets: one torch thread each, as
    Rondo's workers default to, so that only the platform differs."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = "1"
    return env


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2))
