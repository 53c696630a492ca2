"""Protos for contacts, conversations, session messages and activities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format

from cim.v1 import cim_message_pb2, inbound_pb2
from cim.v1 import session_service_pb2 as pb
from server.api.convert import session_to_proto, status_to_proto
from server.domain.activities import Activity
from server.domain.cim import SessionItem
from server.domain.contacts import Contact
from server.domain.conversations import Conversation
from server.domain.models import Session


def cim_to_proto(doc: Mapping[str, Any]) -> cim_message_pb2.CimMessage:
    """A stored CIM message; fields a later version added are skipped, not fatal."""
    return json_format.ParseDict(
        dict(doc), cim_message_pb2.CimMessage(), ignore_unknown_fields=True
    )


def session_item_to_proto(item: SessionItem) -> pb.SessionMessage:
    found = pb.SessionMessage(
        message=cim_to_proto(item.cim),
        queue=item.queue,
        agent=item.agent,
        create_time=item.created_at,
    )
    if item.status is not None:
        found.status = status_to_proto(item.status)
    return found


def activity_to_proto(a: Activity) -> pb.Activity:
    return pb.Activity(
        id=a.id,
        customer_id=a.customer_id,
        conversation_id=a.conversation_id,
        channel_session_id=a.channel_session_id,
        published=a.published,
        message=cim_to_proto(a.message),
        create_time=a.created_at,
    )


def conversation_to_proto(conv: Conversation, sessions: Sequence[Session]) -> pb.Conversation:
    return pb.Conversation(
        id=conv.id,
        state=pb.ConversationState.Value(f"CONVERSATION_STATE_{conv.state.value}"),
        channel_id=conv.channel_id,
        customer_id=conv.customer_id,
        participants=[
            pb.Participant(id=p.id, role=p.role, state=p.state) for p in conv.participants
        ],
        dialogs=[
            pb.Dialog(id=d.id, type=d.type, state=d.state, create_time=d.created_at)
            for d in conv.dialogs
        ],
        close_reason=conv.close_reason,
        sessions=[session_to_proto(s) for s in sessions],
        create_time=conv.created_at,
        update_time=conv.updated_at,
    )


def contact_to_proto(c: Contact) -> inbound_pb2.Contact:
    # Contacts from provider channels may carry types the public enum lacks (SANDBOX).
    known = f"CONTACT_TYPE_{c.contact_type}" in inbound_pb2.ContactType.keys()  # noqa: SIM118
    return inbound_pb2.Contact(
        contact_id=c.contact_id,
        contact_type=inbound_pb2.ContactType.Value(f"CONTACT_TYPE_{c.contact_type}")
        if known
        else inbound_pb2.CONTACT_TYPE_UNSPECIFIED,
        channel_id=c.channel_id,
        csid=c.csid,
        lane=c.lane,
        profile=inbound_pb2.ContactProfile(**c.profile),
        business_profile=inbound_pb2.BusinessProfile(
            email=c.business_profile.get("email", ""),
            name=c.business_profile.get("name", ""),
            phone=c.business_profile.get("phone", ""),
            profile_id=c.business_profile.get("profileId", ""),
        ),
        create_time=c.created_at,
        update_time=c.updated_at,
    )
