"""The channels an evaluation's architecture was trained at, where not its space's.

``segnas evaluate`` on a size-aware search trains the unconstrained search's pick a second time
with fewer channels (the control "the unconstrained pick shrunk to the same size"): one
architecture, two networks. Rows written before this migration are at their space's channels
(NULL).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 18:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("evaluation_trainings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("channels", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("evaluation_trainings", schema=None) as batch_op:
        batch_op.drop_column("channels")
