"""Gateway settings: the shared `RONDO_*` variables plus `RONDO_GATEWAY_*`."""

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

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the gateway's own database."""
        if self.gateway_database_url:
            return self.gateway_database_url
        return f"sqlite:///{self.data_dir.resolve() / 'gateway.db'}"
