"""SessionService."""

from __future__ import annotations

import grpc

from cim.v1 import session_service_pb2 as pb
from cim.v1 import session_service_pb2_grpc as pb_grpc
from server.api.context import tenant_of
from server.api.convert import session_state_from_proto, session_to_proto
from server.api.paging import page_args
from server.domain.models import SessionState
from server.storage.store import SqlStore


class SessionServicer(pb_grpc.SessionServiceServicer):
    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSessionResponse:
        session = await self._store.get_session(tenant_of(context), request.session_id)
        return pb.GetSessionResponse(session=session_to_proto(session))

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        size, token = page_args(request.page_size, request.page_token)
        page = await self._store.list_sessions(
            tenant_of(context),
            page_size=size,
            page_token=token,
            contact_id=request.contact_id,
            state=session_state_from_proto(request.state),
            queue=request.queue,
        )
        return pb.ListSessionsResponse(
            results=[session_to_proto(s) for s in page.items], next_page_token=page.next_token
        )

    async def CloseSession(
        self, request: pb.CloseSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CloseSessionResponse:
        session = await self._store.transition_session(
            tenant_of(context), request.session_id, SessionState.CLOSED
        )
        return pb.CloseSessionResponse(session=session_to_proto(session))

    async def ResolveSession(
        self, request: pb.ResolveSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveSessionResponse:
        session = await self._store.transition_session(
            tenant_of(context), request.session_id, SessionState.RESOLVED
        )
        return pb.ResolveSessionResponse(session=session_to_proto(session))
