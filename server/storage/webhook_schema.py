"""Webhooks: the outbox, every POST of it, and where and how each tenant wants them."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, Table, Text

from server.storage.metadata import metadata

# The webhook outbox: rows are written in the same transaction as the change
# they report, then POSTed (and retried) by the webhook sender.
webhooks = Table(
    "webhooks",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant_id", String(64), nullable=False),
    # Rows with the same ordering key are delivered one at a time, oldest first.
    Column("ordering_key", String(128), nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("last_error", Text, nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    # The trace the reported change belongs to, copied from its message.
    Column("traceparent", String(64)),
    # TENANT (the tenant webhook) or NOTIFY_URL (a message's own receipts).
    Column("endpoint", String(16), nullable=False, default="TENANT", server_default="TENANT"),
    # The message the row reports on, if any: the timeline finds its webhooks by it.
    Column("message_id", String(64)),
    Column("last_status", Integer),
    Column("first_attempt_at", BigInteger),
    Column("last_attempt_at", BigInteger),
    Column("dead_at", BigInteger),
    # A redrive restarts the retry window from here rather than from created_at.
    Column("redriven_at", BigInteger),
    Index("ix_webhooks_due", "state", "next_attempt_at"),
    Index("ix_webhooks_order", "ordering_key", "id"),
    Index("ix_webhooks_dead", "tenant_id", "state", "dead_at", "id"),
    Index("ix_webhooks_message", "message_id"),
)

webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# Where a tenant wants its events POSTed, in the notification envelope.
tenant_webhooks = Table(
    "tenant_webhooks",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # A disabled tenant webhook gets no POSTs; its deliveries are dead-lettered.
    Column("disabled_at", BigInteger),
    Column("disabled_reason", Text, nullable=False, default="", server_default=""),
    # Set by the first failed POST after a success; cleared by the next success.
    Column("failing_since", BigInteger),
)

# Every POST of a webhook row, with the receiver's answer.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant_id", String(64), nullable=False),
    Column("webhook_id", BigInteger, nullable=False),
    Column("number", Integer, nullable=False),
    # 0 when no HTTP answer came (refused, timed out).
    Column("http_status", Integer, nullable=False),
    Column("error", Text, nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Index("ix_webhook_attempts_webhook", "webhook_id", "number"),
)
