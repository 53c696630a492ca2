"""the dispatch index in the claim's order: priority descending, then due time

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A claim orders by priority DESC, due_at. With priority ascending in the
    # index, SQLite and PostgreSQL sorted every waiting message to take a few.
    op.drop_index("ix_messages_dispatch", table_name="messages")
    op.create_index(
        "ix_messages_dispatch", "messages", ["dispatch_state", sa.text("priority DESC"), "due_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_messages_dispatch", table_name="messages")
    op.create_index("ix_messages_dispatch", "messages", ["dispatch_state", "priority", "due_at"])
