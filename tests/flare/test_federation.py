"""A real NVFlare federation on loopback: provisioning, the server and two clients started from
the worker-agent's ProcessSpecs, a generated run, its resumption, and a hosted-format app.

Site 0 holds 16 samples of value 1.0, site 1 holds 8 of value 4.0; training fills every weight
with the site's value, so each global model is exactly (16 * 1 + 8 * 4) / 24 = 2.0.
"""

import json
import runpy
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import torch

from rondo.contracts.events import ServerAssignment
from rondo.contracts.training import Timing, TrainingConfig
from rondo.scheduler.provisioning import ProvisionedKits, ProvisionRequest, provision
from rondo.stack.ports import free_ports
from rondo.stack.processes import kill_tree, pid_alive, process_tree, spawn
from rondo.worker_agent.flare_app import AppBuildError, patch_custom_app
from rondo.worker_agent.flare_runs import (
    OUTPUT_LOG,
    ClientRunSpec,
    ServerRunSpec,
    abort_run,
    client_process,
    server_process,
    submit_run,
)

HERE = Path(__file__).parent
SITES = ["site-0-0", "site-1-0"]
SPARE_SITE = "site-2-0"
SITE_VALUE = {"site-0-0": 1.0, "site-1-0": 4.0}
SITE_SAMPLES = {"site-0-0": 16, "site-1-0": 8}
GLOBAL_VALUE = 2.0
RUN_TIMEOUT_S = 90.0


@dataclass
class Federation:
    root: Path
    kits: ProvisionedKits
    fed_learn_port: int
    admin_port: int
    model_out_dir: Path
    clients: dict[str, ClientRunSpec] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    seen_pids: set[int] = field(default_factory=set)  # every process of the trees, sampled

    def sample_trees(self) -> None:
        for process in self.processes:
            self.seen_pids.update(p.pid for p in process_tree(process.pid))

    def server_spec(
        self,
        run: str,
        job_files_dir: Path,
        config: TrainingConfig,
        start_round: int = 0,
        initial_checkpoint: Path | None = None,
    ) -> ServerRunSpec:
        has_custom_app = (job_files_dir / "configs").is_dir()
        assignment = ServerAssignment(
            kit_url="unused",
            admin_kit_url="unused",
            admin_name=self.kits.admin.name,
            fed_learn_port=self.fed_learn_port,
            admin_port=self.admin_port,
            site_names=SITES,
            start_round=start_round,
            job_files=[],
            has_custom_app=has_custom_app,
            config=config,
            timing=Timing(heartbeat_interval_s=2.0, worker_lost_after_s=15.0),
        )
        return ServerRunSpec(
            kit_dir=self.kits.server,
            admin_kit_dir=self.kits.admin,
            admin_name=self.kits.admin.name,
            job_files_dir=job_files_dir,
            work_dir=self.root / run / "work",
            spool_dir=self.root / run / "spool",
            assignment=assignment,
            initial_checkpoint=initial_checkpoint,
            python=_python(),
            job_id=f"job-{run}",
            model_out_dir=self.model_out_dir,
        )

    def stop(self) -> list[psutil.Process]:
        """Kill every process tree; return whatever still runs from this federation."""
        for process in self.processes:
            kill_tree(process.pid)
            process.wait(timeout=10)
        self.processes.clear()
        return [p for p in psutil.process_iter(["cmdline"]) if _belongs_to(p, self.root)]


def _python() -> str:
    return sys.executable


def _belongs_to(process: psutil.Process, root: Path) -> bool:
    try:
        return str(root) in " ".join(process.info["cmdline"] or [])
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _make_data_root(path: Path, site: str) -> Path:
    path.mkdir(parents=True)
    (path / "value.txt").write_text(str(SITE_VALUE[site]))
    half = SITE_SAMPLES[site] // 2
    for name in ("a.csv", "b.csv"):
        (path / name).write_text("".join("0.1,0.2,0.3,0.4,1\n" for _ in range(half)))
    return path


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("flare")
    fed_learn_port, admin_port = free_ports(2)
    kits = provision(
        ProvisionRequest(
            project="flaretest",
            server_host="localhost",
            fed_learn_port=fed_learn_port,
            admin_port=admin_port,
            site_names=[*SITES, SPARE_SITE],
        ),
        parent_dir=root,
    )
    fed = Federation(root, kits, fed_learn_port, admin_port, model_out_dir=root / "model_out")
    try:
        spec = fed.server_spec("boot", HERE / "generated_job", TrainingConfig())
        server = server_process(spec)
        fed.processes.append(spawn(server.argv, server.output_log, server.env, server.cwd))
        for slot, site in enumerate(SITES):
            fed.clients[site] = ClientRunSpec(
                kit_dir=kits.clients[site],
                site_name=site,
                slot=slot,
                data_root=_make_data_root(root / "data" / site, site),
                out_spool=root / "out" / site,
                device="cpu",
                python=_python(),
            )
            client = client_process(fed.clients[site])
            fed.processes.append(spawn(client.argv, client.output_log, client.env, client.cwd))
        yield fed
    finally:
        fed.stop()


