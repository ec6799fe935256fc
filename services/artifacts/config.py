"""Settings of the artifacts service (environment variables, prefix `RONDO_`)."""

from pathlib import Path

from pydantic import Field

from rondo.contracts.config import ServiceSettings

MIB = 1024 * 1024


class ArtifactsSettings(ServiceSettings):
    """`ServiceSettings` plus the artifacts service's own knobs.

    - `RONDO_ARTIFACTS_DATABASE_URL`: SQLAlchemy URL of the idempotency database
      (default `sqlite:///<data_dir>/artifacts.db`).
    - `RONDO_ARTIFACTS_LOG_FLUSH_INTERVAL_S`: a job's log files are re-uploaded at most this
      often (and always when the job finishes or fails).
    - Redelivery of an event that cannot be handled yet (job not known yet, S3 or NATS
      unreachable) follows every service's `RONDO_CONSUMER_RETRY_DELAY_S` /
      `RONDO_CONSUMER_MAX_RETRY_DELAY_S` (`rondo.contracts.consumers`).
    - `RONDO_ARTIFACTS_MULTIPART_THRESHOLD_MB`: uploads at least this large go multipart.
    - `RONDO_ARTIFACTS_LAST_ROUND_WAIT_S`: how long an ended job's outputs wait for its last
      round's checkpoint before they are announced written without it.
    """

    artifacts_database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/artifacts.db"
    )
    artifacts_log_flush_interval_s: float = Field(default=2.0, gt=0)
    artifacts_multipart_threshold_mb: int = Field(default=64, ge=5)
    artifacts_last_round_wait_s: float = Field(
        default=120.0,
        gt=0,
        description="An ended job's last round not recorded after this long is given up",
    )
    artifacts_ack_wait_s: float = Field(
        default=300.0, gt=0, description="How long one checkpoint or file copy may take"
    )

    @property
    def database_url(self) -> str:
        if self.artifacts_database_url:
            return self.artifacts_database_url
        return f"sqlite:///{(self.data_dir / 'artifacts.db').resolve()}"

    @property
    def work_dir(self) -> Path:
        """Scratch space for checkpoints and rendered log files on their way to S3."""
        return self.data_dir / "artifacts" / "tmp"

    @property
    def multipart_threshold_bytes(self) -> int:
        return self.artifacts_multipart_threshold_mb * MIB
