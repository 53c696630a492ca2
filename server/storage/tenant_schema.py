"""Tenants and what they set up: apps and API keys, channels, global variables, templates."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, LargeBinary, String, Table, Text

from server.storage.metadata import metadata

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
