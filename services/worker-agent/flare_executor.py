"""The NVFlare executor of generated apps: runs the user's `fl_train_model` once per round.

A plain Executor (not the Client API) so that no fixed polling sits between receiving the global
model and training. The training contract is in the product spec; in short:
`fl_train_model(payload, out_dir, logger) -> {"weights", "samples", "metrics"}`.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from nvflare.apis.dxo import DXO, DataKind, MetaKey
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from rondo.contracts.spool import OUT_SPOOL_ENV, OUT_STAGING_DIR, out_round_dir
from rondo.worker_agent.flare_model import (
    ERROR_HEADER,
    build_model,
    import_model_def,
    limit_torch_threads,
    to_numpy,
    to_torch,
)

TRAIN_FN = "fl_train_model"
VALIDATE_FN = "fl_validate_model"
HOSTED_TRAIN_FN = "fl_train"  # the hosted SDK's style: the model comes pre-built

LogFn = Callable[[str | dict[str, Any]], None]


class TrainingResultError(ValueError):
    """The user's training function returned something outside the contract."""


class RondoExecutor(Executor):
    """Handles `train` (and `validate`) tasks by calling the job's model_def functions.

    Reads its process environment as the client agent sets it: RONDO_DATA_ROOT, RONDO_DEVICE,
    RONDO_OUT_SPOOL (user out_dir files land in `$RONDO_OUT_SPOOL/round_<r>/`).
    """

    def __init__(
        self,
        job_id: str = "",
        num_rounds: int = 0,
        local_epochs: int = 2,
        batch_size: int = 32,
        learning_rate: float = 0.001,
        extra: dict[str, Any] | None = None,
        model_class: str | None = None,
        model_args: dict[str, Any] | None = None,
        train_task: str = "train",
        validate_task: str = "validate",
        import_limit_s: float | None = None,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.num_rounds = num_rounds
        self.hyper_params = {
            "local_epochs": local_epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
        }
        self.extra = extra or {}
        self.model_class = model_class
        self.model_args = model_args or {}
        self.train_task = train_task
        self.validate_task = validate_task
        self.import_limit_s = import_limit_s
        self._model_def: ModuleType | None = None

    def execute(
        self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal
    ) -> Shareable:
        try:
            if task_name == self.train_task:
                return self._train(shareable, fl_ctx)
            if task_name == self.validate_task:
                return self._validate(shareable, fl_ctx)
            return make_reply(ReturnCode.TASK_UNKNOWN)
        except Exception as error:  # the user's code: report it, keep the client alive
            summary = f"{type(error).__name__}: {error}"
            self.log_exception(fl_ctx, f"task '{task_name}' failed: {summary}")
            reply = make_reply(ReturnCode.EXECUTION_EXCEPTION)
            reply.set_header(ERROR_HEADER, summary)
            return reply

    # --- tasks -----------------------------------------------------------------------------

    def _train(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        incoming = FLModelUtils.from_shareable(shareable)
        current_round = int(incoming.current_round or 0)
        global_weights = to_torch(incoming.params or {})
        model_def = self._load_model_def()
        logger = self._user_logger(fl_ctx)
        env = self._payload_env(fl_ctx, current_round)

        with _round_out_dir(current_round) as out_dir:
            if hasattr(model_def, TRAIN_FN):
                payload = {
                    "dataset": {"data_root": _data_root()},
                    "env": env,
                    "initial_weights": global_weights,
                }
                result = getattr(model_def, TRAIN_FN)(payload, str(out_dir), logger)
                weights, samples, metrics = _training_result(result, default_weights=None)
            elif hasattr(model_def, HOSTED_TRAIN_FN):
                model = build_model(self.model_class, self.model_args, self.import_limit_s)
                if global_weights:
                    model.load_state_dict(global_weights)
                hosted_env = {**env, "data_root": _data_root()}
                result = getattr(model_def, HOSTED_TRAIN_FN)(
                    model, hosted_env, str(out_dir), logger
                )
                weights, samples, metrics = _training_result(
                    result or {"samples": 1}, default_weights=model.state_dict()
                )
            else:
                raise AttributeError(
                    f"model_def.py defines neither {TRAIN_FN} nor {HOSTED_TRAIN_FN}"
                )

        self.log_info(fl_ctx, f"round {current_round}: trained on {samples} samples, {metrics}")
        reply = FLModel(
            params=to_numpy(weights),
            params_type=ParamsType.FULL,
            metrics=metrics,
            meta={MetaKey.NUM_STEPS_CURRENT_ROUND: samples},
        )
        return FLModelUtils.to_shareable(reply)

    def _validate(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        model_def = self._load_model_def()
        if not hasattr(model_def, VALIDATE_FN):
            return make_reply(ReturnCode.TASK_UNKNOWN)
        incoming = FLModelUtils.from_shareable(shareable)
        current_round = int(incoming.current_round or 0)
        payload = {
            "dataset": {"data_root": _data_root()},
            "env": self._payload_env(fl_ctx, current_round),
            "initial_weights": to_torch(incoming.params or {}),
        }
        with tempfile.TemporaryDirectory(prefix="rondo-validate-") as out_dir:
            result = getattr(model_def, VALIDATE_FN)(payload, out_dir, self._user_logger(fl_ctx))
        metrics = _float_metrics((result or {}).get("metrics"))
        return DXO(data_kind=DataKind.METRICS, data=metrics).to_shareable()

    # --- helpers ---------------------------------------------------------------------------

    def _load_model_def(self) -> ModuleType:
        if self._model_def is None:
            limit_torch_threads()
            self._model_def = import_model_def(self.import_limit_s)
        return self._model_def

    def _payload_env(self, fl_ctx: FLContext, current_round: int) -> dict[str, Any]:
        return {
            **self.extra,
            "SITE_NAME": fl_ctx.get_identity_name(),
            "JOB_ID": self.job_id,
            "CURRENT_ROUND": current_round,
            "NUM_ROUNDS": self.num_rounds,
            "DEVICE": os.environ.get("RONDO_DEVICE", "cpu"),
            **self.hyper_params,
        }

    def _user_logger(self, fl_ctx: FLContext) -> LogFn:
        def log(line: str | dict[str, Any]) -> None:
            text = line if isinstance(line, str) else json.dumps(line, default=str)
            self.log_info(fl_ctx, text)

        return log


@contextmanager
def _round_out_dir(current_round: int) -> Iterator[Path]:
    """A fresh out_dir for one round. When the round succeeds, its files become
    `$RONDO_OUT_SPOOL/round_<r>/` in one rename, so the agent never sees half a folder."""
    spool = os.environ.get(OUT_SPOOL_ENV)
    staging = Path(spool) / OUT_STAGING_DIR if spool else None
    if staging:
        staging.mkdir(parents=True, exist_ok=True)
    name = out_round_dir(current_round)
    path = Path(tempfile.mkdtemp(prefix=f"{name}_", dir=staging))
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    if spool is None or not any(path.iterdir()):
        shutil.rmtree(path, ignore_errors=True)
        return
    target = Path(spool) / name
    # A resumed run trains this round again: its files replace the earlier attempt's.
    shutil.rmtree(target, ignore_errors=True)
    path.rename(target)


def _data_root() -> str:
    data_root = os.environ.get("RONDO_DATA_ROOT")
    if not data_root:
        raise RuntimeError("RONDO_DATA_ROOT is not set for this client process")
    return data_root


def _training_result(
    result: object, default_weights: dict[str, torch.Tensor] | None
) -> tuple[dict[str, Any], int, dict[str, float]]:
    """(weights, samples, metrics) from a training function's return value."""
    if not isinstance(result, dict):
        raise TrainingResultError(f"{TRAIN_FN} must return a dict, got {type(result).__name__}")
    weights = result.get("weights", result.get("state_dict", default_weights))
    if not isinstance(weights, dict) or not weights:
        raise TrainingResultError(f"{TRAIN_FN} returned no 'weights' (or 'state_dict')")
    samples = result.get("samples", result.get("num_samples"))
    if isinstance(samples, torch.Tensor):
        samples = samples.item()
    if isinstance(samples, bool) or not isinstance(samples, int | float) or samples < 0:
        raise TrainingResultError(
            f"{TRAIN_FN} must return 'samples' (or 'num_samples') as a count, got {samples!r}"
        )
    return weights, int(samples), _float_metrics(result.get("metrics"))


def _float_metrics(metrics: object) -> dict[str, float]:
    """The numeric metrics; other values (strings, lists) stay in the user's own logs."""
    if not isinstance(metrics, dict):
        return {}
    numeric: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, int | float) and not isinstance(value, bool):
            numeric[str(name)] = float(value)
    return numeric
