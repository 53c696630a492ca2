"""sessions, contacts, inbound messages, conversation states and activities

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "activities",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("activity_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("channel_session_id", sa.String(length=36), nullable=False),
        sa.Column("published", sa.Integer(), nullable=False),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.create_index(
            "ix_activities_conversation",
            ["tenant_id", "conversation_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_activities_customer", ["tenant_id", "customer_id", "created_at"], unique=False
        )
        batch_op.create_index("ux_activities_id", ["tenant_id", "activity_id"], unique=True)

    op.create_table(
        "contacts",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=256), nullable=False),
        sa.Column("contact_type", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.String(length=128), nullable=False),
        sa.Column("csid", sa.String(length=128), nullable=False),
        sa.Column("lane", sa.String(length=320), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("business_profile", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "contact_id"),
    )
    op.create_table(
        "conversation_states",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("channel_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("close_reason", sa.String(length=64), nullable=False),
        sa.Column("participants", sa.JSON(), nullable=False),
        sa.Column("dialogs", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("conversation_states", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversation_states_customer", ["tenant_id", "customer_id"], unique=False
        )

    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("channel_id", sa.String(length=128), nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("contact_id", sa.String(length=256), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("queue", sa.String(length=128), nullable=False),
        sa.Column("agent", sa.String(length=128), nullable=False),
        sa.Column("cim", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.create_index("ix_inbound_session", ["session_id", "created_at"], unique=False)
        batch_op.create_index(
            "ux_inbound_external", ["tenant_id", "channel_id", "external_id"], unique=True
        )

    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("team", sa.String(length=128), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("skills", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("routing_id", sa.String(length=36), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("close_reason", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("address", sa.String(length=320), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("last_activity_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("closed_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("open_key", sa.String(length=512), nullable=True))
        batch_op.create_index("ix_sessions_activity", ["state", "last_activity_at"], unique=False)
        batch_op.create_index(
            "ix_sessions_conversation", ["conversation_id", "created_at"], unique=False
        )
        batch_op.create_index("ux_sessions_open", ["tenant_id", "open_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ux_sessions_open")
        batch_op.drop_index("ix_sessions_conversation")
        batch_op.drop_index("ix_sessions_activity")
        batch_op.drop_column("open_key")
        batch_op.drop_column("closed_at")
        batch_op.drop_column("last_activity_at")
        batch_op.drop_column("address")
        batch_op.drop_column("close_reason")
        batch_op.drop_column("routing_id")
        batch_op.drop_column("params")
        batch_op.drop_column("skills")
        batch_op.drop_column("team")

    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.drop_index("ux_inbound_external")
        batch_op.drop_index("ix_inbound_session")

    op.drop_table("inbound_messages")
    with op.batch_alter_table("conversation_states", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_states_customer")

    op.drop_table("conversation_states")
    op.drop_table("contacts")
    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.drop_index("ux_activities_id")
        batch_op.drop_index("ix_activities_customer")
        batch_op.drop_index("ix_activities_conversation")

    op.drop_table("activities")