def _run(fed: Federation, spec: ServerRunSpec) -> tuple[str, dict[str, object], float]:
    """Submit, wait for run_ended.json; (nvflare job id, run_ended, seconds from submit)."""
    started = time.monotonic()
    job_id = submit_run(spec, timeout_s=60)
    ended = _wait_for(spec.spool_dir / "run_ended.json", fed)
    return job_id, json.loads(ended.read_text()), time.monotonic() - started


def _wait_for(path: Path, fed: Federation | None = None) -> Path:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} not written in {RUN_TIMEOUT_S} s")
        if fed:
            fed.sample_trees()
        time.sleep(0.1)
    return path


def _round(spool: Path, round_: int) -> dict:
    return json.loads((spool / f"round_{round_:05d}.json").read_text())


def _assert_global_round(spool: Path, round_: int, num_rounds: int) -> dict:
    summary = _round(spool, round_)
    assert summary["round"] == round_
    assert summary["num_rounds"] == num_rounds
    samples = {c["site_name"]: c["samples"] for c in summary["contributions"]}
    assert samples == SITE_SAMPLES
    assert summary["metrics"]["loss"] == pytest.approx(GLOBAL_VALUE)  # samples-weighted
    checkpoint = torch.load(spool / f"round_{round_:05d}.pt", weights_only=True)
    assert all(torch.allclose(v, torch.full_like(v, GLOBAL_VALUE)) for v in checkpoint.values())
    return summary


def test_generated_run(federation: Federation) -> None:
    spec = federation.server_spec(
        "generated", HERE / "generated_job", TrainingConfig(num_rounds=5, extra={"tag": "t1"})
    )
    job_id, ended, wall_s = _run(federation, spec)

    assert ended == {"completed": True, "error": None}
    assert json.loads((spec.spool_dir / "run_started.json").read_text()) == {
        "nvflare_job_id": job_id
    }
    durations = []
    for round_ in range(5):
        summary = _assert_global_round(spec.spool_dir, round_, num_rounds=5)
        durations.append(summary["duration_s"])
        if round_ > 0:  # every site trained from the previous global model
            assert summary["metrics"]["seen"] == pytest.approx(GLOBAL_VALUE)
    print(f"\ngenerated run: {wall_s:.1f} s from submit, rounds {durations} s")

    model_def = runpy.run_path(str(HERE / "generated_job" / "scripts" / "model_def.py"))
    model_def["TinyNet"]().load_state_dict(
        torch.load(spec.spool_dir / "round_00004.pt", weights_only=True)
    )
    for site, client in federation.clients.items():
        for round_ in range(5):
            note = client.out_spool / f"round_{round_}" / "note.txt"
            assert note.read_text() == f"{site} round {round_}"
        logs = (client.kit_dir / OUTPUT_LOG).read_text()
        assert "training round 4 of 5" in logs
        assert '"tag": "t1"' in logs


def test_resumed_run_runs_only_remaining_rounds(federation: Federation) -> None:
    checkpoint = federation.root / "generated" / "spool" / "round_00001.pt"
    spec = federation.server_spec(
        "resumed",
        HERE / "generated_job",
        TrainingConfig(num_rounds=5),
        start_round=2,
        initial_checkpoint=checkpoint,
    )
    _, ended, _ = _run(federation, spec)

    assert ended == {"completed": True, "error": None}
    rounds = sorted(p.name for p in spec.spool_dir.glob("round_*.json"))
    assert rounds == ["round_00002.json", "round_00003.json", "round_00004.json"]
    first = _assert_global_round(spec.spool_dir, 2, num_rounds=5)
    assert first["metrics"]["seen"] == pytest.approx(GLOBAL_VALUE)  # started from the checkpoint


