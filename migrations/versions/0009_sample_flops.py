"""Each sample's FLOPs: one forward pass of its architecture at the data set's input size.

Beside its parameters (0007), the other size a size-aware reward can weigh and the samples
table sorts by. Rows written before this migration have none (NULL).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flops", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_column("flops")
