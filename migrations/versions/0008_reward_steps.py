"""The reward curve as a per-step aggregate, written with the samples.

``GET /searches/{id}/rewards`` grouped every controller sample of the search on each read
(1.1-1.7 s for a 310,101-sample search); the store now adds each step's count, reward sum and
largest reward to ``reward_steps`` in the transaction that writes its samples. Existing
searches get theirs from their samples here.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reward_steps",
        sa.Column(
            "search_id",
            sa.String(length=32),
            sa.ForeignKey("searches.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("epoch", sa.Integer(), primary_key=True),
        sa.Column("step", sa.Integer(), primary_key=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("reward_sum", sa.Float(), nullable=False),
        sa.Column("max_reward", sa.Float(), nullable=False),
    )
    op.execute(
        "INSERT INTO reward_steps (search_id, epoch, step, samples, reward_sum, max_reward) "
        "SELECT search_id, epoch, step, COUNT(*), SUM(reward), MAX(reward) FROM samples "
        "WHERE phase = 'controller' GROUP BY search_id, epoch, step"
    )


def downgrade() -> None:
    op.drop_table("reward_steps")
