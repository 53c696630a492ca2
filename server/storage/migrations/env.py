"""Alembic environment. Runs on the connection handed over by server.storage.migrate."""

from __future__ import annotations

from alembic import context

# Tables kept in their own modules join `metadata` when imported; autogenerate
# must see them all, or it would propose dropping them.
from server.storage import consent_schema  # noqa: F401
from server.storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
