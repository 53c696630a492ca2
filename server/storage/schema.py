"""Tables. Every row carries its tenant; every query filters on it."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

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
    Index("ix_messages_dispatch", "dispatch_state", "priority", "due_at"),
    Index("ix_messages_tenant_created", "tenant_id", "created_at"),
    Index("ix_messages_provider", "channel_id", "provider_message_id"),
    Index("ix_messages_status_updated", "status", "updated_at"),
    Index("ix_messages_batch", "tenant_id", "batch_id"),
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

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("last_sequence", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# The event log. id is the tenant-wide cursor; sequence counts within a conversation.
events = Table(
    "events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant_id", String(64), nullable=False),
    Column("conversation_id", String(36), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("type", String(64), nullable=False),
    Column("message_id", String(64), nullable=False, default=""),
    Column("channel_id", String(128), nullable=False, default=""),
    # A destination or a contact id: as wide as the widest of them.
    Column("customer_id", String(320), nullable=False, default=""),
    Column("audience", String(32), nullable=False, default="ALL"),
    Column("payload", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_events_tenant_cursor", "tenant_id", "id"),
    Index("ux_events_conversation_sequence", "conversation_id", "sequence", unique=True),
    # Pruning by age reads only the expired rows, not the whole log.
    Index("ix_events_created", "created_at"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("contact_id", String(256), nullable=False),
    Column("channel_id", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("conversation_id", String(36), nullable=False),
    Column("queue", String(128), nullable=False, default=""),
    Column("agent", String(128), nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_sessions_tenant_created", "tenant_id", "created_at"),
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
    Index("ix_webhooks_due", "state", "next_attempt_at"),
    Index("ix_webhooks_order", "ordering_key", "id"),
)

webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

templates = Table(
    "templates",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("code", String(128), nullable=False),
    Column("lang", String(32), nullable=False),
    Column("category", String(64), nullable=False, default=""),
    Column("header", Text, nullable=False, default=""),
    Column("body", Text, nullable=False),
    Column("footer", Text, nullable=False, default=""),
    Column("buttons", JSON, nullable=False),
    # channel_id -> APPROVED / PENDING / REJECTED
    Column("approvals", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ux_templates_code_lang", "tenant_id", "code", "lang", unique=True),
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
    Index("ix_attempts_message", "message_id", "number"),
    Index("ix_attempts_provider", "channel_id", "provider_message_id"),
)

# The highest cursor removed by retention, per tenant: a subscriber resuming
# from below it has missed events and is told so instead of silently skipping.
retention_floors = Table(
    "retention_floors",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("cursor", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Where a tenant wants its events POSTed, in the notification envelope.
tenant_webhooks = Table(
    "tenant_webhooks",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)


# -- Inbound messages, sessions, contacts, conversations and activities --------

# Sessions gain their route, the customer's address, an inactivity clock and
# what closed them.
sessions.append_column(Column("team", String(128), nullable=False, default="", server_default=""))
sessions.append_column(Column("skills", JSON))
sessions.append_column(Column("params", JSON))
sessions.append_column(
    Column("routing_id", String(36), nullable=False, default="", server_default="")
)
sessions.append_column(
    Column("close_reason", String(64), nullable=False, default="", server_default="")
)
sessions.append_column(
    Column("address", String(320), nullable=False, default="", server_default="")
)
sessions.append_column(Column("last_activity_at", BigInteger))
sessions.append_column(Column("closed_at", BigInteger))
# "channel \x1f contact" while the session is open, NULL once closed: the unique
# index allows one open session per contact and channel, and NULLs never collide.
sessions.append_column(Column("open_key", String(512)))
Index("ux_sessions_open", sessions.c.tenant_id, sessions.c.open_key, unique=True)
Index("ix_sessions_activity", sessions.c.state, sessions.c.last_activity_at)
Index("ix_sessions_conversation", sessions.c.conversation_id, sessions.c.created_at)

contacts = Table(
    "contacts",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("contact_id", String(256), primary_key=True),
    Column("contact_type", String(32), nullable=False, default=""),
    Column("channel_id", String(128), nullable=False, default=""),
    Column("csid", String(128), nullable=False, default=""),
    Column("lane", String(320), nullable=False, default=""),
    Column("profile", JSON, nullable=False),
    Column("business_profile", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Customer messages. The unique channel message id makes receiving idempotent:
# a repeat loses the insert and changes nothing else.
inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("channel_id", String(128), nullable=False),
    Column("external_id", String(256), nullable=False),
    Column("session_id", String(36), nullable=False, default=""),
    Column("conversation_id", String(36), nullable=False),
    Column("contact_id", String(256), nullable=False),
    Column("type", String(32), nullable=False),
    Column("text", Text, nullable=False, default=""),
    # The route when the message arrived, so history shows where it went.
    Column("queue", String(128), nullable=False, default=""),
    Column("agent", String(128), nullable=False, default=""),
    Column("cim", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ux_inbound_external", "tenant_id", "channel_id", "external_id", unique=True),
    Index("ix_inbound_session", "session_id", "created_at"),
)

# Conversation state beside the event log's sequence counter (conversations).
conversation_states = Table(
    "conversation_states",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("channel_id", String(128), nullable=False),
    Column("customer_id", String(256), nullable=False),
    Column("address", String(320), nullable=False, default=""),
    Column("state", String(16), nullable=False),
    Column("close_reason", String(64), nullable=False, default=""),
    Column("participants", JSON, nullable=False),
    Column("dialogs", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_conversation_states_customer", "tenant_id", "customer_id"),
)

# Third-party activities: the history of every pushed activity. Those on an
# active conversation are also in the event log (published = 1).
activities = Table(
    "activities",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant_id", String(64), nullable=False),
    Column("activity_id", String(128), nullable=False),
    Column("customer_id", String(256), nullable=False, default=""),
    Column("conversation_id", String(36), nullable=False, default=""),
    Column("channel_session_id", String(36), nullable=False, default=""),
    Column("published", Integer, nullable=False, default=0),
    Column("message", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ux_activities_id", "tenant_id", "activity_id", unique=True),
    Index("ix_activities_customer", "tenant_id", "customer_id", "created_at"),
    Index("ix_activities_conversation", "tenant_id", "conversation_id", "created_at"),
)

# Who may call. A tenant owns apps; an app holds API keys. Only a SHA-256 of each
# secret is kept: the secret itself is shown once, when the key is created.
tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

apps = Table(
    "apps",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_apps_tenant", "tenant_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    # The public half, sent as x-api-id.
    Column("api_id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("app_id", String(64), nullable=False),
    Column("secret_sha256", LargeBinary(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    Index("ix_api_keys_app", "app_id"),
)

# $(name) values for substitutions; channel_id "" holds the tenant-wide value.
global_vars = Table(
    "global_vars",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("channel_id", String(128), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("updated_at", BigInteger, nullable=False),
)

# Channels created over the API, loaded at start alongside the configured ones.
channels = Table(
    "channels",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("channel_id", String(128), primary_key=True),
    Column("config", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_channels_tenant", "tenant_id"),
)

contact_prefs = Table(
    "contact_prefs",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("contact_id", String(256), primary_key=True),
    Column("lang", String(32), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Customer data pushed by the tenant; contact_id comes from a contact link.
customer_objects = Table(
    "customer_objects",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("object_id", String(256), primary_key=True),
    Column("type", String(128), nullable=False),
    Column("contact_id", String(256), nullable=False),
    Column("data", JSON, nullable=False),
    Column("links", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_customer_objects_contact", "tenant_id", "contact_id"),
)

customer_events = Table(
    "customer_events",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant_id", String(64), nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("event_name", String(128), nullable=False),
    Column("contact_id", String(256), nullable=False),
    Column("links", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_customer_events_contact", "tenant_id", "contact_id", "seq"),
)

# -- Operations: what a message's timeline and the webhook dead letters show ----

# The x-request-id of the call that accepted the message.
messages.append_column(Column("request_id", String(128)))
# How long the provider took to answer the attempt; NULL when not measured.
attempts.append_column(Column("latency_ms", Integer))
# TENANT (the tenant webhook) or NOTIFY_URL (a message's own receipts).
webhooks.append_column(
    Column("endpoint", String(16), nullable=False, default="TENANT", server_default="TENANT")
)
# The message the row reports on, if any: the timeline finds its webhooks by it.
webhooks.append_column(Column("message_id", String(64)))
webhooks.append_column(Column("last_status", Integer))
webhooks.append_column(Column("first_attempt_at", BigInteger))
webhooks.append_column(Column("last_attempt_at", BigInteger))
webhooks.append_column(Column("dead_at", BigInteger))
# A redrive restarts the retry window from here rather than from created_at.
webhooks.append_column(Column("redriven_at", BigInteger))
Index("ix_webhooks_dead", webhooks.c.tenant_id, webhooks.c.state, webhooks.c.dead_at, webhooks.c.id)
Index("ix_webhooks_message", webhooks.c.message_id)

# A disabled tenant webhook gets no POSTs; its deliveries are dead-lettered.
tenant_webhooks.append_column(Column("disabled_at", BigInteger))
tenant_webhooks.append_column(
    Column("disabled_reason", Text, nullable=False, default="", server_default="")
)
# Set by the first failed POST after a success; cleared by the next success.
tenant_webhooks.append_column(Column("failing_since", BigInteger))

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

# -- Receipts that never came: the provider is asked before a message is given up --

# How many times the provider said "still on its way" when asked.
messages.append_column(
    Column("receipt_queries", Integer, nullable=False, default=0, server_default="0")
)
# When the receipt sweep may look at the message next; NULL: once the receipt
# timeout has passed since its last change.
messages.append_column(Column("receipt_query_at", BigInteger))
# -- Deadline fallback -----------------------------------------------------------

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
