"""The caller's request budget, each channel's pacing, and the queue ahead of a new send."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from server.domain.delivery_fields import DEFAULT_PRIORITY
from server.domain.errors import not_found
from server.domain.models import Channel
from server.domain.quota import ChannelQuota, QueueAhead, Quota, RateBudget, estimated_wait_ms


class BudgetSource(Protocol):
    def budget(self, tenant: str) -> RateBudget: ...


class DispatchLoad(Protocol):
    def in_flight(self, channel_id: str) -> int: ...


class QueueSource(Protocol):
    async def queue_ahead(self, channel_ids: Sequence[str], priority: int) -> QueueAhead: ...


async def quota(
    tenant_id: str,
    channels: Mapping[str, Channel],
    *,
    budget: BudgetSource,
    queue: QueueSource,
    load: DispatchLoad,
    channel_id: str = "",
    priority: int = 0,
) -> Quota:
    """`channels` are those the tenant may send on; another tenant's are not found."""
    if channel_id and channel_id not in channels:
        raise not_found("channel", channel_id)
    chosen = (
        [channels[channel_id]]
        if channel_id
        else sorted(channels.values(), key=lambda c: c.channel_id)
    )
    counts = await queue.queue_ahead([c.channel_id for c in chosen], priority or DEFAULT_PRIORITY)
    return Quota(
        rate=budget.budget(tenant_id),
        channels=tuple(
            ChannelQuota(
                channel_id=c.channel_id,
                contact_type=c.contact_type,
                tps=c.tps,
                max_in_flight=c.max_in_flight,
                in_flight=load.in_flight(c.channel_id),
                queue_depth=counts.ahead.get(c.channel_id, 0),
                estimated_wait_ms=estimated_wait_ms(counts.ahead.get(c.channel_id, 0), c.tps),
                scheduled=counts.scheduled.get(c.channel_id, 0),
            )
            for c in chosen
        ),
    )
