"""Moves due messages from the outbox to their channel's adapter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from server.aio import cancel_and_wait
from server.channels import ChannelEntry, ChannelRegistry
from server.dispatch.pacing import Pacer
from server.domain.models import Channel, Delivery, Receipt
from server.domain.provider import (
    AttemptRecord,
    PermanentProviderError,
    ProviderError,
    RetryableProviderError,
)
from server.domain.retry import RetryPolicy
from server.domain.status import DeliveryStatus
from server.storage.store import SqlStore
from server.storage.writer import now_ms

log = logging.getLogger(__name__)
CLAIM_GAP_S = 0.005


class SendPacer(Protocol):
    """Waits until the next send of one channel may go out."""

    async def wait(self) -> None: ...


class Dispatcher:
    def __init__(
        self,
        store: SqlStore,
        channels: ChannelRegistry,
        *,
        batch_size: int = 128,
        lease_ms: int = 60_000,
        poll_interval: float = 0.25,
        max_in_flight: int = 256,
        retry: RetryPolicy = RetryPolicy(),
        clock: Callable[[], int] = now_ms,
        reconcile_interval: float = 1.0,
        workers: int = 1,
        pacer_for: Callable[[Channel], SendPacer] | None = None,
    ) -> None:
        self._store = store
        self._reconcile_interval = reconcile_interval
        self._registry = channels
        self._batch_size = batch_size
        self._lease_ms = lease_ms
        self._poll_interval = poll_interval
        self._max_in_flight = max_in_flight
        self._retry = retry
        self._clock = clock
        self._wake = asyncio.Event()
        self._workers = max(1, workers)
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._claiming = asyncio.Lock()
        # Task -> the channel whose slot it holds (None once the provider answered).
        self._in_flight: dict[asyncio.Task[None], str | None] = {}
        self._per_channel: dict[str, int] = {}
        # What the dispatcher derives from each channel (bounds, send slots,
        # pacers) follows the registry's changes; the channels stay there.
        self._channel_bounds: dict[str, int] = {}
        self._sending: dict[str, asyncio.Semaphore] = {}
        self._pacers: dict[str, SendPacer] = {}
        self._make_pacer = pacer_for or (lambda c: Pacer(c.tps))
        # Channels deleted while this process served them, whose unsent
        # messages are still to be failed.
        self._deleted: set[str] = set()
        for entry in channels.entries():
            self.set_channel(entry.channel)
        channels.on_change(self._channel_changed)

    def _channel_changed(self, channel_id: str, entry: ChannelEntry | None) -> None:
        if entry is None:
            self.forget_channel(channel_id)
            # Its messages can no longer be sent from anywhere.
            self._deleted.add(channel_id)
        else:
            self._deleted.discard(channel_id)
            self.set_channel(entry.channel)
        self._wake.set()

    def set_channel(self, channel: Channel) -> None:
        """Take on a channel's limits: at start, and when one is created or changed at runtime."""
        channel_id = channel.channel_id
        # A paced channel gets no more claims than it can send within half a
        # lease, so claimed work never waits long enough to be claimed again.
        # An unpaced channel claims one round ahead of its provider: the next
        # sends are claimed while the current ones are out, and start as soon
        # as a send slot frees (a wait of one provider round trip, not a lease).
        self._channel_bounds[channel_id] = (
            min(channel.max_in_flight, max(1, int(channel.tps * self._lease_ms / 2000)))
            if channel.tps > 0
            else 2 * channel.max_in_flight
        )
        # What is at a channel's provider at once stays within its max_in_flight.
        # Sends already holding the old semaphore finish under the old bound.
        self._sending[channel_id] = asyncio.Semaphore(channel.max_in_flight)
        if channel.tps > 0:
            self._pacers[channel_id] = self._make_pacer(channel)
        else:
            self._pacers.pop(channel_id, None)

    def forget_channel(self, channel_id: str) -> None:
        for table in (self._channel_bounds, self._sending, self._pacers):
            table.pop(channel_id, None)

    async def start(self) -> None:
        # Adapters are started by the registry as channels are loaded.
        self._loop_tasks = [
            asyncio.create_task(self._run(worker), name=f"dispatcher-{worker}")
            for worker in range(self._workers)
        ]

    def wake(self) -> None:
        """New work was accepted; look now rather than at the next poll."""
        self._wake.set()

    async def close(self) -> None:
        await cancel_and_wait(*self._loop_tasks)
        self._loop_tasks = []
        # Let attempts already handed to a provider record their outcome.
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=5)

    async def on_receipt(self, channel_id: str, receipt: Receipt) -> None:
        await self._store.apply_receipt(channel_id, receipt)

    async def _run(self, worker: int) -> None:
        last_sweep = 0.0
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if worker == 0 and loop.time() - last_sweep >= self._reconcile_interval:
                last_sweep = loop.time()
                try:
                    await self._store.reconcile_receipts()
                except Exception:
                    log.exception("reconciling parked receipts failed")
            # Workers of one process take turns to claim, so the process as a
            # whole never exceeds max_in_flight or a channel's bound.
            async with self._claiming:
                # Claim only what can start now: a claimed row that waits for a
                # slot burns its lease and may be claimed again by someone else.
                room = self._max_in_flight - len(self._in_flight)
                claimed: list[Delivery] = []
                if room > 0:
                    try:
                        claimed = await self._claim(min(room, self._batch_size))
                    except Exception:
                        log.exception("claiming due messages failed")
                if worker == 0 and self._deleted:
                    try:
                        await self._fail_deleted()
                    except Exception:
                        log.exception("failing the messages of deleted channels failed")
                for delivery in claimed:
                    self._per_channel[delivery.channel_id] = (
                        self._per_channel.get(delivery.channel_id, 0) + 1
                    )
                    task = asyncio.create_task(self._attempt(delivery))
                    self._in_flight[task] = delivery.channel_id
                    task.add_done_callback(self._done)
            if room <= 0 or len(claimed) < room:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval):
                        await self._wake.wait()
                # Every accepted request wakes us; a short pause lets the wakes
                # of a burst share one claim instead of one claim each.
                await asyncio.sleep(CLAIM_GAP_S)

    async def _claim(self, room: int) -> list[Delivery]:
        """Claim up to room deliveries without exceeding any channel's own bound.

        Only the channels this process has loaded are claimed: a channel just
        created on another replica is left to the replicas that know it.
        """
        if not self._channel_bounds:
            return []
        open_channels = [
            channel_id
            for channel_id, bound in self._channel_bounds.items()
            if self._per_channel.get(channel_id, 0) < bound
        ]
        if len(open_channels) == len(self._channel_bounds):
            # No channel is at its bound: one claim, then trim per channel. It
            # asks for no more than the channels have room for in all, or with
            # one busy channel most of a claim would go straight back.
            space = sum(
                bound - self._per_channel.get(channel_id, 0)
                for channel_id, bound in self._channel_bounds.items()
            )
            claimed = await self._store.claim_due(
                min(room, space), self._lease_ms, channels=list(self._channel_bounds)
            )
        else:
            claimed = []
            for channel_id in open_channels:
                space = self._channel_bounds[channel_id] - self._per_channel.get(channel_id, 0)
                claimed += await self._store.claim_due(
                    min(space, room - len(claimed)), self._lease_ms, channels=[channel_id]
                )
                if len(claimed) >= room:
                    break
        counts: dict[str, int] = {}
        kept: list[Delivery] = []
        surplus: list[str] = []
        for delivery in claimed:
            bound = self._channel_bounds.get(delivery.channel_id, room)
            used = self._per_channel.get(delivery.channel_id, 0) + counts.get(
                delivery.channel_id, 0
            )
            if used < bound:
                counts[delivery.channel_id] = counts.get(delivery.channel_id, 0) + 1
                kept.append(delivery)
            else:
                surplus.append(delivery.message_id)
        if surplus:
            await self._store.release_many(surplus)
        return kept

    async def _fail_deleted(self) -> None:
        """Fail what is left unsent on channels deleted here or on another replica."""
        for channel_id in list(self._deleted):
            left = await self._store.claim_due(
                self._batch_size, self._lease_ms, channels=[channel_id]
            )
            for delivery in left:
                await self._store.finish(
                    delivery.message_id,
                    DeliveryStatus.FAILED,
                    f"no adapter for channel {channel_id}: the channel was deleted",
                )
            if len(left) < self._batch_size:
                self._deleted.discard(channel_id)

    def _done(self, task: asyncio.Task[None]) -> None:
        channel_id = self._in_flight.pop(task, None)
        if channel_id is not None:
            self._per_channel[channel_id] -= 1
        self._wake.set()

    async def _attempt(self, delivery: Delivery) -> None:
        now = self._clock()
        if delivery.expire_at is not None and now >= delivery.expire_at:
            await self._store.finish(
                delivery.message_id, DeliveryStatus.EXPIRED, "expired before dispatch"
            )
            return
        adapter = self._registry.adapter(delivery.channel_id)
        if adapter is None:
            await self._store.finish(
                delivery.message_id,
                DeliveryStatus.FAILED,
                f"no adapter for channel {delivery.channel_id}",
            )
            return
        provider = self._provider_of(delivery.channel_id)
        try:
            try:
                slot = self._sending.get(delivery.channel_id)
                async with slot if slot is not None else contextlib.nullcontext():
                    if not await self._started(delivery, provider):
                        return
                    # Paced last, so the wait for the start's commit cannot
                    # bunch up sends the pacer spaced out.
                    pacer = self._pacers.get(delivery.channel_id)
                    if pacer is not None:
                        await pacer.wait()
                    accepted = await adapter.send(delivery)
            finally:
                self._leave_channel()
        except RetryableProviderError as exc:
            await self._retry_later(delivery, exc, provider)
        except PermanentProviderError as exc:
            reason = f"{exc.code}: {exc.reason}" if exc.code else exc.reason
            await self._store.finish(
                delivery.message_id,
                DeliveryStatus.FAILED,
                reason,
                self._failure(delivery, provider, exc),
            )
        except Exception as exc:  # an adapter bug must not strand the message
            log.exception("adapter for %s raised", delivery.channel_id)
            await self._retry_later(
                delivery, RetryableProviderError(type(exc).__name__, "ADAPTER"), provider
            )
        else:
            await self._store.mark_submitted(delivery, accepted, provider)

    async def _started(self, delivery: Delivery, provider: str) -> bool:
        """Record the start durably before the request leaves, so recovery knows.

        Taken with the send slot, so what is started and unanswered never
        exceeds what a channel lets be at its provider at once. Starts that
        become due together share a commit.
        """
        try:
            if await self._store.start_attempt(delivery, provider):
                return True
            log.debug("claim on %s was taken over before its send", delivery.message_id)
        except Exception:
            # Unsent and unstarted, it is sent once its lease runs out.
            log.exception("recording the start of %s failed", delivery.message_id)
        return False

    def _leave_channel(self) -> None:
        """The provider has answered: free the channel's slot while the outcome is written.

        A channel's bound limits what is at its provider at once; recording an
        outcome waits for a group commit and must not keep the next send waiting.
        """
        task = asyncio.current_task()
        channel_id = self._in_flight.get(task) if task is not None else None
        if task is not None and channel_id is not None:
            self._in_flight[task] = None
            self._per_channel[channel_id] -= 1
            self._wake.set()

    def _provider_of(self, channel_id: str) -> str:
        channel = self._registry.channel(channel_id)
        return channel.provider if channel is not None else "unknown"

    @staticmethod
    def _failure(delivery: Delivery, provider: str, exc: ProviderError) -> AttemptRecord:
        return AttemptRecord(
            delivery.channel_id, provider, "FAILED", error_code=exc.code, reason=exc.reason
        )

    async def _retry_later(
        self, delivery: Delivery, exc: RetryableProviderError, provider: str
    ) -> None:
        failed = self._failure(delivery, provider, exc)
        if delivery.attempt >= self._retry.max_attempts:
            await self._store.finish(
                delivery.message_id,
                DeliveryStatus.FAILED,
                f"gave up after {delivery.attempt} attempts: {exc.reason}",
                failed,
            )
            return
        due = self._clock() + self._retry.delay_ms(delivery.attempt, exc.retry_after)
        await self._store.reschedule(delivery.message_id, due, exc.reason, failed)
