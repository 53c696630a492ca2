"""Every table, on one `metadata`. Every row carries its tenant; every query filters on it.

The tables live in modules by area (``message_schema``, ``conversation_schema``,
``webhook_schema``, ``tenant_schema``, ``customer_schema``, ``consent_schema``);
take a table from its module. Importing them here is what puts them all on
`metadata`, so whoever takes `metadata` from this module (Alembic's
autogenerate, a walk over every table) sees the whole schema.
"""

from __future__ import annotations

from server.storage import (  # noqa: F401
    consent_schema,
    conversation_schema,
    customer_schema,
    message_schema,
    tenant_schema,
    webhook_schema,
)
from server.storage.metadata import metadata

__all__ = ["metadata"]
