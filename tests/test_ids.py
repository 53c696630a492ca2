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


@pytest.mark.parametrize("count", [0, 1, 2, 1000])
def test_ids_made_together_are_the_same_kind_of_id(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ms = 1_700_000_000_123
    monkeypatch.setattr(models.time, "time_ns", lambda: ms * 1_000_000 + 5)
    ids = models.new_ids(count)
    assert len(ids) == count
    assert len(set(ids) | set(models.new_ids(count))) == 2 * count
    for value in ids:
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == value
        assert parsed.int >> 80 == ms
    # 74 random bits each: across a thousand ids every one of them varies.
    if count == 1000:
        varied = 0
        for value in ids:
            varied |= uuid.UUID(value).int ^ uuid.UUID(ids[0]).int
        assert varied == 0xFFF << 64 | (1 << 62) - 1  # rand_a and rand_b


@pytest.mark.parametrize(
    ("tenant", "channel", "address"),
    [
        ("default", "sms", "+447911123456"),
        ("t-1", "email", "Ünïcødé.user+tag@example.com"),
        ("", "", ""),
        ("tenant", "whatsapp", "+1" + "9" * 14),
        ("a\x1fb", "c", "d"),
    ],
)
def test_conversation_ids_are_the_uuid5_of_tenant_channel_and_address(
    tenant: str, channel: str, address: str
) -> None:
    name = f"{tenant}\x1f{channel}\x1f{address}"
    expected = str(uuid.uuid5(models._CONVERSATION_NS, name))
    assert models.conversation_for(tenant, channel, address) == expected


def test_conversation_ids_match_uuid5_across_many_numbers() -> None:
    for i in range(5_000):
        address = f"+4479{i * 7919:08d}"[:14]
        expected = str(uuid.uuid5(models._CONVERSATION_NS, f"default\x1fsms\x1f{address}"))
        assert models.conversation_for("default", "sms", address) == expected
