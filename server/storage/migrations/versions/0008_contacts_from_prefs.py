"""contacts for every contact that only has a stored language

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_contacts = sa.table(
    "contacts",
    sa.column("tenant_id", sa.String),
    sa.column("contact_id", sa.String),
    sa.column("contact_type", sa.String),
    sa.column("channel_id", sa.String),
    sa.column("csid", sa.String),
    sa.column("lane", sa.String),
    sa.column("profile", sa.JSON),
    sa.column("business_profile", sa.JSON),
    sa.column("created_at", sa.BigInteger),
    sa.column("updated_at", sa.BigInteger),
)
_prefs = sa.table(
    "contact_prefs",
    sa.column("tenant_id", sa.String),
    sa.column("contact_id", sa.String),
    sa.column("updated_at", sa.BigInteger),
)


def upgrade() -> None:
    # Setting a language used to leave no contact behind; give those contacts the
    # row a language set now creates, dated when the language was set.
    # A typed bind, not a cast: SQLite would read CAST('{}' AS JSON) as the number 0.
    empty = sa.literal({}, sa.JSON)
    missing = ~sa.exists().where(
        _contacts.c.tenant_id == _prefs.c.tenant_id,
        _contacts.c.contact_id == _prefs.c.contact_id,
    )
    rows = sa.select(
        _prefs.c.tenant_id,
        _prefs.c.contact_id,
        sa.literal(""),
        sa.literal(""),
        sa.literal(""),
        sa.literal(""),
        empty,
        empty,
        _prefs.c.updated_at,
        _prefs.c.updated_at,
    ).where(missing)
    op.execute(
        _contacts.insert().from_select(
            [
                "tenant_id",
                "contact_id",
                "contact_type",
                "channel_id",
                "csid",
                "lane",
                "profile",
                "business_profile",
                "created_at",
                "updated_at",
            ],
            rows,
        )
    )


def downgrade() -> None:
    # The rows are indistinguishable from contacts created since; keep them.
    pass
