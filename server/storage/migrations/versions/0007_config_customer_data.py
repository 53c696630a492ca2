"""global vars, runtime channels, contact preferences, customer objects and events

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "global_vars",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        # "" for a tenant-wide value; a channel id for that channel's override.
        sa.Column("channel_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "channel_id", "key"),
    )
    op.create_table(
        "channels",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("channel_id", sa.String(length=128), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("channel_id"),
    )
    op.create_index("ix_channels_tenant", "channels", ["tenant_id"])
    op.create_table(
        "contact_prefs",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=256), nullable=False),
        sa.Column("lang", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "contact_id"),
    )
    op.create_table(
        "customer_objects",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=256), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("contact_id", sa.String(length=256), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("links", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "object_id"),
    )
    op.create_index("ix_customer_objects_contact", "customer_objects", ["tenant_id", "contact_id"])
    op.create_table(
        "customer_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("event_name", sa.String(length=128), nullable=False),
        sa.Column("contact_id", sa.String(length=256), nullable=False),
        sa.Column("links", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index(
        "ix_customer_events_contact", "customer_events", ["tenant_id", "contact_id", "seq"]
    )


def downgrade() -> None:
    op.drop_index("ix_customer_events_contact", table_name="customer_events")
    op.drop_table("customer_events")
    op.drop_index("ix_customer_objects_contact", table_name="customer_objects")
    op.drop_table("customer_objects")
    op.drop_table("contact_prefs")
    op.drop_index("ix_channels_tenant", table_name="channels")
    op.drop_table("channels")
    op.drop_table("global_vars")
