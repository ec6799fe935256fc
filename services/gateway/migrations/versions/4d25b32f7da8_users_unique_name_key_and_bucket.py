"""users: unique name_key and bucket

Revision ID: 4d25b32f7da8
Revises: 26b29ecd7e24
Create Date: 2026-12-04 15:42:24.445894
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4d25b32f7da8"
down_revision: str | None = "26b29ecd7e24"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _refuse_shared(column_sql: str, what: str) -> None:
    """Stop the upgrade, naming the users, when two rows share `column_sql`'s value: which
    user keeps a shared bucket (or name) is the operator's call, never this revision's."""
    rows = (
        op.get_bind()
        .execute(
            sa.text(
                f"SELECT {column_sql} AS shared, name FROM users WHERE {column_sql} IN "
                f"(SELECT {column_sql} FROM users GROUP BY {column_sql} HAVING COUNT(*) > 1)"
            )
        )
        .all()
    )
    if rows:
        shared: dict[str, list[str]] = {}
        for value, name in rows:
            shared.setdefault(value, []).append(name)
        listing = "; ".join(
            f"{value}: {', '.join(sorted(names))}" for value, names in sorted(shared.items())
        )
        raise RuntimeError(
            f"users share a {what} ({listing}); every user needs their own. Move all but one "
            f"of them to a {what} of their own in the gateway's database (table users), then "
            "start the gateway again"
        )


def upgrade() -> None:
    _refuse_shared("bucket", "bucket")
    _refuse_shared("lower(name)", "name (names are case-insensitive)")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_key", sa.String(), nullable=True))
    op.execute("UPDATE users SET name_key = lower(name)")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("name_key", existing_type=sa.String(), nullable=False)
        batch_op.create_unique_constraint("uq_users_bucket", ["bucket"])
        batch_op.create_unique_constraint("uq_users_name_key", ["name_key"])


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint("uq_users_name_key", type_="unique")
        batch_op.drop_constraint("uq_users_bucket", type_="unique")
        batch_op.drop_column("name_key")
