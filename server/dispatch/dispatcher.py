"""Moves due messages from the outbox to their channel's adapter.

Claiming is here: which channels have room, how much each may take, and the
bookkeeping of what this process has at a provider. Sending one claimed
message and recording its outcome is in server/dispatch/attempt.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from server.aio import AGAIN, IDLE, WorkerLoop, log_failure
from server.channels import ChannelEntry, ChannelRegistry
from server.dispatch.attempt import (
    AttemptObserver,
    AttemptRecords,
    Attempts,
    ChannelLimits,
    SendPacer,
)
from server.dispatch.pacing import Pacer
from server.domain.models import Channel, Delivery
from server.domain.retry import RetryPolicy
from server.domain.status import DeliveryStatus
from server.storage.faults import is_unavailable
from server.storage.tx import now_ms

log = logging.getLogger(__name__)
CLAIM_GAP_S = 0.005


class Outbox(AttemptRecords, Protocol):
    """The outbox as the dispatcher works it: claim, then what each attempt records."""

    async def claim_due(
        self, limit: int, lease_ms: int, channels: Sequence[str] | None = None
    ) -> list[Delivery]: ...

    async def release_many(self, message_ids: Sequence[str]) -> None: ...

    async def reconcile_receipts(self) -> int: ...


class Dispatcher:
    def __init__(
        self,
        store: Outbox,
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
        observer: AttemptObserver | None = None,
        on_opted_out: Callable[[Delivery, str], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._batch_size = batch_size
        self._lease_ms = lease_ms
        self._max_in_flight = max_in_flight
        self._attempts = Attempts(
            store,
            channels,
            lease_ms=lease_ms,
            retry=retry,
            clock=clock,
            observer=observer,
            on_opted_out=on_opted_out,
        )
        # Workers of one process take turns to claim (the lock), so the
        # process as a whole never exceeds max_in_flight or a channel's bound.
        # Every accepted request wakes them; a short pause after each wait
        # lets the wakes of a burst share one claim instead of one claim each.
        self._claiming = asyncio.Lock()
        self._claimers = [
            WorkerLoop(
                f"dispatcher-{worker}",
                self._claim_round,
                interval=poll_interval,
                settle=CLAIM_GAP_S,
                expected=is_unavailable,
                what="claiming due messages",
                logger=log,
            )
            for worker in range(max(1, workers))
        ]
        # Woken when a channel is deleted; its interval only matters after a
        # failed round.
        self._deleted_loop = WorkerLoop(
            "deleted-channels",
            self._deleted_round,
            interval=reconcile_interval,
            expected=is_unavailable,
            what="failing the messages of deleted channels",
            logger=log,
        )
        reconciler = WorkerLoop(
            "receipt-reconciler",
            self._reconcile_round,
            interval=reconcile_interval,
            expected=is_unavailable,
            what="reconciling parked receipts",
            logger=log,
        )
        self._upkeep = [reconciler, self._deleted_loop]
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
            self._deleted_loop.wake()
        else:
            self._deleted.discard(channel_id)
            self.set_channel(entry.channel)
        self.wake()

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

    def in_flight(self, channel_id: str) -> int:
        """This process's claims on the channel that its provider has not answered yet."""
        return self._per_channel.get(channel_id, 0)

    def forget_channel(self, channel_id: str) -> None:
        for table in (self._channel_bounds, self._sending, self._pacers):
            table.pop(channel_id, None)

    async def start(self) -> None:
        # Adapters are started by the registry as channels are loaded.
        for loop in self._claimers + self._upkeep:
            loop.start()

    def wake(self) -> None:
        """New work was accepted, or room freed up; claim now rather than at the next poll."""
        for loop in self._claimers:
            loop.wake()

    async def close(self) -> None:
        for loop in self._claimers + self._upkeep:
            await loop.close()
        # Let attempts already handed to a provider record their outcome.
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=5)

    async def _claim_round(self) -> float | None:
        async with self._claiming:
            # Claim only what can start now: a claimed row that waits for a
            # slot burns its lease and may be claimed again by someone else.
            room = self._max_in_flight - len(self._in_flight)
            if room <= 0:
                return IDLE  # a finished attempt wakes us
            claimed = await self._claim(min(room, self._batch_size))
            for delivery in claimed:
                channel_id = delivery.channel_id
                self._per_channel[channel_id] = self._per_channel.get(channel_id, 0) + 1
                limits = ChannelLimits(self._sending.get(channel_id), self._pacers.get(channel_id))
                task = asyncio.create_task(
                    self._attempts.run(delivery, limits, self._leave_channel)
                )
                self._in_flight[task] = channel_id
                task.add_done_callback(self._done)
        return AGAIN if len(claimed) >= room else IDLE

    async def _reconcile_round(self) -> float | None:
        await self._store.reconcile_receipts()
        return IDLE

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

    async def _deleted_round(self) -> float | None:
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
        return AGAIN if self._deleted else IDLE

    def _done(self, task: asyncio.Task[None]) -> None:
        channel_id = self._in_flight.pop(task, None)
        if channel_id is not None:
            self._per_channel[channel_id] -= 1
        log_failure(task)
        self.wake()

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
            self.wake()
