"""SqlStore: the one storage object the rest of the server talks to."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from server.domain.activities import Activity, ActivityInput
from server.domain.batch import Template
from server.domain.cim import SessionItem
from server.domain.contacts import Contact, ContactInfo
from server.domain.conversations import Conversation
from server.domain.errors import not_found
from server.domain.events import NewEvent, StoredEvent
from server.domain.inbound import InboundBatch
from server.domain.models import (
    Delivery,
    OutboundDraft,
    OutboundMessage,
    Page,
    Receipt,
    Session,
    SessionState,
)
from server.domain.paging import PageRequest
from server.domain.provider import Accepted, AttemptRecord
from server.domain.routing import RouteChange
from server.domain.status import DeliveryStatus
from server.storage import activities as acts
from server.storage import attempts as attempt_log
from server.storage import auth as keys
from server.storage import (
    contacts,
    conversations,
    fallback,
    inbound,
    lifecycle,
    migrate,
    receipt_timeouts,
    receipts,
    stats,
)
from server.storage import events as event_log
from server.storage import messages as msgs
from server.storage import sessions as sess
from server.storage import templates as tmpl
from server.storage import webhooks as hooks
from server.storage.coalesce import Coalesced
from server.storage.config_store import ConfigStoreMixin
from server.storage.consent_store import ConsentStoreMixin
from server.storage.db import (
    PG_COMMAND_TIMEOUT_S,
    PG_CONNECT_TIMEOUT_S,
    is_sqlite,
    make_engine,
)
from server.storage.fallback_store import FallbackStoreMixin
from server.storage.inbound import ReceiveOutcome
from server.storage.messages import AcceptResult, IdempotencyKey
from server.storage.outbox_store import OutboxStoreMixin
from server.storage.stats import OutboxStats
from server.storage.webhook_store import WebhookStoreMixin
from server.storage.writer import CommitObserver, Tx, Writer, now_ms


class SqlStore(
    ConfigStoreMixin, WebhookStoreMixin, FallbackStoreMixin, OutboxStoreMixin, ConsentStoreMixin
):
    def __init__(self, engine: AsyncEngine, writer: Writer) -> None:
        self.engine = engine
        self._writer = writer
        # Dispatch outcomes arrive one by one; those waiting together are written together.
        self._submitted = Coalesced(writer, receipts.submitted_many, receipts.submitted_one)
        self._receipts = Coalesced(writer, receipts.apply_many, receipts.apply_one)
        # Sends starting together record their starts in one commit, not one each.
        self._starts = Coalesced(writer, msgs.start_many, msgs.start_one)
        self._claimed_before = False

    @classmethod
    async def open(
        cls,
        url: str,
        publish: Callable[[Sequence[StoredEvent]], None],
        *,
        run_migrations: bool = True,
        clock: Callable[[], int] = now_ms,
        observer: CommitObserver | None = None,
        connect_timeout: float = PG_CONNECT_TIMEOUT_S,
        command_timeout: float | None = PG_COMMAND_TIMEOUT_S,
        sqlite_synchronous: str = "NORMAL",
    ) -> SqlStore:
        engine = make_engine(
            url,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            sqlite_synchronous=sqlite_synchronous,
        )
        if run_migrations and is_sqlite(url):
            await migrate.upgrade(engine)  # the same engine: an in-memory database is per engine
        elif run_migrations:
            # A migration may rewrite a large table: no statement bound for it.
            migrating = make_engine(url, connect_timeout=connect_timeout, command_timeout=None)
            try:
                await migrate.upgrade(migrating)
            finally:
                await migrating.dispose()
        # SQLite has one writer anyway; PostgreSQL gains from a few in parallel.
        workers = 1 if is_sqlite(url) else 4
        writer = Writer(engine, publish, workers=workers, clock=clock, observer=observer)
        writer.start()
        return cls(engine, writer)

    async def ping(self) -> None:
        """One round trip to the database; raises while it cannot be reached."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self._writer.close()
        await self.engine.dispose()

    # -- outbound -----------------------------------------------------------
    async def accept(
        self,
        tenant_id: str,
        drafts: Sequence[OutboundDraft],
        idem: IdempotencyKey | None,
        render: Callable[[Sequence[OutboundMessage]], bytes],
        traceparent: str = "",
    ) -> AcceptResult:
        """Store the drafts; `traceparent` is the trace their later work continues."""

        async def work(tx: Tx) -> AcceptResult:
            result = await msgs.accept(tx, tenant_id, drafts, idem, render, traceparent)
            if result.replay is None and any(d.fallback for d in drafts):
                await fallback.plan(tx, result.messages, drafts)
            return result

        return await self._writer.submit(work)

    async def outbox_stats(self) -> OutboxStats:
        """The outbox's backlog per channel and the webhook dead letters, for /metrics."""
        async with self.engine.connect() as conn:
            return await stats.outbox(conn, self._writer.now())

    async def get_message(self, tenant_id: str, message_id: str) -> OutboundMessage:
        async with self.engine.connect() as conn:
            return await msgs.get(conn, tenant_id, message_id)

    async def list_messages(
        self,
        tenant_id: str,
        *,
        page: PageRequest,
        status: DeliveryStatus | None = None,
        channel_id: str = "",
        correlation_id: str = "",
    ) -> Page[OutboundMessage]:
        async with self.engine.connect() as conn:
            return await msgs.list_page(
                conn,
                tenant_id,
                page=page,
                status=status,
                channel_id=channel_id,
                correlation_id=correlation_id,
            )

    # -- dispatch -----------------------------------------------------------
    async def claim_due(
        self, limit: int, lease_ms: int, channels: Sequence[str] | None = None
    ) -> list[Delivery]:
        """Claim due work under a lease.

        The first claim after the store opens first gives back every claim
        that never reached a provider: those a killed process left need not
        wait out their lease, as the provider never saw them.
        """
        if self._claimed_before:
            return await self._writer.submit(
                lambda tx: msgs.claim_due(tx, limit, lease_ms, channels)
            )

        async def recover_then_claim(tx: Tx) -> list[Delivery]:
            await msgs.release_unstarted(tx)
            return await msgs.claim_due(tx, limit, lease_ms, channels)

        claimed = await self._writer.submit(recover_then_claim)
        self._claimed_before = True
        return claimed

    async def start_attempt(self, delivery: Delivery, provider: str) -> bool:
        """Durably record that a claim's request is about to go to the provider.

        False means the claim was taken over meanwhile, and the caller must not send.
        """
        return await self._starts((delivery, provider))

    async def release(self, message_id: str) -> None:
        """Give back a claim that will not be worked on, without counting an attempt."""
        await self._writer.submit(lambda tx: msgs.release(tx, message_id))

    async def release_many(self, message_ids: Sequence[str]) -> None:
        """release() for a whole surplus of a claim, in one write."""
        await self._writer.submit(lambda tx: msgs.release_many(tx, message_ids))

    async def mark_submitted(self, delivery: Delivery, accepted: Accepted, provider: str) -> None:
        await self._submitted((delivery, accepted, provider))

    async def reschedule(
        self, message_id: str, due_at: int, reason: str, failed: AttemptRecord | None = None
    ) -> None:
        async def work(tx: Tx) -> None:
            if failed is not None:
                await attempt_log.record(tx, message_id, [failed])
            await msgs.set_status(
                tx,
                message_id,
                DeliveryStatus.ACCEPTED,
                reason=reason,
                dispatch_state=msgs.PENDING,
                due_at=due_at,
            )

        await self._writer.submit(work)

    async def finish(
        self,
        message_id: str,
        status: DeliveryStatus,
        reason: str,
        failed: AttemptRecord | None = None,
    ) -> None:
        async def work(tx: Tx) -> None:
            if failed is not None:
                await attempt_log.record(tx, message_id, [failed])
            # A refused fallback leg is not the message's end: the next leg is queued.
            if status is DeliveryStatus.FAILED and await fallback.refused(tx, message_id, reason):
                return
            await msgs.set_status(tx, message_id, status, reason=reason)

        await self._writer.submit(work)

    async def prune(self) -> None:
        """Drop what has outlived its purpose: expired idempotency keys, old delivered webhooks."""

        async def work(tx: Tx) -> None:
            await msgs.prune(tx)
            await hooks.prune(tx)

        await self._writer.submit(work)

    async def take_unconfirmed(
        self, rules: receipt_timeouts.ReceiptRules, askable: Collection[str], limit: int
    ) -> receipt_timeouts.Taken:
        return await self._writer.submit(
            lambda tx: receipt_timeouts.take(tx, rules, askable, limit)
        )

    async def still_on_its_way(
        self, message_id: str, said: str, rules: receipt_timeouts.ReceiptRules
    ) -> bool:
        return await self._writer.submit(
            lambda tx: receipt_timeouts.still_on_its_way(tx, message_id, said, rules)
        )

    async def reconcile_receipts(self) -> int:
        return await self._writer.submit(lambda tx: receipts.reconcile(tx))

    async def apply_receipt(self, channel_id: str, receipt: Receipt) -> receipts.Applied:
        return await self._receipts((channel_id, receipt))

    # -- events -------------------------------------------------------------
    async def events_after(self, tenant_id: str, cursor: int, limit: int) -> list[StoredEvent]:
        async with self.engine.connect() as conn:
            return await event_log.read_after(conn, tenant_id, cursor, limit)

    async def append_events(self, tenant_id: str, new: Sequence[NewEvent]) -> list[StoredEvent]:
        async def work(tx: Tx) -> list[StoredEvent]:
            return [await event_log.append(tx, tenant_id, e) for e in new]

        return await self._writer.submit(work)

    async def set_tenant_webhook(self, tenant_id: str, url: str) -> str:
        """Store the tenant's webhook URL; returns the tenant's signing secret."""

        async def work(tx: Tx) -> str:
            await event_log.set_tenant_webhook(tx, tenant_id, url)
            return await hooks.secret_for(tx, tenant_id)

        return await self._writer.submit(work)

    async def retention_floor(self, tenant_id: str) -> int:
        async with self.engine.connect() as conn:
            return await event_log.retention_floor(conn, tenant_id)

    async def prune_events(self, retention_ms: int) -> int:
        return await self._writer.submit(lambda tx: event_log.prune(tx, retention_ms))

    async def oldest_cursor(self, tenant_id: str) -> int | None:
        async with self.engine.connect() as conn:
            return await event_log.oldest_cursor(conn, tenant_id)

    async def newest_cursor(self, tenant_id: str) -> int:
        async with self.engine.connect() as conn:
            return await event_log.newest_cursor(conn, tenant_id)

    # -- templates ----------------------------------------------------------
    async def find_template(
        self, tenant_id: str, *, template_id: str = "", code: str = "", lang: str = ""
    ) -> Template | None:
        async with self.engine.connect() as conn:
            return await tmpl.find(conn, tenant_id, template_id=template_id, code=code, lang=lang)

    async def create_template(self, tenant_id: str, **fields: Any) -> Template:
        return await self._writer.submit(lambda tx: tmpl.create(tx, tenant_id, **fields))

    # -- sessions -----------------------------------------------------------
    async def get_session(self, tenant_id: str, session_id: str) -> Session:
        async with self.engine.connect() as conn:
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
        async with self.engine.connect() as conn:
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

    # -- inbound, routing, conversations and activities ----------------------
    async def receive_inbound(self, tenant_id: str, batch: InboundBatch) -> ReceiveOutcome:
        """A webhook payload or a provider's inbound messages, all or nothing."""
        return await self._writer.submit(lambda tx: inbound.receive(tx, tenant_id, batch))

    async def update_contact(self, tenant_id: str, info: ContactInfo) -> Contact:
        return await self._writer.submit(lambda tx: contacts.upsert(tx, tenant_id, info))

    async def get_contact(self, tenant_id: str, contact_id: str) -> Contact:
        async with self.engine.connect() as conn:
            return await contacts.get(conn, tenant_id, contact_id)

    async def route_session(self, tenant_id: str, change: RouteChange) -> Session:
        return await self._writer.submit(lambda tx: lifecycle.route(tx, tenant_id, change))

    async def close_inactive_sessions(self, timeout_ms: int) -> int:
        return await self._writer.submit(lambda tx: lifecycle.close_inactive(tx, timeout_ms))

    async def session_messages(
        self, tenant_id: str, session_id: str, *, page: PageRequest
    ) -> Page[SessionItem]:
        async with self.engine.connect() as conn:
            session = await sess.get(conn, tenant_id, session_id)
            return await inbound.session_page(conn, session, page)

    async def require_conversations(self, tenant_id: str, conversation_ids: Iterable[str]) -> None:
        """NOT_FOUND for the first id that names none of the tenant's conversations."""
        async with self.engine.connect() as conn:
            for conversation_id in conversation_ids:
                if not await conversations.known(conn, tenant_id, conversation_id):
                    raise not_found("conversation", conversation_id)

    async def get_conversation(
        self, tenant_id: str, conversation_id: str
    ) -> tuple[Conversation, list[Session]]:
        async with self.engine.connect() as conn:
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
        async with self.engine.connect() as conn:
            return await acts.list_page(
                conn,
                tenant_id,
                page=page,
                customer_id=customer_id,
                conversation_id=conversation_id,
            )

    # -- webhooks -----------------------------------------------------------
    async def webhook_secret(self, tenant_id: str) -> str:
        # Get-or-create writes, so it goes through the writer even as a "read".
        return await self._writer.submit(lambda tx: hooks.secret_for(tx, tenant_id))

    async def enqueue_webhook(
        self, tenant_id: str, ordering_key: str, url: str, payload: hooks.Payload
    ) -> int:
        return await self._writer.submit(
            lambda tx: hooks.enqueue(tx, tenant_id, ordering_key, url, payload)
        )

    async def claim_webhooks(self, limit: int, lease_ms: int) -> list[hooks.WebhookJob]:
        # The sender looks after every commit, and most commits enqueue no
        # webhook: finding that out takes a read, not a turn of the writer.
        async with self.engine.connect() as conn:
            if not await hooks.any_due(conn, self._writer.now()):
                return []
        return await self._writer.submit(lambda tx: hooks.claim_due(tx, limit, lease_ms))

    async def webhook_done(self, webhook_id: int) -> None:
        await self._writer.submit(lambda tx: hooks.mark_done(tx, webhook_id))

    async def webhook_retry(self, webhook_id: int, next_at: int, error: str) -> None:
        await self._writer.submit(lambda tx: hooks.mark_retry(tx, webhook_id, next_at, error))

    async def webhook_dead(self, webhook_id: int, error: str) -> None:
        await self._writer.submit(lambda tx: hooks.mark_dead(tx, webhook_id, error))

    async def dead_webhooks(self, tenant_id: str) -> list[hooks.DeadWebhook]:
        async with self.engine.connect() as conn:
            return await hooks.list_dead(conn, tenant_id)

    # -- tenants and API keys --------------------------------------------------
    async def create_tenant(self, tenant_id: str, name: str = "") -> None:
        await self._writer.submit(lambda tx: keys.create_tenant(tx, tenant_id, name))

    async def count_tenants(self) -> int:
        async with self.engine.connect() as conn:
            return await keys.count_tenants(conn)

    async def create_api_key(self, tenant_id: str, app_id: str = "") -> keys.NewKey:
        return await self._writer.submit(
            lambda tx: keys.create_key(tx, tenant_id, app_id or tenant_id)
        )

    async def ensure_api_key(self, tenant_id: str, api_id: str, secret: str) -> keys.EnsuredKey:
        return await self._writer.submit(lambda tx: keys.ensure_key(tx, tenant_id, api_id, secret))

    async def get_api_key(self, api_id: str) -> keys.KeyRecord | None:
        async with self.engine.connect() as conn:
            return await keys.get_key(conn, api_id)

    async def list_api_keys(self, tenant_id: str) -> list[keys.KeyRecord]:
        async with self.engine.connect() as conn:
            return await keys.list_keys(conn, tenant_id)

    async def revoke_api_key(self, api_id: str) -> bool:
        return await self._writer.submit(lambda tx: keys.revoke_key(tx, api_id))

    async def ensure_app(self, tenant_id: str, app_id: str) -> None:
        async def work(tx: Tx) -> None:
            await keys.ensure_tenant(tx, tenant_id)
            await keys.ensure_app(tx, tenant_id, app_id)

        await self._writer.submit(work)

    async def tenant_of_app(self, app_id: str) -> str | None:
        async with self.engine.connect() as conn:
            return await keys.tenant_of_app(conn, app_id)
