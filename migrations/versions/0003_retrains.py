"""Retrains: architectures of a search trained from scratch and tested (``segnas retrain``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "retrains",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column(
            "search_id",
            sa.String(length=32),
            sa.ForeignKey("searches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("source", sa.String(length=12), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("arch", sa.JSON(), nullable=False),
        sa.Column("arch_key", sa.String(length=400), nullable=False),
        sa.Column("shared_score", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("params", sa.BigInteger(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("mean_precision", sa.Float(), nullable=True),
        sa.Column("mean_recall", sa.Float(), nullable=True),
        sa.Column("miou", sa.Float(), nullable=True),
        sa.Column("miou_plus", sa.Float(), nullable=True),
        sa.Column("val", sa.JSON(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("weights_path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("search_id", "source", "arch_key", name="uq_retrains_search_arch"),
    )


def downgrade() -> None:
    op.drop_table("retrains")
