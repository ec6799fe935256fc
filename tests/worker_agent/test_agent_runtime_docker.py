"""The Docker runtime without an engine: the container the agent would start for a client,
and the fall back to local processes when no engine answers."""

import logging
from pathlib import Path

import pytest
from docker.types import DeviceRequest

from rondo.worker_agent.config import AgentSettings
from rondo.worker_agent.flare_runs import ClientRunSpec, ProcessSpec, client_process
from rondo.worker_agent.runtime import LocalProcessRuntime
from rondo.worker_agent.runtime_docker import (
    JOB_ENV_DIR,
    OWNER_LABEL,
    REQUIREMENTS_IN_CONTAINER,
    container_spec,
    job_env_volume,
    make_runtime,
)

IMAGE = "rondo/agent:test"
SHA256 = "ab" * 32
START_LINE = (
    "exec python3 -u -m nvflare.private.fed.app.client.client_train -m $WORKSPACE "
    "-s fed_client.json --set secure_train=true uid=site-0-0 config_folder=config\n"
)


def client_spec(tmp_path: Path, device: str, requirements_sha256: str | None) -> ProcessSpec:
    """What the agent's flare layer builds for one client whose kit is in `tmp_path/kit`."""
    kit = tmp_path / "kit"
    (kit / "startup").mkdir(parents=True)
    (kit / "local").mkdir()
    (kit / "startup" / "sub_start.sh").write_text("#!/bin/sh\n" + START_LINE)
    (kit / "startup" / "fed_client.json").write_text('{"client": {}}')
    (kit / "local" / "resources.json.default").write_text("{}")
    (tmp_path / "data").mkdir()
    requirements = tmp_path / "job_files" / "requirements" / "requirements.txt"
    return client_process(
        ClientRunSpec(
            kit_dir=kit,
            site_name="site-0-0",
            slot=0,
            data_root=tmp_path / "data",
            out_spool=tmp_path / "out_spool",
            device=device,
            python="/opt/agent/venv/bin/python",
            extra_pythonpath=[tmp_path / "envs" / SHA256 / "site-packages"],
            requirements_file=requirements,
            requirements_sha256=requirements_sha256,
        )
    )


def test_gpu_client_container_gets_its_gpu_readonly_shard_env_volume_and_limits(
    tmp_path: Path,
) -> None:
    spec = client_spec(tmp_path, device="cuda:2", requirements_sha256=SHA256)
    kwargs = container_spec(spec, image=IMAGE, owner="agent-1@/w", memory_limit="8g")

    kit, data, spool = (str((tmp_path / name).resolve()) for name in ("kit", "data", "out_spool"))
    requirements = str(tmp_path / "job_files" / "requirements" / "requirements.txt")
    assert kwargs["image"] == IMAGE
    assert kwargs["command"][:3] == ["-u", "-m", "nvflare.private.fed.app.client.client_train"]
    assert kwargs["working_dir"] == kit
    assert kwargs["volumes"] == {
        kit: {"bind": kit, "mode": "rw"},
        spool: {"bind": spool, "mode": "rw"},
        data: {"bind": data, "mode": "ro"},
        job_env_volume(SHA256): {"bind": JOB_ENV_DIR, "mode": "rw"},
        requirements: {"bind": REQUIREMENTS_IN_CONTAINER, "mode": "ro"},
    }
    assert kwargs["device_requests"] == [DeviceRequest(device_ids=["2"], capabilities=[["gpu"]])]
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == "8g"
    assert kwargs["labels"] == {OWNER_LABEL: "agent-1@/w"}
    assert kwargs["network_mode"] == "host"

    env = kwargs["environment"]
    assert env["RONDO_DEVICE"] == "cuda:0"  # the only GPU the container sees
    assert env["RONDO_DATA_ROOT"] == data
    assert env["RONDO_REQUIREMENTS"] == REQUIREMENTS_IN_CONTAINER
    assert env["RONDO_OUTPUT_LOG"] == str(spec.output_log)
    assert env["OMP_NUM_THREADS"] == "1"
    assert not {"PATH", "PYTHONPATH", "HOME"} & set(env)


def test_cpu_client_without_requirements_runs_on_the_image_alone(tmp_path: Path) -> None:
    spec = client_spec(tmp_path, device="cpu", requirements_sha256=None)
    kwargs = container_spec(spec, image=IMAGE, owner="agent-1", memory_limit="2g")

    assert kwargs["device_requests"] == []
    assert kwargs["environment"]["RONDO_DEVICE"] == "cpu"
    assert "RONDO_REQUIREMENTS" not in kwargs["environment"]
    assert all(not name.startswith("rondo-job-env-") for name in kwargs["volumes"])


def test_server_specs_never_become_containers(tmp_path: Path) -> None:
    spec = client_spec(tmp_path, device="cpu", requirements_sha256=None)
    spec.container = None  # what `server_process` returns
    with pytest.raises(ValueError, match="only client specs"):
        container_spec(spec, image=IMAGE, owner="agent-1", memory_limit="2g")


@pytest.fixture
def no_docker_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point the Docker client at a socket nobody serves (as on a host without an engine)."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")


def agent_settings(tmp_path: Path, runtime: str) -> AgentSettings:
    return AgentSettings(agent_id="agent-1", data_dir=tmp_path, runtime=runtime)


@pytest.mark.usefixtures("no_docker_engine")
def test_auto_without_an_engine_falls_back_to_processes_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="rondo.worker_agent.runtime_docker"):
        runtime = make_runtime(agent_settings(tmp_path, "auto"), owner="agent-1")
    assert isinstance(runtime, LocalProcessRuntime)
    assert "no Docker engine" in caplog.text
    assert "local processes" in caplog.text


@pytest.mark.usefixtures("no_docker_engine")
def test_docker_asked_for_without_an_engine_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="RONDO_AGENT_RUNTIME=process"):
        make_runtime(agent_settings(tmp_path, "docker"), owner="agent-1")


def test_process_runtime_never_asks_for_an_engine(tmp_path: Path) -> None:
    runtime = make_runtime(agent_settings(tmp_path, "process"), owner="agent-1")
    assert isinstance(runtime, LocalProcessRuntime)
