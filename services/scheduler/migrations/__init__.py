"""The scheduler's schema migrations (Alembic), applied whenever the scheduler starts.

Write the next revision after changing a model: `python -m rondo.scheduler.migrations revision -m
"what changed"` (README.md, "Database migrations").
"""

from pathlib import Path

from rondo.contracts.migrations import Migrations
from rondo.scheduler.models import SchedulerModel

MIGRATIONS = Migrations(
    versions=Path(__file__).parent / "versions",
    version_table="alembic_version_scheduler",
    metadata=SchedulerModel.metadata,
)
