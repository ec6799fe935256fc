"""A hosted-format persistor: builds `model_def.<Class>`; writes the global model to
$RESONTECH_OUT_DIR/$RESONTECH_OUT_FILENAME every round."""

import importlib
import os

import torch
from nvflare.app_common.abstract.model import make_model_learnable
from nvflare.app_common.abstract.model_persistor import ModelPersistor


class CustomPersistor(ModelPersistor):
    def __init__(self, adapter_module="model_def", model_class="TinyNet", model_args=None):
        super().__init__()
        self.adapter_module = adapter_module
        self.model_class = model_class
        self.model_args = model_args or {}

    def load_model(self, fl_ctx):
        adapter = importlib.import_module(self.adapter_module)
        model = getattr(adapter, self.model_class)(**self.model_args)
        weights = {k: v.numpy() for k, v in model.state_dict().items()}
        return make_model_learnable(weights, {})

    def save_model(self, model_learnable, fl_ctx):
        out_dir = os.environ.get("RESONTECH_OUT_DIR", "/app/out")
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, os.environ.get("RESONTECH_OUT_FILENAME", "GLOBAL_MODEL.pt"))
        state = {k: torch.as_tensor(v) for k, v in model_learnable["weights"].items()}
        torch.save(state, path)
