"""The user's `model_def` module inside NVFlare processes, and weights on the NVFlare wire.

Weights travel between server and clients as dicts of numpy arrays (what NVFlare's
ScatterAndGather, its aggregators and shareable generators handle); users see torch state dicts.
"""

import importlib
import inspect
import os
import threading
from types import ModuleType
from typing import Any

import numpy as np
import torch

MODEL_DEF_MODULE = "model_def"
# Header of a failed task's reply: the user's exception, for the server's run_ended error.
ERROR_HEADER = "rondo_error"

# numpy has no bfloat16: such tensors travel as float32 and are cast back on load_state_dict.
_NUMPY_UNSUPPORTED = (torch.bfloat16,)


def import_model_def(limit_s: float | None = None) -> ModuleType:
    """Import the job's `model_def` (NVFlare puts the app's custom/ folder on sys.path).

    With `limit_s`, an import still running after that many seconds raises TimeoutError: a
    module that waits on the network or for input at import would otherwise hang the round
    until the job's progress limit. The import goes on in a daemon thread that dies with the
    process; a later call waits (and fails) the same way.
    """
    if limit_s is None:
        return importlib.import_module(MODEL_DEF_MODULE)
    outcome: list[ModuleType | BaseException] = []

    def run() -> None:
        try:
            outcome.append(importlib.import_module(MODEL_DEF_MODULE))
        except BaseException as error:  # re-raised in the caller's thread
            outcome.append(error)

    importer = threading.Thread(target=run, name="import-model_def", daemon=True)
    importer.start()
    importer.join(limit_s)
    if not outcome:
        raise TimeoutError(
            f"importing model_def.py took longer than {limit_s:g} s (timing.import_limit_s): "
            "look for network calls, input() or long work at module level"
        )
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def find_model_class(module: ModuleType, class_name: str | None) -> type[torch.nn.Module]:
    """The named class, or the only nn.Module subclass defined in the module itself."""
    if class_name:
        found = getattr(module, class_name, None)
        if not (inspect.isclass(found) and issubclass(found, torch.nn.Module)):
            raise ValueError(f"model_def.{class_name} is not a torch.nn.Module subclass")
        return found
    candidates = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, torch.nn.Module)
        and obj.__module__ == module.__name__
    ]
    if len(candidates) != 1:
        names = sorted(c.__name__ for c in candidates) or ["none"]
        raise ValueError(
            f"model_def.py defines {len(candidates)} nn.Module classes ({', '.join(names)}): "
            "set model_class in the training config"
        )
    return candidates[0]


def build_model(
    class_name: str | None, model_args: dict[str, Any], import_limit_s: float | None = None
) -> torch.nn.Module:
    """Build the user's model as the training config describes it."""
    return find_model_class(import_model_def(import_limit_s), class_name)(**model_args)


def to_numpy(state_dict: dict[str, Any]) -> dict[str, np.ndarray]:
    """A torch state dict (or already-numpy weights) as numpy arrays for the NVFlare wire."""
    weights: dict[str, np.ndarray] = {}
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu()
            if tensor.dtype in _NUMPY_UNSUPPORTED:
                tensor = tensor.float()
            weights[name] = tensor.numpy()
        else:
            weights[name] = np.asarray(value)
    return weights


def to_torch(
    weights: dict[str, Any], dtypes: dict[str, torch.dtype] | None = None
) -> dict[str, torch.Tensor]:
    """Wire weights as a torch state dict; `dtypes` restores each entry's original dtype
    (averaging turns integer buffers such as BatchNorm's counters into floats)."""
    state: dict[str, torch.Tensor] = {}
    for name, value in weights.items():
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        if dtypes and name in dtypes and tensor.dtype != dtypes[name]:
            tensor = tensor.to(dtypes[name])
        state[name] = tensor
    return state


def torch_dtypes(weights: dict[str, Any]) -> dict[str, torch.dtype]:
    """The torch dtype of each entry (no copy: numpy arrays are viewed, not converted)."""
    return {name: tensor.dtype for name, tensor in to_torch(weights).items()}


def limit_torch_threads() -> None:
    """Honour the per-process thread budget the agent set (`OMP_NUM_THREADS`)."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    """A checkpoint file as a plain state dict; NVFlare's `{'model': ...}` files are unwrapped."""
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} is not a state dict (got {type(loaded).__name__})")
    return loaded
