"""Customers: contacts, their preferences, and the objects and events a tenant pushes."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, Table

from server.storage.metadata import metadata

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
