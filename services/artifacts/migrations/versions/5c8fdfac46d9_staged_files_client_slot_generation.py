"""staged files: client slot generation

Revision ID: 5c8fdfac46d9
Revises: a07122ae89f9
Create Date: 2026-11-25 21:01:01.784159
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c8fdfac46d9"
down_revision: str | None = "a07122ae89f9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("staged_files", schema=None) as batch_op:
        # Files recorded before this revision count as written by their slot's first worker.
        batch_op.add_column(
            sa.Column("generation", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("staged_files", schema=None) as batch_op:
        batch_op.drop_column("generation")
