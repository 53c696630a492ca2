"""Messages a provider pushed to a channel, received as the channel's owner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from server.channels import ChannelRegistry
from server.domain.inbound import InboundBatch, from_provider
from server.domain.provider import InboundMessage
from server.domain.tenants import DEFAULT_TENANT


class Receiver(Protocol):
    async def receive(
        self, tenant: str, batch: InboundBatch, kinds: Mapping[str, str]
    ) -> object: ...


async def receive_from_provider(
    channels: ChannelRegistry,
    receiver: Receiver,
    channel_id: str,
    messages: Sequence[InboundMessage],
) -> None:
    """Provider messages take the inbound webhook's path (sessions, dedupe,
    consent keywords, events) for the tenant that owns the channel; the
    operator's channels belong to the default tenant."""
    entry = channels.get(channel_id)
    if entry is None:
        return
    kind = entry.channel.contact_type
    received = tuple(from_provider(channel_id, kind, m) for m in messages)
    await receiver.receive(
        entry.owner or DEFAULT_TENANT, InboundBatch(messages=received), {channel_id: kind}
    )
