"""webhook dead letters, endpoint health, and what a message's timeline shows

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("latency_ms", sa.Integer(), nullable=True))
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("endpoint", sa.String(length=16), nullable=False, server_default="TENANT")
        )
        batch_op.add_column(sa.Column("message_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("last_status", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("first_attempt_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("last_attempt_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("dead_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("redriven_at", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_webhooks_dead", ["tenant_id", "state", "dead_at", "id"])
        batch_op.create_index("ix_webhooks_message", ["message_id"])
    with op.batch_alter_table("tenant_webhooks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disabled_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("disabled_reason", sa.Text(), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("failing_since", sa.BigInteger(), nullable=True))
    op.create_table(
        "webhook_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("webhook_id", sa.BigInteger(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_attempts_webhook", "webhook_attempts", ["webhook_id", "number"])

    # Rows already queued: a receipt for a message's notifyUrl has the message
    # id as its ordering key and that message's notifyUrl as its URL; every
    # other row went to a tenant webhook.
    webhooks = sa.table(
        "webhooks",
        sa.column("ordering_key", sa.String),
        sa.column("url", sa.Text),
        sa.column("state", sa.String),
        sa.column("created_at", sa.BigInteger),
        sa.column("endpoint", sa.String),
        sa.column("message_id", sa.String),
        sa.column("dead_at", sa.BigInteger),
    )
    messages = sa.table("messages", sa.column("id", sa.String), sa.column("notify_url", sa.Text))
    is_receipt = sa.exists().where(
        messages.c.id == webhooks.c.ordering_key, messages.c.notify_url == webhooks.c.url
    )
    op.execute(
        webhooks.update()
        .where(is_receipt)
        .values(endpoint="NOTIFY_URL", message_id=webhooks.c.ordering_key)
    )
    # When they died was not recorded; when they were queued is the closest known.
    op.execute(
        webhooks.update().where(webhooks.c.state == "DEAD").values(dead_at=webhooks.c.created_at)
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_attempts_webhook", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    with op.batch_alter_table("tenant_webhooks", schema=None) as batch_op:
        batch_op.drop_column("failing_since")
        batch_op.drop_column("disabled_reason")
        batch_op.drop_column("disabled_at")
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.drop_index("ix_webhooks_message")
        batch_op.drop_index("ix_webhooks_dead")
        batch_op.drop_column("redriven_at")
        batch_op.drop_column("dead_at")
        batch_op.drop_column("last_attempt_at")
        batch_op.drop_column("first_attempt_at")
        batch_op.drop_column("last_status")
        batch_op.drop_column("message_id")
        batch_op.drop_column("endpoint")
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_column("latency_ms")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("request_id")
