"""Each sample's size: the parameters of its architecture as a stand-alone network.

The search page draws reward against size and sorts by it; a size-aware reward will weigh
it. Rows written before this migration have none (NULL).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("params", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_column("params")
