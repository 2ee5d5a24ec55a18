"""Accounts: users, their API tokens (hashes only), and an owner for every search.

The searches made before this migration belong to the admin account it creates, ``admin``
(``storage.models.LOCAL_ADMIN``), which has no token until ``segnas token create --user
admin``. Idempotency keys become the owner's: two users may use the same key.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 08:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

LOCAL_ADMIN = "admin"  # storage.models.LOCAL_ADMIN, spelled out: a migration is frozen in time


def upgrade() -> None:
    users = op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(length=64), nullable=False, unique=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column(
            "user_id",
            sa.Integer(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.bulk_insert(
        users, [{"name": LOCAL_ADMIN, "is_admin": True, "created_at": datetime.now(UTC)}]
    )
    admin_id = sa.select(users.c.id).where(users.c.name == LOCAL_ADMIN).scalar_subquery()

    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
    searches = sa.table("searches", sa.column("owner_id", sa.Integer()))
    op.execute(searches.update().values(owner_id=admin_id))
    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.alter_column("owner_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key("fk_searches_owner_id_users", "users", ["owner_id"], ["id"])
        batch_op.drop_index("ix_searches_idempotency_key")
        batch_op.create_unique_constraint(
            "uq_searches_owner_idempotency", ["owner_id", "idempotency_key"]
        )
        batch_op.create_index(
            "ix_searches_owner_created_at_id", ["owner_id", "created_at", "id"], unique=False
        )


def downgrade() -> None:
    # Keys were the owner's: where owners shared one, the oldest search keeps it.
    op.execute(
        "UPDATE searches SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL AND id "
        "NOT IN (SELECT MIN(id) FROM searches WHERE idempotency_key IS NOT NULL "
        "GROUP BY idempotency_key)"
    )
    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.drop_index("ix_searches_owner_created_at_id")
        batch_op.drop_constraint("uq_searches_owner_idempotency", type_="unique")
        batch_op.create_index("ix_searches_idempotency_key", ["idempotency_key"], unique=True)
        batch_op.drop_constraint("fk_searches_owner_id_users", type_="foreignkey")
        batch_op.drop_column("owner_id")
    op.drop_index("ix_api_tokens_user_id", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
