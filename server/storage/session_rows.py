"""Sessions, conversations, activities, and the inbound traffic that opens them."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain.activities import Activity, ActivityInput
from server.domain.cim import SessionItem
from server.domain.conversations import Conversation
from server.domain.errors import not_found
from server.domain.inbound import InboundBatch
from server.domain.models import Page, Session, SessionState
from server.domain.paging import PageRequest
from server.domain.routing import RouteChange
from server.storage import activities as acts
from server.storage import conversations, inbound, lifecycle
from server.storage import sessions as sess
from server.storage.inbound import ReceiveOutcome
from server.storage.writer import Writer


class SessionRows:
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self._engine = engine
        self._writer = writer

    async def receive_inbound(self, tenant_id: str, batch: InboundBatch) -> ReceiveOutcome:
        """A webhook payload or a provider's inbound messages, all or nothing."""
        return await self._writer.submit(lambda tx: inbound.receive(tx, tenant_id, batch))

    async def get_session(self, tenant_id: str, session_id: str) -> Session:
        async with self._engine.connect() as conn:
            return await sess.get(conn, tenant_id, session_id)

    async def list_sessions(
        self,
        tenant_id: str,
        *,
        page: PageRequest,
        contact_id: str = "",
        state: SessionState | None = None,
        queue: str = "",
    ) -> Page[Session]:
        async with self._engine.connect() as conn:
            return await sess.list_page(
                conn,
                tenant_id,
                page=page,
                contact_id=contact_id,
                state=state,
                queue=queue,
            )

    async def transition_session(
        self, tenant_id: str, session_id: str, target: SessionState
    ) -> Session:
        return await self._writer.submit(
            lambda tx: lifecycle.transition(tx, tenant_id, session_id, target)
        )

    async def route_session(self, tenant_id: str, change: RouteChange) -> Session:
        return await self._writer.submit(lambda tx: lifecycle.route(tx, tenant_id, change))

    async def close_inactive_sessions(self, timeout_ms: int) -> int:
        return await self._writer.submit(lambda tx: lifecycle.close_inactive(tx, timeout_ms))

    async def session_messages(
        self, tenant_id: str, session_id: str, *, page: PageRequest
    ) -> Page[SessionItem]:
        async with self._engine.connect() as conn:
            session = await sess.get(conn, tenant_id, session_id)
            return await inbound.session_page(conn, session, page)

    async def require_conversations(self, tenant_id: str, conversation_ids: Iterable[str]) -> None:
        """NOT_FOUND for the first id that names none of the tenant's conversations."""
        async with self._engine.connect() as conn:
            for conversation_id in conversation_ids:
                if not await conversations.known(conn, tenant_id, conversation_id):
                    raise not_found("conversation", conversation_id)

    async def get_conversation(
        self, tenant_id: str, conversation_id: str
    ) -> tuple[Conversation, list[Session]]:
        async with self._engine.connect() as conn:
            found = await conversations.load(conn, tenant_id, conversation_id)
            if found is None:
                raise not_found("conversation", conversation_id)
            return found, await sess.of_conversation(conn, tenant_id, conversation_id)

    async def push_activity(self, tenant_id: str, activity: ActivityInput) -> Activity:
        return await self._writer.submit(lambda tx: acts.push(tx, tenant_id, activity))

    async def list_activities(
        self,
        tenant_id: str,
        *,
        page: PageRequest,
        customer_id: str = "",
        conversation_id: str = "",
    ) -> Page[Activity]:
        async with self._engine.connect() as conn:
            return await acts.list_page(
                conn,
                tenant_id,
                page=page,
                customer_id=customer_id,
                conversation_id=conversation_id,
            )
