"""Where a run's first global weights come from: the user's model class or a checkpoint.

`RondoPersistor` is the persistor of generated apps. `InitialWeightsOverride` puts a checkpoint
into apps that bring their own persistor (the hosted format), so they can resume too.
"""

import numpy as np
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.model import (
    ModelLearnable,
    ModelLearnableKey,
    make_model_learnable,
)
from nvflare.app_common.abstract.model_persistor import ModelPersistor
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType

from rondo.worker_agent.flare_model import (
    build_model,
    limit_torch_threads,
    load_state_dict_file,
    to_numpy,
)


class RondoPersistor(ModelPersistor):
    """Loads the round-0 weights (built model or `initial_checkpoint`); saves nothing itself:
    the RoundReporter writes every round's checkpoint to the spool."""

    def __init__(
        self,
        model_class: str | None = None,
        model_args: dict | None = None,
        initial_checkpoint: str | None = None,
        import_limit_s: float | None = None,
    ) -> None:
        super().__init__()
        self.model_class = model_class
        self.model_args = model_args or {}
        self.initial_checkpoint = initial_checkpoint
        self.import_limit_s = import_limit_s

    def load_model(self, fl_ctx: FLContext) -> ModelLearnable:
        limit_torch_threads()
        if self.initial_checkpoint:
            self.log_info(fl_ctx, f"starting from checkpoint {self.initial_checkpoint}")
            state_dict = load_state_dict_file(self.initial_checkpoint)
        else:
            state_dict = build_model(
                self.model_class, self.model_args, self.import_limit_s
            ).state_dict()
        return make_model_learnable(to_numpy(state_dict), {})

    def save_model(self, model: ModelLearnable, fl_ctx: FLContext) -> None:
        pass


class InitialWeightsOverride(FLComponent):
    """Replaces the weights an app's own persistor loaded with those of `checkpoint`.

    ScatterAndGather keeps the very learnable it announces with INITIAL_MODEL_LOADED, so
    updating it in place changes what round `start_round` trains from.
    """

    def __init__(self, checkpoint: str) -> None:
        super().__init__()
        self.checkpoint = checkpoint

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if event_type != AppEventType.INITIAL_MODEL_LOADED:
            return
        learnable = fl_ctx.get_prop(AppConstants.GLOBAL_MODEL)
        if not isinstance(learnable, ModelLearnable):
            self.system_panic("cannot resume: the app's workflow exposes no global model", fl_ctx)
            return
        loaded = load_state_dict_file(self.checkpoint)
        current = learnable.get(ModelLearnableKey.WEIGHTS) or {}
        keep_torch = any(not isinstance(v, np.ndarray) for v in current.values())
        learnable[ModelLearnableKey.WEIGHTS] = loaded if keep_torch else to_numpy(loaded)
        self.log_info(fl_ctx, f"initial weights replaced by checkpoint {self.checkpoint}")
