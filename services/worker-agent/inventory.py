"""What this host offers the scheduler: one slot per GPU, or one CPU slot on a CPU-only host.

Memory figures are re-read on every heartbeat so the scheduler sees what is free right now.
"""

import contextlib
import logging
import re

import psutil
import pynvml

from rondo.contracts.events import Slot

logger = logging.getLogger(__name__)

MIB = 1024 * 1024

# Words in NVML device names that say nothing about the GPU model users ask for.
_VENDOR_WORDS = {"nvidia", "geforce", "tesla", "quadro"}
_NOISE_TOKEN = re.compile(r"^(\d+gb|sxm\d*|pcie|hbm\d*e?|nvl|mig)$")


def normalize_gpu_model(device_name: str) -> str:
    """Name an NVML device the way users name GPUs ('NVIDIA GeForce RTX 4090' -> 'rtx_4090').

    Vendor words, memory sizes and form factors are dropped: 'NVIDIA H100 80GB HBM3' -> 'h100',
    'NVIDIA A100-SXM4-40GB' -> 'a100'.
    """
    tokens = re.split(r"[\s\-_]+", device_name.strip().lower())
    kept = [t for t in tokens if t and t not in _VENDOR_WORDS and not _NOISE_TOKEN.match(t)]
    return "_".join(kept) or "gpu"


def cpu_slot() -> Slot:
    """The single slot of a host without GPUs: its RAM stands in for GPU memory."""
    memory = psutil.virtual_memory()
    return Slot(
        index=0,
        kind="cpu",
        model="cpu",
        total_memory_mb=memory.total // MIB,
        free_memory_mb=memory.available // MIB,
    )


class Inventory:
    """The slots of this host; `current()` is cheap enough to call every heartbeat."""

    def __init__(self, declared: list[Slot] | None = None) -> None:
        self._declared = declared
        self._gpus_available = False
        if declared is None:
            self._gpus_available = _init_nvml()

    @property
    def has_gpus(self) -> bool:
        return self._gpus_available

    def current(self) -> list[Slot]:
        """The declared slots if any, else the GPUs seen by NVML, else one CPU slot."""
        if self._declared is not None:
            return [slot.model_copy() for slot in self._declared]
        if self._gpus_available:
            try:
                slots = _gpu_slots()
            except pynvml.NVMLError as error:
                logger.warning("NVML query failed (%s); reporting the CPU slot", error)
            else:
                if slots:
                    return slots
        return [cpu_slot()]

    def close(self) -> None:
        if self._gpus_available:
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()
            self._gpus_available = False


def _init_nvml() -> bool:
    """True when the NVIDIA driver answers; a host without GPUs fails here at once."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        logger.info("No NVIDIA GPU usable (%s): this is a CPU-only worker", error)
        return False
    return True


def _gpu_slots() -> list[Slot]:
    slots = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
        if isinstance(name, bytes):  # older bindings return bytes
            name = name.decode()
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        slots.append(
            Slot(
                index=index,
                kind="gpu",
                model=normalize_gpu_model(name),
                total_memory_mb=int(memory.total) // MIB,
                free_memory_mb=int(memory.free) // MIB,
            )
        )
    return slots
