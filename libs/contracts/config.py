"""Settings every service reads from its environment (prefix `RONDO_`).

The same variables configure a service started by `rondo up`, a compose deployment, or a test.
"""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def split_server_urls(urls: str) -> list[str]:
    """'nats://a:4222, nats://b:4222' -> ['nats://a:4222', 'nats://b:4222']."""
    return [url.strip() for url in urls.split(",") if url.strip()]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RONDO_", extra="ignore")

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        description="One NATS server, or a cluster's servers separated by commas",
    )
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)

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
