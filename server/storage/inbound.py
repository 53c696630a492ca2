"""Inbound messages as they enter the event log."""

from __future__ import annotations

from sqlalchemy import select

from server.domain.events import EventType, NewEvent
from server.domain.models import conversation_for
from server.domain.provider import InboundMessage
from server.storage import events as event_log
from server.storage.schema import events
from server.storage.writer import Tx


async def record(tx: Tx, tenant_id: str, channel_id: str, message: InboundMessage) -> bool:
    """Store an inbound message once; a provider re-sending it changes nothing."""
    conversation = conversation_for(tenant_id, channel_id, message.from_address)
    seen = (
        await tx.conn.execute(
            select(events.c.id).where(
                events.c.conversation_id == conversation,
                events.c.type == EventType.CONTENT.value,
                events.c.message_id == message.provider_message_id,
            )
        )
    ).first()
    if seen is not None:
        return False
    data: dict[str, object] = {
        "type": message.type,
        "from": message.from_address,
        "to": message.to_address,
        "mediaUrl": message.media_url,
        "mimeType": message.mime_type,
        "caption": message.caption,
        "contactName": message.contact_name,
    }
    if message.latitude is not None and message.longitude is not None:
        data.update(latitude=message.latitude, longitude=message.longitude)
    await event_log.append(
        tx,
        tenant_id,
        NewEvent(
            conversation_id=conversation,
            type=EventType.CONTENT,
            originator_id=message.from_address,
            originator_role="CONSUMER",
            message=message.text or message.caption,
            content_type=message.mime_type or "text/plain",
            message_id=message.provider_message_id,
            channel_id=channel_id,
            customer_id=message.from_address,
            data={k: v for k, v in data.items() if v not in ("", None)},
        ),
    )
    return True
