"""The training configuration and GPU needs a user submits with a job."""

from typing import Any

from pydantic import BaseModel, Field, model_validator


class TrainingConfig(BaseModel):
    """FedAvg settings of one job; defaults follow the product spec."""

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

    def required_clients(self, workers: int) -> int:
        """How many of a run's `workers` must stay: `min_clients`, or every one when unset."""
        return min(self.min_clients or workers, workers)


class GpuRequirements(BaseModel):
    """Where a job may run: preferred GPU models, memory per worker, or pinned workers."""

    gpu_models: list[str] = Field(default_factory=list, description="Ordered preference.")
    estimated_memory_mb: int | None = Field(default=None, ge=0)
    worker_ids: list[str] = Field(default_factory=list)


class Timing(BaseModel):
    """Liveness limits of a job; every value can be overridden per job and per deployment."""

    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    worker_lost_after_s: float = Field(default=10.0, gt=0)
    below_min_clients_grace_s: float = Field(default=120.0, ge=0)
    import_limit_s: float = Field(
        default=300.0,
        gt=0,
        description="Longest import of model_def.py in an NVFlare process; longer fails the "
        "job as a worker timeout",
    )

    @model_validator(mode="after")
    def _lost_after_exceeds_interval(self) -> "Timing":
        if self.worker_lost_after_s <= self.heartbeat_interval_s:
            raise ValueError("worker_lost_after_s must be longer than heartbeat_interval_s")
        return self
