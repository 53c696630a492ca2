"""index messages by status and last change, for the receipt timeout sweep

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The sweep looks for SUBMITTED messages unchanged for a long time; without
    # this it would read the whole outbox every round.
    op.create_index("ix_messages_status_updated", "messages", ["status", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_status_updated", table_name="messages")
