"""Times in the public API: ISO 8601 or an epoch number, to milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_instant(text: str) -> int:
    value = text.strip()
    if len(value) > 40:
        raise ValueError("not a time")
    if value.isdigit():
        number = int(value)
        # Epoch values this large are milliseconds already.
        return number if number >= 10**12 else number * 1000
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)
