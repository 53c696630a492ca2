"""Row ids: UUIDv7, so ids made close in time sit close together in an index."""

from __future__ import annotations

import uuid

import pytest

from server.domain import models


def test_ids_are_version_7_uuids_and_unique() -> None:
    ids = [models.new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:100]:
        parsed = uuid.UUID(value)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == value


def test_ids_carry_their_millisecond_and_sort_by_it(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []
    for ms in (1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_999, 1_800_000_000_000):
        monkeypatch.setattr(models.time, "time_ns", lambda ms=ms: ms * 1_000_000 + 123_456)
        value = models.new_id()
        assert uuid.UUID(value).int >> 80 == ms
        made.append(value)
    assert made == sorted(made)
