"""consent ledger: entries, their append-only history, and tenant keyword settings

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("channel_type", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("inbound_message_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "channel_type", "address", "scope"),
    )
    op.create_index("ix_consents_page", "consents", ["tenant_id", "created_at", "id"])
    op.create_table(
        "consent_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("channel_type", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("inbound_message_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_consent_history_address",
        "consent_history",
        ["tenant_id", "channel_type", "address", "id"],
    )
    op.create_table(
        "consent_settings",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("opt_out_keywords", sa.JSON(), nullable=False),
        sa.Column("opt_in_keywords", sa.JSON(), nullable=False),
        sa.Column("help_keywords", sa.JSON(), nullable=False),
        sa.Column("opt_out_reply", sa.Text(), nullable=False),
        sa.Column("opt_in_reply", sa.Text(), nullable=False),
        sa.Column("replies_disabled", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id"),
    )


def downgrade() -> None:
    op.drop_table("consent_settings")
    op.drop_index("ix_consent_history_address", table_name="consent_history")
    op.drop_table("consent_history")
    op.drop_index("ix_consents_page", table_name="consents")
    op.drop_table("consents")
