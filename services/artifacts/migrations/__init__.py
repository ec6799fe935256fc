"""The artifacts service's schema migrations (Alembic), applied whenever it starts.

Write the next revision after changing a model: `python -m rondo.artifacts.migrations revision -m
"what changed"` (README.md, "Database migrations").
"""

from pathlib import Path

from rondo.artifacts.models import ArtifactsTable
from rondo.contracts.migrations import Migrations

MIGRATIONS = Migrations(
    versions=Path(__file__).parent / "versions",
    version_table="alembic_version_artifacts",
    metadata=ArtifactsTable.metadata,
)
