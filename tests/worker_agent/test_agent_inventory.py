"""The host's slots (GPU, CPU fallback, declared) and the agent's settings from the environment."""

from pathlib import Path

import psutil
import pynvml
import pytest

from rondo.contracts.events import Slot
from rondo.worker_agent.config import AgentSettings
from rondo.worker_agent.inventory import Inventory, normalize_gpu_model


def no_gpu_driver() -> None:
    raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)


def test_host_without_nvidia_driver_reports_one_cpu_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlInit", no_gpu_driver)
    inventory = Inventory()
    [slot] = inventory.current()
    assert not inventory.has_gpus
    assert (slot.index, slot.kind, slot.model) == (0, "cpu", "cpu")
    assert slot.total_memory_mb == psutil.virtual_memory().total // (1024 * 1024)
    assert 0 < slot.free_memory_mb <= slot.total_memory_mb


def test_declared_inventory_is_reported_as_declared() -> None:
    declared = [
        Slot(index=0, kind="gpu", model="rtx_4090", total_memory_mb=24564, free_memory_mb=24000),
        Slot(index=1, kind="gpu", model="rtx_4090", total_memory_mb=24564, free_memory_mb=100),
    ]
    assert Inventory(declared).current() == declared


@pytest.mark.parametrize(
    ("device_name", "model"),
    [
        ("NVIDIA GeForce RTX 4090", "rtx_4090"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA A100-SXM4-40GB", "a100"),
        ("Tesla T4", "t4"),
        ("NVIDIA RTX A6000", "rtx_a6000"),
        ("NVIDIA L40S", "l40s"),
    ],
)
def test_gpu_names_are_normalized_like_users_write_them(device_name: str, model: str) -> None:
    assert normalize_gpu_model(device_name) == model


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RONDO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RONDO_AGENT_ID", "gpu-box_1")
    monkeypatch.setenv("RONDO_AGENT_HOST", "10.0.0.7")
    monkeypatch.setenv("RONDO_AGENT_FL_PORTS", "21000-21009")
    monkeypatch.setenv(
        "RONDO_AGENT_INVENTORY",
        '[{"index": 0, "kind": "cpu", "model": "cpu", "total_memory_mb": 8, "free_memory_mb": 4}]',
    )
    monkeypatch.setenv("RONDO_AGENT_HEARTBEAT_INTERVAL_S", "0.5")
    settings = AgentSettings()
    assert settings.agent_id == "gpu-box_1"
    assert settings.agent_host == "10.0.0.7"
    assert settings.fl_port_range == (21000, 21009)
    assert settings.inventory is not None and settings.inventory[0].free_memory_mb == 4
    assert settings.work_root == tmp_path / "agents" / "gpu-box_1"
    assert settings.heartbeat_interval_s == 0.5
    assert (settings.torch_threads, settings.requirements_timeout_s) == (1, 600.0)


@pytest.mark.parametrize(
    ("name", "value"), [("RONDO_AGENT_ID", "a.b"), ("RONDO_AGENT_FL_PORTS", "9-1")]
)
def test_invalid_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError):
        AgentSettings()
