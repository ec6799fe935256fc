"""The training configuration and GPU needs a user submits with a job.

Every number must be finite: JSON's `Infinity` and `NaN` (which Python's parser accepts) are
refused with the field's name, here at the gateway, rather than reaching the scheduler as
`null` (pydantic writes non-finite floats so) where the job could never be read. Every timing
has an upper bound: a limit of days would leave a job stuck as long.
"""

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HOUR_S = 3600.0


def finite_values(value: Any, where: str) -> Any:
    """`value` if no number in it (at any depth of dicts and lists) is infinite or NaN;
    raises ValueError naming the first one's path otherwise."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, not {value}")
    if isinstance(value, dict):
        for key, item in value.items():
            finite_values(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            finite_values(item, f"{where}[{index}]")
    return value


class TrainingConfig(BaseModel):
    """FedAvg settings of one job; defaults follow the product spec."""

    model_config = ConfigDict(allow_inf_nan=False)

    num_rounds: int = Field(default=5, ge=1, le=10_000)
    local_epochs: int = Field(default=2, ge=1, le=1_000)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    learning_rate: float = Field(default=0.001, gt=0, le=10)
    min_clients: int | None = Field(
        default=None, ge=1, description="Defaults to the number of shards."
    )
    model_class: str | None = Field(
        default=None, description="Class in model_def.py to build; found automatically if unset."
    )
    model_args: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(
        default_factory=dict, description="Passed to fl_train_model in payload['env']."
    )

    @field_validator("model_args", "extra")
    @classmethod
    def _finite(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        return finite_values(value, info.field_name)

    def required_clients(self, workers: int) -> int:
        """How many of a run's `workers` must stay: `min_clients`, or every one when unset."""
        return min(self.min_clients or workers, workers)


class GpuRequirements(BaseModel):
    """Where a job may run: preferred GPU models, memory per worker, or pinned workers."""

    gpu_models: list[str] = Field(default_factory=list, description="Ordered preference.")
    estimated_memory_mb: int | None = Field(default=None, ge=0)
    worker_ids: list[str] = Field(default_factory=list)


class Timing(BaseModel):
    """Liveness limits of a job; every value can be overridden per job and per deployment.
    Each is finite and bounded (`le`)."""

    model_config = ConfigDict(allow_inf_nan=False)

    heartbeat_interval_s: float = Field(default=2.0, gt=0, le=60.0)
    worker_lost_after_s: float = Field(default=10.0, gt=0, le=HOUR_S)
    below_min_clients_grace_s: float = Field(default=120.0, ge=0, le=24 * HOUR_S)
    import_limit_s: float = Field(
        default=300.0,
        gt=0,
        le=2 * HOUR_S,
        description="Longest import of model_def.py in an NVFlare process; longer fails the "
        "job as a worker timeout",
    )

    @model_validator(mode="after")
    def _lost_after_exceeds_interval(self) -> "Timing":
        if self.worker_lost_after_s <= self.heartbeat_interval_s:
            raise ValueError("worker_lost_after_s must be longer than heartbeat_interval_s")
        return self