def test_user_code_error_ends_the_run(federation: Federation, tmp_path: Path) -> None:
    job = tmp_path / "broken_job"
    (job / "scripts").mkdir(parents=True)
    (job / "scripts" / "model_def.py").write_text(
        (HERE / "generated_job" / "scripts" / "model_def.py").read_text()
        + "\n\ndef fl_train_model(payload, out_dir, logger=None):\n    return undefined_name\n"
    )
    spec = federation.server_spec("broken", job, TrainingConfig(num_rounds=3))
    _, ended, _ = _run(federation, spec)

    assert ended["completed"] is False
    assert "EXECUTION_EXCEPTION" in ended["error"]
    assert not list(spec.spool_dir.glob("round_*"))
    failed_site = next(site for site in SITES if f"\n{site}: NameError" in ended["error"])
    client_log = (federation.clients[failed_site].kit_dir / OUTPUT_LOG).read_text()
    assert "Traceback" in client_log  # the user's traceback is in that site's log


def test_abort_ends_the_run(federation: Federation) -> None:
    config = TrainingConfig(num_rounds=100, extra={"sleep_s": 0.2})
    spec = federation.server_spec("aborted", HERE / "generated_job", config)
    job_id = submit_run(spec, timeout_s=60)
    _wait_for(spec.spool_dir / "round_00000.json")
    abort_run(spec, job_id, timeout_s=30)
    ended = json.loads(_wait_for(spec.spool_dir / "run_ended.json").read_text())

    assert ended["completed"] is False
    assert ended["error"].startswith("run ended after round")


def test_hosted_format_app(federation: Federation) -> None:
    spec = federation.server_spec("hosted", HERE / "hosted_app", TrainingConfig())
    _, ended, _ = _run(federation, spec)

    assert ended == {"completed": True, "error": None}
    for round_ in range(2):  # the app's own num_rounds
        _assert_global_round(spec.spool_dir, round_, num_rounds=2)
    model = torch.load(federation.model_out_dir / "GLOBAL_MODEL.pt", weights_only=True)
    assert all(torch.allclose(v, torch.full_like(v, GLOBAL_VALUE)) for v in model.values())
    for client in federation.clients.values():  # each site read and wrote its own data root
        assert (client.data_root / "runs" / "round_1").is_dir()


def test_hosted_format_app_resumes(federation: Federation) -> None:
    checkpoint = federation.root / "hosted" / "spool" / "round_00000.pt"
    spec = federation.server_spec(
        "hosted-resumed",
        HERE / "hosted_app",
        TrainingConfig(),
        start_round=1,
        initial_checkpoint=checkpoint,
    )
    _, ended, _ = _run(federation, spec)

    assert ended == {"completed": True, "error": None}
    assert sorted(p.name for p in spec.spool_dir.glob("round_*.json")) == ["round_00001.json"]
    _assert_global_round(spec.spool_dir, 1, num_rounds=2)
    server_log = (federation.kits.server / OUTPUT_LOG).read_text()
    assert f"initial weights replaced by checkpoint {checkpoint.resolve()}" in server_log


def test_quantization_filters_are_rejected(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(HERE / "hosted_app" / "configs", configs)
    client = json.loads((configs / "config_fed_client.json").read_text())
    client["task_result_filters"] = [
        {
            "tasks": ["train"],
            "filters": [{"path": "nvflare.app_opt.pt.quantization.quantizor.ModelQuantizor"}],
        }
    ]
    (configs / "config_fed_client.json").write_text(json.dumps(client))
    spec_assignment = ServerAssignment(
        kit_url="-",
        admin_kit_url="-",
        admin_name="admin",
        fed_learn_port=1,
        admin_port=2,
        site_names=SITES,
        job_files=[],
        has_custom_app=True,
        config=TrainingConfig(),
    )
    with pytest.raises(AppBuildError, match="bitsandbytes"):
        patch_custom_app(configs, spec_assignment, None, tmp_path / "spool")


def test_no_process_survives(federation: Federation) -> None:
    # The job processes (started in their own sessions) were part of the tracked trees.
    assert len(federation.seen_pids) > len(federation.processes)
    assert federation.stop() == []
    assert not [pid for pid in federation.seen_pids if pid_alive(pid)]
