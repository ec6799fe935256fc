"""A hosted-format client executor: trains `model_def` on the shard found at `data_root`."""

import importlib
from pathlib import Path

import torch
from nvflare.apis.dxo import DXO, DataKind, MetaKey, from_shareable
from nvflare.apis.executor import Executor
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.shareable import make_reply


class CustomClientExecutor(Executor):
    def __init__(
        self,
        data_root="/app/payload",
        adapter_module="model_def",
        model_class="TinyNet",
        model_args=None,
        train_fn="fl_train",
        validate_fn=None,
        local_epochs=1,
        batch_size=8,
        learning_rate=0.01,
        **extras,
    ):
        super().__init__()
        self.data_root = data_root
        self.adapter_module = adapter_module
        self.model_class = model_class
        self.model_args = model_args or {}
        self.train_fn = train_fn
        self.env = {
            "local_epochs": local_epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            **extras,
        }

    def execute(self, task_name, shareable, fl_ctx, abort_signal):
        if task_name != "train":
            return make_reply(ReturnCode.TASK_UNKNOWN)
        adapter = importlib.import_module(self.adapter_module)
        model = getattr(adapter, self.model_class)(**self.model_args)
        weights = from_shareable(shareable).data
        model.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
        out_dir = Path(self.data_root) / "runs" / f"round_{shareable.get_header('current_round')}"
        out_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "data_root": self.data_root}
        result = getattr(adapter, self.train_fn)(model, env, str(out_dir))
        data = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        meta = {
            MetaKey.NUM_STEPS_CURRENT_ROUND: result["samples"],
            MetaKey.INITIAL_METRICS: result["metrics"],
        }
        return DXO(data_kind=DataKind.WEIGHTS, data=data, meta=meta).to_shareable()
