"""events.customer_id holds any address or contact id, as the columns it is copied from

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # It takes a message's destination (320) or a contact id (256); at 128 a
    # long email address failed the send on PostgreSQL.
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.alter_column(
            "customer_id",
            existing_type=sa.String(length=128),
            type_=sa.String(length=320),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.alter_column(
            "customer_id",
            existing_type=sa.String(length=320),
            type_=sa.String(length=128),
            existing_nullable=False,
        )
