"""messages keep count of the status queries asked for a receipt that never came

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("receipt_queries", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("receipt_query_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("receipt_query_at")
        batch_op.drop_column("receipt_queries")
