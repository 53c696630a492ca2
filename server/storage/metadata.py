"""The one `MetaData` every table joins.

It sits apart from the table modules so that each of them, and schema.py,
which imports them all, can take it without importing one another.
"""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
