"""jobs: outputs written at

Revision ID: 26b29ecd7e24
Revises: e722aee5acd5
Create Date: 2026-11-25 22:01:57.687259
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "26b29ecd7e24"
down_revision: str | None = "e722aee5acd5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("outputs_written_at", sa.DateTime(timezone=True), nullable=True)
        )
    # Jobs that ended before this revision were never announced: their outputs are as final as
    # they will get, so clients must not wait for them.
    op.execute(
        "UPDATE jobs SET outputs_written_at = updated_at "
        "WHERE state IN ('FINISHED', 'FAILED', 'CANCELLED')"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("outputs_written_at")
