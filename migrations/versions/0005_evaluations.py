"""Evaluations of the search phase (``segnas evaluate``): the plan and its searches, the
architectures retrained per training seed, and their shared-weight scores per supernet; and
the number of candidates a search's result was the best of.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("candidates", sa.Integer(), nullable=True))
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("searches", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "evaluation_trainings",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column(
            "evaluation_id",
            sa.String(length=32),
            sa.ForeignKey("evaluations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("arch", sa.JSON(), nullable=False),
        sa.Column("arch_key", sa.String(length=400), nullable=False),
        sa.Column("train_seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("params", sa.BigInteger(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("mean_precision", sa.Float(), nullable=True),
        sa.Column("mean_recall", sa.Float(), nullable=True),
        sa.Column("miou", sa.Float(), nullable=True),
        sa.Column("miou_plus", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "evaluation_id", "arch_key", "train_seed", name="uq_evaluation_trainings_arch_seed"
        ),
    )
    op.create_table(
        "evaluation_scores",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column(
            "evaluation_id",
            sa.String(length=32),
            sa.ForeignKey("evaluations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "search_id",
            sa.String(length=32),
            sa.ForeignKey("searches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("arch", sa.JSON(), nullable=False),
        sa.Column("arch_key", sa.String(length=400), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "evaluation_id", "search_id", "arch_key", name="uq_evaluation_scores_search_arch"
        ),
    )


def downgrade() -> None:
    op.drop_table("evaluation_scores")
    op.drop_table("evaluation_trainings")
    op.drop_table("evaluations")
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_column("candidates")
