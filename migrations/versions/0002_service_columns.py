"""Service columns: idempotency keys, the dispatcher lease, and the index for paging.

- ``idempotency_key``: a retried ``POST /searches`` with the same key finds its search (unique).
- ``worker``, ``heartbeat_at``, ``attempts``: which dispatcher holds the search, when it last
  said so, how many times one took it. A lease whose heartbeat is stale may be taken over.
- ``(created_at, id)``: the newest-first cursor of ``GET /searches``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 11:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("worker", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index("ix_searches_idempotency_key", ["idempotency_key"], unique=True)
        batch_op.create_index("ix_searches_created_at_id", ["created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.drop_index("ix_searches_created_at_id")
        batch_op.drop_index("ix_searches_idempotency_key")
        batch_op.drop_column("attempts")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("worker")
        batch_op.drop_column("idempotency_key")
