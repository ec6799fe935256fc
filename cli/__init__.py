"""Rondo: self-hosted federated learning on a fleet of GPU workers.

This package holds the `rondo` command (CLI and the local embedded stack) and the Python SDK
(`rondo.Client`, `rondo.TrainingConfig`). The services live in
`rondo.gateway`, `rondo.scheduler`, `rondo.worker_agent` and `rondo.artifacts`; what they share
is in `rondo.contracts`.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rondo.client import Client
    from rondo.contracts.training import TrainingConfig

__all__ = ["Client", "TrainingConfig"]

# Imported on first use, so `import rondo` (and every `rondo.*` service) stays light.
_LAZY_EXPORTS = {"Client": "rondo.client", "TrainingConfig": "rondo.contracts.training"}


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rondo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
