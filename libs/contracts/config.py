"""Settings every service reads from its environment (prefix `RONDO_`).

The same variables configure a service started by `rondo up`, a compose deployment, or a test.
"""

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rondo.contracts.subjects import STAGING_MAX_AGE_S


def split_server_urls(urls: str) -> list[str]:
    """'nats://a:4222, nats://b:4222' -> ['nats://a:4222', 'nats://b:4222']."""
    return [url.strip() for url in urls.split(",") if url.strip()]


def inbox_prefix(nats_user: str) -> str:
    """The reply-inbox prefix of a bus identity; `_INBOX` for an anonymous connection."""
    return f"_INBOX.{nats_user}" if nats_user else "_INBOX"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RONDO_", extra="ignore")

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="One NATS server, or a cluster's servers separated by commas",
    )
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)
    nats_staging_max_age_s: float = Field(
        default=STAGING_MAX_AGE_S,
        gt=0,
        le=30 * 24 * 3600.0,
        description="How long the staging object store keeps an object the artifacts service "
        "has not copied yet (it copies and deletes them as it reads their events)",
    )
    nats_user: str = Field(
        default="",
        description="This service's bus identity (`rondo up` makes one per service and agent); "
        "empty: connect without credentials (a server without authorization)",
    )
    nats_password: SecretStr = Field(
        default=SecretStr(""), description="The identity's password; only ever in the environment"
    )
    nats_tls_ca: Path | None = Field(
        default=None,
        description="PEM file of the CA that signed the NATS servers' certificates (compose: "
        "`tls://` URLs); unset: the system's trust store, and only for `tls://` URLs",
    )

    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_region: str = "garage"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    platform_bucket: str = Field(
        default="rondo-platform", description="Platform-private bucket: startup kits, staging"
    )

    data_dir: Path = Field(default=Path(".rondo"), description="Logs, spans, databases, work dirs")
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces endpoint; unset keeps spans in the data dir"
    )
    log_level: str = "INFO"

    consumer_retry_delay_s: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="First redelivery delay of an event whose handler failed; doubles per try",
    )
    consumer_max_retry_delay_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Longest redelivery delay of an event whose handler keeps failing",
    )

    @property
    def nats_inbox_prefix(self) -> str:
        """Where this identity's replies and pull deliveries arrive: `_INBOX.<user>`, the only
        inboxes the bus lets it subscribe to (no identity reads another's replies)."""
        return inbox_prefix(self.nats_user)

    @property
    def nats_servers(self) -> list[str]:
        """`nats_url` as the server list NATS clients take (they do not split a string)."""
        return split_server_urls(self.nats_url)

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def spans_dir(self) -> Path:
        return self.data_dir / "spans"
