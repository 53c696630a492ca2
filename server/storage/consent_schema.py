"""The consent ledger's tables: current entries, their audit history, tenant settings."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, Table, Text

from server.storage.metadata import metadata

# One row per (tenant, channel type, address, scope): the state sends are checked against.
consents = Table(
    "consents",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("channel_type", String(32), primary_key=True),
    Column("address", String(320), primary_key=True),
    Column("scope", String(64), primary_key=True),
    # Stable, sortable id for paging.
    Column("id", String(36), nullable=False),
    Column("state", String(16), nullable=False),
    Column("source", String(32), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("inbound_message_id", String(36), nullable=False, default=""),
    Column("message_id", String(36), nullable=False, default=""),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_consents_page", "tenant_id", "created_at", "id"),
)

# Append-only: every statement of consent, changed state or not, is kept.
consent_history = Table(
    "consent_history",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant_id", String(64), nullable=False),
    Column("channel_type", String(32), nullable=False),
    Column("address", String(320), nullable=False),
    Column("scope", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("source", String(32), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("inbound_message_id", String(36), nullable=False, default=""),
    Column("message_id", String(36), nullable=False, default=""),
    Column("ts", BigInteger, nullable=False),
    Index("ix_consent_history_address", "tenant_id", "channel_type", "address", "id"),
)

consent_settings = Table(
    "consent_settings",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("opt_out_keywords", JSON, nullable=False),
    Column("opt_in_keywords", JSON, nullable=False),
    Column("help_keywords", JSON, nullable=False),
    Column("opt_out_reply", Text, nullable=False, default=""),
    Column("opt_in_reply", Text, nullable=False, default=""),
    Column("replies_disabled", Integer, nullable=False, default=0),
    Column("updated_at", BigInteger, nullable=False),
)
