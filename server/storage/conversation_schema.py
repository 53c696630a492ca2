"""Conversations and what happens in them: events, sessions, customer messages, activities."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, Table, Text

from server.storage.metadata import metadata

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

# The highest cursor removed by retention, per tenant: a subscriber resuming
# from below it has missed events and is told so instead of silently skipping.
retention_floors = Table(
    "retention_floors",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("cursor", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
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
    # The session's route, the customer's address, an inactivity clock and what
    # closed it.
    Column("team", String(128), nullable=False, default="", server_default=""),
    Column("skills", JSON),
    Column("params", JSON),
    Column("routing_id", String(36), nullable=False, default="", server_default=""),
    Column("close_reason", String(64), nullable=False, default="", server_default=""),
    Column("address", String(320), nullable=False, default="", server_default=""),
    Column("last_activity_at", BigInteger),
    Column("closed_at", BigInteger),
    # "channel \x1f contact" while the session is open, NULL once closed: the unique
    # index allows one open session per contact and channel, and NULLs never collide.
    Column("open_key", String(512)),
    Index("ix_sessions_tenant_created", "tenant_id", "created_at"),
    Index("ux_sessions_open", "tenant_id", "open_key", unique=True),
    Index("ix_sessions_activity", "state", "last_activity_at"),
    Index("ix_sessions_conversation", "conversation_id", "created_at"),
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
