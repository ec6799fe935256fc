"""Gateway settings: the shared `RONDO_*` variables plus `RONDO_GATEWAY_*`."""

from typing import Literal

from pydantic import Field

from rondo.contracts.config import ServiceSettings

SERVICE_NAME = "gateway"


class GatewaySettings(ServiceSettings):
    """Read from the environment; every field maps to `RONDO_<FIELD>`."""

    gateway_host: str = Field(default="127.0.0.1", description="RONDO_GATEWAY_HOST")
    gateway_port: int = Field(default=8080, ge=0, le=65535, description="RONDO_GATEWAY_PORT")
    gateway_database_url: str | None = Field(
        default=None,
        description="RONDO_GATEWAY_DATABASE_URL; unset means sqlite:///<data_dir>/gateway.db",
    )
    gateway_rate_limit_per_s: float = Field(
        default=50.0, gt=0, description="RONDO_GATEWAY_RATE_LIMIT_PER_S: requests a key may make"
    )
    gateway_rate_limit_burst: int = Field(
        default=200, ge=1, description="RONDO_GATEWAY_RATE_LIMIT_BURST: requests a key may save up"
    )
    gateway_auth_failures_per_s: float = Field(
        default=0.2,
        gt=0,
        description="RONDO_GATEWAY_AUTH_FAILURES_PER_S: requests with an unknown or revoked API "
        "key one client address may make a second, once its burst is spent (then 429)",
    )
    gateway_auth_failure_burst: int = Field(
        default=20,
        ge=1,
        description="RONDO_GATEWAY_AUTH_FAILURE_BURST: such requests an address may make at once",
    )
    gateway_stream_auth_check_s: float = Field(
        default=2.0,
        gt=0,
        description="RONDO_GATEWAY_STREAM_AUTH_CHECK_S: how often open event streams check that "
        "their API key is still valid (a revoked key's streams end within this)",
    )
    gateway_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="RONDO_GATEWAY_MAX_BODY_BYTES: larger -> 413"
    )
    gateway_worker_online_s: float = Field(
        default=10.0,
        gt=0,
        description="RONDO_GATEWAY_WORKER_ONLINE_S: a worker heard this recently is online",
    )
    gateway_secrets_key: str | None = Field(
        default=None,
        description="RONDO_GATEWAY_SECRETS_KEY: Fernet key sealing users' S3 secrets in the "
        "database (unset: <data dir>/gateway-secrets.key, made on first start)",
    )
    gateway_log_retention_days: float = Field(
        default=30.0,
        ge=0,
        description="RONDO_GATEWAY_LOG_RETENTION_DAYS: log lines of jobs ended longer ago are "
        "deleted from the gateway's database (the full logs stay in the user's bucket); 0 keeps "
        "them forever",
    )
    s3_public_endpoint: str | None = Field(
        default=None,
        description="RONDO_S3_PUBLIC_ENDPOINT: the S3 URL users reach, put into presigned URLs "
        "(unset: RONDO_S3_ENDPOINT)",
    )
    storage_admin: Literal["seaweedfs", "garage"] = Field(
        default="seaweedfs",
        description="RONDO_STORAGE_ADMIN: how users' buckets and S3 keys are managed",
    )
    garage_admin_url: str = Field(
        default="http://127.0.0.1:3903", description="RONDO_GARAGE_ADMIN_URL"
    )
    garage_admin_token: str = Field(default="", description="RONDO_GARAGE_ADMIN_TOKEN")
    garage_admin_api: Literal["v1", "v2"] = Field(
        default="v2", description="RONDO_GARAGE_ADMIN_API: Garage 1.x speaks v1, 2.x v2"
    )

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the gateway's own database."""
        if self.gateway_database_url:
            return self.gateway_database_url
        return f"sqlite:///{self.data_dir.resolve() / 'gateway.db'}"

    @property
    def presign_endpoint(self) -> str:
        """The S3 endpoint presigned URLs name (a signature covers the host)."""
        return self.s3_public_endpoint or self.s3_endpoint
