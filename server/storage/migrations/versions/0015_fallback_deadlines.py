"""deadline fallback: the legs of a message's fallback chain and their deadlines

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fallback_legs",
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("leg", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("channel_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("deadline_ms", sa.BigInteger(), nullable=True),
        sa.Column("success_status", sa.String(length=16), nullable=False),
        sa.Column("fired_at", sa.BigInteger(), nullable=True),
        sa.Column("left_at", sa.BigInteger(), nullable=True),
        sa.Column("due_at", sa.BigInteger(), nullable=True),
        sa.Column("settled_at", sa.BigInteger(), nullable=True),
        sa.Column("late_at", sa.BigInteger(), nullable=True),
        sa.Column("provider_message_id", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("message_id", "leg"),
    )
    op.create_index("ix_fallback_legs_due", "fallback_legs", ["state", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_fallback_legs_due", table_name="fallback_legs")
    op.drop_table("fallback_legs")
