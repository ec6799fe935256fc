"""runs: server generation and crash time

Revision ID: cbf8de343325
Revises: 7a83bf607e31
Create Date: 2026-11-25 18:33:05.492960
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cbf8de343325"
down_revision: str | None = "7a83bf607e31"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        # Runs stored before this revision had their first FL server.
        batch_op.add_column(
            sa.Column("server_generation", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("server_exited_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("server_error", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("server_error")
        batch_op.drop_column("server_exited_at")
        batch_op.drop_column("server_generation")
