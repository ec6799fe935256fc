"""The gateway's schema migrations (Alembic), applied whenever the gateway starts.

Write the next revision after changing a model: `python -m rondo.gateway.migrations revision -m
"what changed"` (README.md, "Database migrations").
"""

from pathlib import Path

from rondo.contracts.migrations import Migrations
from rondo.gateway.models import GatewayModel

MIGRATIONS = Migrations(
    versions=Path(__file__).parent / "versions",
    version_table="alembic_version_gateway",
    metadata=GatewayModel.metadata,
)
