"""The scheduler's settings: `ServiceSettings` plus its database and its job limits.

Every value comes from a `RONDO_SCHEDULER_*` environment variable (the shared ones from
`RONDO_*`), so a deployment tunes the limits without code.
"""

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from rondo.contracts.config import ServiceSettings


def _env(name: str) -> AliasChoices:
    """Read a field from `RONDO_SCHEDULER_<NAME>`; keyword construction keeps the field name."""
    return AliasChoices(f"RONDO_SCHEDULER_{name.upper()}", name)


class SchedulerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RONDO_", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=_env("database_url"),
        description="SQLAlchemy URL; unset means sqlite:///<data_dir>/scheduler.db",
    )
    placement_wait_s: float = Field(
        default=600.0,
        gt=0,
        validation_alias=_env("placement_wait_s"),
        description="A job that finds no workers for this long fails",
    )
    server_start_s: float = Field(
        default=120.0,
        gt=0,
        validation_alias=_env("server_start_s"),
        description="From dispatch to RunStarted (processes up, clients registered, job deployed)",
    )
    round_progress_s: float = Field(
        default=1800.0,
        gt=0,
        validation_alias=_env("round_progress_s"),
        description="A RUNNING job with no completed round for this long fails",
    )
    spare_sites_per_slot: int = Field(
        default=2,
        ge=0,
        le=16,
        validation_alias=_env("spare_sites_per_slot"),
        description="Extra client names provisioned per slot, for replacements",
    )
    reconcile_interval_s: float = Field(
        default=1.0, gt=0, validation_alias=_env("reconcile_interval_s")
    )
    worker_lost_after_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias=_env("worker_lost_after_s"),
        description="An agent silent this long is not offered to placement (each job's own "
        "Timing judges its running workers)",
    )
    checkpoint_wait_s: float = Field(
        default=10.0,
        ge=0,
        validation_alias=_env("checkpoint_wait_s"),
        description="How long a replacement waits for the last round's checkpoint in the "
        "bucket before it resumes from an earlier round",
    )
    max_replacements_per_slot: int = Field(
        default=3,
        ge=0,
        validation_alias=_env("max_replacements_per_slot"),
        description="A worker slot, or the FL server, lost again after this many replacements "
        "fails the job",
    )

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'scheduler.db'}"

    @property
    def work_dir(self) -> Path:
        """Provisioning work folders (startup kits until uploaded) live here."""
        return self.data_dir / "scheduler" / "provisioning"
