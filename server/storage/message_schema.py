"""Outbound messages: the rows that are dispatched, their attempts, receipts and fallback legs."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, LargeBinary, String, Table, Text

from server.storage.metadata import metadata

# One row per destination: the unit that is dispatched, retried and receipted.
messages = Table(
    "messages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("channel_id", String(128), nullable=False),
    Column("destination", String(320), nullable=False),
    Column("type", String(32), nullable=False),
    Column("text", Text, nullable=False, default=""),
    Column("content", JSON, nullable=False),
    Column("conversation_id", String(36), nullable=False),
    Column("correlation_id", String(256), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("due_at", BigInteger, nullable=False),
    Column("expire_at", BigInteger),
    # Dispatch bookkeeping: PENDING rows are claimable once due_at has passed;
    # CLAIMED rows whose lease ran out are claimable again.
    Column("dispatch_state", String(16), nullable=False),
    Column("lease_until", BigInteger),
    Column("attempts", Integer, nullable=False, default=0),
    Column("provider_message_id", String(128)),
    Column("last_error", Text, nullable=False, default=""),
    Column("mask", Integer, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # Where and what to report: receipts go to notify_url only for the
    # statuses listed in requested_receipts, with callback_data echoed back.
    Column("notify_url", Text),
    Column("callback_data", Text),
    Column("requested_receipts", JSON),
    Column("segments", Integer, nullable=False, default=1, server_default="1"),
    # Set, in one commit per group, just before a claim's request goes to the
    # provider: after a crash, a claim with it set may be at the provider,
    # one without it certainly is not. Cleared when the message is claimed again.
    Column("attempt_started_at", BigInteger),
    Column("attempt_provider", String(64)),
    # W3C traceparent of the request that accepted the message: its dispatch,
    # receipts and webhooks are spans of that trace.
    Column("traceparent", String(64)),
    # The SendBatch call the row came from; NULL for a single send.
    Column("batch_id", String(36)),
    # The x-request-id of the call that accepted the message.
    Column("request_id", String(128)),
    # Receipts that never came: the provider is asked before a message is given
    # up. How many times the provider said "still on its way" when asked.
    Column("receipt_queries", Integer, nullable=False, default=0, server_default="0"),
    # When the receipt sweep may look at the message next; NULL: once the receipt
    # timeout has passed since its last change.
    Column("receipt_query_at", BigInteger),
    Index("ix_messages_tenant_created", "tenant_id", "created_at"),
    Index("ix_messages_provider", "channel_id", "provider_message_id"),
    Index("ix_messages_status_updated", "status", "updated_at"),
    Index("ix_messages_batch", "tenant_id", "batch_id"),
)
# In the claim's order (highest priority, then oldest due time), so a claim
# reads its `limit` rows off the index. In ascending priority order both
# engines sorted every waiting message on each claim, whose cost grew with the
# backlog: 1.2 ms at 1,000 waiting, 14.5 ms at 10,000 on SQLite.
Index(
    "ix_messages_dispatch",
    messages.c.dispatch_state,
    messages.c.priority.desc(),
    messages.c.due_at,
)

status_history = Table(
    "status_history",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("message_id", String(36), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("ts", BigInteger, nullable=False),
    Index("ix_status_history_message", "message_id", "id"),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_idempotency_created", "created_at"),
)

# Receipts can outrun the dispatcher's record of the provider id; they wait
# here and are applied when the id is recorded.
pending_receipts = Table(
    "pending_receipts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("channel_id", String(128), nullable=False),
    Column("provider_message_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("received_at", BigInteger, nullable=False),
    Index("ix_pending_receipts_provider", "channel_id", "provider_message_id"),
)

# Every provider attempt. Receipts are matched here by (channel, provider id),
# so a receipt from a fallback channel still finds its message.
attempts = Table(
    "attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("message_id", String(36), nullable=False),
    Column("number", Integer, nullable=False),
    Column("channel_id", String(128), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("provider_message_id", String(128)),
    Column("error_code", String(64), nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("segments", Integer, nullable=False, default=1),
    Column("ts", BigInteger, nullable=False),
    # How long the provider took to answer the attempt; NULL when not measured.
    Column("latency_ms", Integer),
    Index("ix_attempts_message", "message_id", "number"),
    Index("ix_attempts_provider", "channel_id", "provider_message_id"),
)

# One row per leg of a message's fallback chain (leg 1 is its own channel).
# due_at is when the next leg fires unless this one reaches success_status
# first: set when the leg's provider takes it, cleared when the leg settles.
# Replicas claim due legs by a conditional UPDATE on state, so a leg fires once.
fallback_legs = Table(
    "fallback_legs",
    metadata,
    Column("message_id", String(36), primary_key=True),
    Column("leg", Integer, primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("channel_id", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    # NULL on the last leg: nothing fires after it.
    Column("deadline_ms", BigInteger),
    Column("success_status", String(16), nullable=False),
    Column("fired_at", BigInteger),
    Column("left_at", BigInteger),
    Column("due_at", BigInteger),
    Column("settled_at", BigInteger),
    Column("late_at", BigInteger),
    Column("provider_message_id", String(128)),
    Index("ix_fallback_legs_due", "state", "due_at"),
)
