"""The Docker runtime without an engine: the container the agent would start for each process,
and the fall back to local processes when no engine answers."""

import logging
from pathlib import Path

import pytest
from docker.types import DeviceRequest

from rondo.worker_agent.config import AgentSettings
from rondo.worker_agent.flare_runs import ClientRunSpec, ProcessSpec, client_process
from rondo.worker_agent.runtime import LocalProcessRuntime
from rondo.worker_agent.runtime_docker import (
    OWNER_LABEL,
    ROLE_LABEL,
    container_spec,
    make_runtime,
)

IMAGE = "rondo/agent:test"
SHA256 = "ab" * 32
CLIENT_MODULE = "nvflare.private.fed.app.client.client_train"
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


def test_gpu_client_container_is_locked_down_with_its_gpu_and_readonly_shard(
    tmp_path: Path,
) -> None:
    spec = client_spec(tmp_path, device="cuda:2", requirements_sha256=SHA256)
    spec.env["RONDO_S3_SECRET_KEY"] = "leak"  # what a careless spec might carry
    spec.env["RONDO_NATS_URL"] = "nats://user:pass@host:4222"
    kwargs = container_spec(
        spec, image=IMAGE, owner="agent-1@/w", memory_limit="8g", user=(10001, 10001)
    )

    folder = str(tmp_path.resolve())  # the process's folder: kit/, data/, out_spool/
    kit, data = (str((tmp_path / name).resolve()) for name in ("kit", "data"))
    assert kwargs["image"] == IMAGE
    assert kwargs["command"][:4] == ["python", "-u", "-m", CLIENT_MODULE]
    assert kwargs["working_dir"] == kit
    assert kwargs["volumes"] == {
        folder: {"bind": folder, "mode": "rw"},
        data: {"bind": data, "mode": "ro"},
    }
    assert kwargs["device_requests"] == [DeviceRequest(device_ids=["2"], capabilities=[["gpu"]])]
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == "8g"
    assert kwargs["labels"] == {OWNER_LABEL: "agent-1@/w", ROLE_LABEL: "client"}
    assert kwargs["user"] == "10001:10001"
    assert kwargs["read_only"] is True
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["pids_limit"] > 0
    assert set(kwargs["tmpfs"]) == {"/tmp"}

    env = kwargs["environment"]
    assert env["RONDO_DEVICE"] == "cuda:0"  # the only GPU the container sees
    assert env["RONDO_DATA_ROOT"] == data
    assert env["RONDO_OUTPUT_LOG"] == str(spec.output_log)
    assert env["OMP_NUM_THREADS"] == "1"
    assert not {"PATH", "RONDO_S3_SECRET_KEY", "RONDO_NATS_URL"} & set(env)
    assert not any("/var/run/docker.sock" in path for path in kwargs["volumes"])


def test_job_env_is_mounted_readonly_and_put_on_the_path(tmp_path: Path) -> None:
    env_dir = tmp_path / "envs" / SHA256
    site_packages = env_dir / "lib" / "python3.11" / "site-packages"
    site_packages.mkdir(parents=True)
    (env_dir / "pyvenv.cfg").write_text("home = /usr/bin\n")
    spec = client_spec(tmp_path, device="cpu", requirements_sha256=SHA256)
    spec.argv[0] = str(env_dir / "bin" / "python")
    kwargs = container_spec(
        spec, image=IMAGE, owner="agent-1", memory_limit="2g", user=(10001, 10001)
    )

    assert kwargs["volumes"][str(site_packages)] == {"bind": str(site_packages), "mode": "ro"}
    assert kwargs["environment"]["PYTHONPATH"] == str(site_packages)
    assert kwargs["command"][0] == "python"


def test_cpu_client_without_requirements_runs_on_the_image_alone(tmp_path: Path) -> None:
    spec = client_spec(tmp_path, device="cpu", requirements_sha256=None)
    kwargs = container_spec(
        spec, image=IMAGE, owner="agent-1", memory_limit="2g", user=(10001, 10001)
    )

    assert kwargs["device_requests"] == []
    assert kwargs["environment"]["RONDO_DEVICE"] == "cpu"
    assert "PYTHONPATH" not in kwargs["environment"]


def test_server_specs_become_containers_too(tmp_path: Path) -> None:
    spec = client_spec(tmp_path, device="cpu", requirements_sha256=None)
    spec.container = None  # what `server_process` returns: no shard, no device
    kwargs = container_spec(
        spec, image=IMAGE, owner="agent-1", memory_limit="2g", user=(10001, 10001)
    )

    folder = str(tmp_path.resolve())
    assert kwargs["volumes"] == {folder: {"bind": folder, "mode": "rw"}}
    assert kwargs["labels"][ROLE_LABEL] == "server"
    assert kwargs["read_only"] is True
    assert kwargs["device_requests"] == []


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
