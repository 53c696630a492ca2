"""SessionService: sessions, their routing and messages, conversations and activities."""

from __future__ import annotations

from typing import Protocol

import grpc
from google.protobuf.json_format import MessageToDict

from cim.v1 import session_service_pb2 as pb
from cim.v1 import session_service_pb2_grpc as pb_grpc
from server.api.context import tenant_of
from server.api.convert import cim_from_proto, session_state_from_proto, session_to_proto
from server.api.session_views import (
    activity_to_proto,
    conversation_to_proto,
    session_item_to_proto,
)
from server.domain.activities import ROOT, Activity, ActivityInput, check_activity
from server.domain.cim import SessionItem
from server.domain.conversations import Conversation
from server.domain.errors import FieldViolation, invalid
from server.domain.models import Page, Session, SessionState
from server.domain.paging import ACTIVITIES, SESSION_MESSAGES, SESSIONS, PageRequest
from server.domain.routing import RouteChange


class SessionStore(Protocol):
    async def get_session(self, tenant_id: str, session_id: str) -> Session: ...

    async def list_sessions(
        self,
        tenant_id: str,
        *,
        page: PageRequest,
        contact_id: str = "",
        state: SessionState | None = None,
        queue: str = "",
    ) -> Page[Session]: ...

    async def transition_session(
        self, tenant_id: str, session_id: str, target: SessionState
    ) -> Session: ...

    async def route_session(self, tenant_id: str, change: RouteChange) -> Session: ...

    async def session_messages(
        self, tenant_id: str, session_id: str, *, page: PageRequest
    ) -> Page[SessionItem]: ...

    async def push_activity(self, tenant_id: str, activity: ActivityInput) -> Activity: ...

    async def list_activities(
        self,
        tenant_id: str,
        *,
        page: PageRequest,
        customer_id: str = "",
        conversation_id: str = "",
    ) -> Page[Activity]: ...

    async def get_conversation(
        self, tenant_id: str, conversation_id: str
    ) -> tuple[Conversation, list[Session]]: ...


class SessionServicer(pb_grpc.SessionServiceServicer):
    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSessionResponse:
        session = await self._store.get_session(tenant_of(context), request.session_id)
        return pb.GetSessionResponse(session=session_to_proto(session))

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        tenant = tenant_of(context)
        state = session_state_from_proto(request.state)
        wanted = SESSIONS.request(
            tenant,
            request.page_size,
            request.page_token,
            contact_id=request.contact_id,
            state=state,
            queue=request.queue,
        )
        page = await self._store.list_sessions(
            tenant, page=wanted, contact_id=request.contact_id, state=state, queue=request.queue
        )
        return pb.ListSessionsResponse(
            results=[session_to_proto(s) for s in page.items], next_page_token=page.next_token
        )

    async def CloseSession(
        self, request: pb.CloseSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CloseSessionResponse:
        session = await self._store.transition_session(
            tenant_of(context), _session_id(request.session_id), SessionState.CLOSED
        )
        return pb.CloseSessionResponse(session=session_to_proto(session))

    async def ResolveSession(
        self, request: pb.ResolveSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveSessionResponse:
        session = await self._store.transition_session(
            tenant_of(context), _session_id(request.session_id), SessionState.RESOLVED
        )
        return pb.ResolveSessionResponse(session=session_to_proto(session))

    async def RouteSession(
        self, request: pb.RouteSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RouteSessionResponse:
        change = RouteChange(
            session_id=request.session_id,
            queue=request.queue,
            agent=request.agent,
            team=request.team,
            skills=tuple(request.skills),
            params=MessageToDict(request.params),
        )
        session = await self._store.route_session(tenant_of(context), change)
        return pb.RouteSessionResponse(session=session_to_proto(session))

    async def ListSessionMessages(
        self, request: pb.ListSessionMessagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionMessagesResponse:
        tenant = tenant_of(context)
        session_id = _session_id(request.session_id)
        wanted = SESSION_MESSAGES.request(
            tenant, request.page_size, request.page_token, session_id=session_id
        )
        page = await self._store.session_messages(tenant, session_id, page=wanted)
        return pb.ListSessionMessagesResponse(
            results=[session_item_to_proto(i) for i in page.items],
            next_page_token=page.next_token,
        )

    async def PushActivity(
        self, request: pb.PushActivityRequest, context: grpc.aio.ServicerContext
    ) -> pb.PushActivityResponse:
        activity = check_activity(cim_from_proto(request.activity, ROOT))
        stored = await self._store.push_activity(tenant_of(context), activity)
        return pb.PushActivityResponse(activity=activity_to_proto(stored))

    async def ListActivities(
        self, request: pb.ListActivitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListActivitiesResponse:
        tenant = tenant_of(context)
        wanted = ACTIVITIES.request(
            tenant,
            request.page_size,
            request.page_token,
            customer_id=request.customer_id,
            conversation_id=request.conversation_id,
        )
        page = await self._store.list_activities(
            tenant,
            page=wanted,
            customer_id=request.customer_id,
            conversation_id=request.conversation_id,
        )
        return pb.ListActivitiesResponse(
            results=[activity_to_proto(a) for a in page.items], next_page_token=page.next_token
        )

    async def GetConversation(
        self, request: pb.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConversationResponse:
        conv, sessions = await self._store.get_conversation(
            tenant_of(context), request.conversation_id
        )
        return pb.GetConversationResponse(conversation=conversation_to_proto(conv, sessions))


def _session_id(value: str) -> str:
    if not value:
        raise invalid([FieldViolation("sessionId", "required")])
    return value
