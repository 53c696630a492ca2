"""attempt starts, so recovery can tell work at a provider from work never sent

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt_started_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("attempt_provider", sa.String(length=64), nullable=True))
    # Claims taken before this revision did not record their start: any of
    # them may be at a provider, so they count as started and wait out their lease.
    messages = sa.table(
        "messages",
        sa.column("dispatch_state", sa.String),
        sa.column("updated_at", sa.BigInteger),
        sa.column("attempt_started_at", sa.BigInteger),
    )
    op.execute(
        messages.update()
        .where(messages.c.dispatch_state == "CLAIMED")
        .values(attempt_started_at=messages.c.updated_at)
    )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("attempt_provider")
        batch_op.drop_column("attempt_started_at")
