"""Moves due messages from the outbox to their channel's adapter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from server.aio import cancel_and_wait, log_failure, supervised
from server.channels import ChannelEntry, ChannelRegistry
from server.dispatch.pacing import Pacer
from server.domain.models import Channel, Delivery
from server.domain.provider import (
    Accepted,
    AttemptRecord,
    ChannelAdapter,
    PermanentProviderError,
    ProviderError,
    RecipientOptedOut,
    RetryableProviderError,
)
from server.domain.retry import RetryPolicy
from server.domain.status import DeliveryStatus
from server.observability.metrics import ACCEPTED, ADAPTER_ERROR, PERMANENT, RETRYABLE
from server.storage.faults import is_unavailable
from server.storage.writer import now_ms
from server.telemetry import tracing
from server.telemetry.logs import event

log = logging.getLogger(__name__)
CLAIM_GAP_S = 0.005
# Recording a start or an outcome that failed (the database went away) is
# tried again, ever later, for as long as the claim's lease lasts.
RECORD_RETRY_FIRST_S = 0.1
RECORD_RETRY_MAX_S = 2.0


def _log_failure(what: str, exc: Exception) -> None:
    # An unreachable store is expected now and then (readiness reports it);
    # anything else deserves its traceback.
    if is_unavailable(exc):
        log.warning("%s failed: %r", what, exc)
    else:
        log.error("%s failed", what, exc_info=exc)


class SendPacer(Protocol):
    """Waits until the next send of one channel may go out."""

    async def wait(self) -> None: ...


class AttemptObserver(Protocol):
    """Told how each send handed to an adapter came back: for the metrics."""

    def attempted(
        self, channel_id: str, outcome: str, seconds: float, accepted_at: int | None = None
    ) -> None: ...


class Outbox(Protocol):
    """The outbox as the dispatcher works it: claim, start, record the outcome."""

    async def claim_due(
        self, limit: int, lease_ms: int, channels: Sequence[str] | None = None
    ) -> list[Delivery]: ...

    async def start_attempt(self, delivery: Delivery, provider: str) -> bool: ...

    async def release_many(self, message_ids: Sequence[str]) -> None: ...

    async def mark_submitted(
        self, delivery: Delivery, accepted: Accepted, provider: str
    ) -> None: ...

    async def reschedule(
        self, message_id: str, due_at: int, reason: str, failed: AttemptRecord | None = None
    ) -> None: ...

    async def finish(
        self,
        message_id: str,
        status: DeliveryStatus,
        reason: str,
        failed: AttemptRecord | None = None,
    ) -> None: ...

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
        # Told when a provider refuses a recipient who unsubscribed with it.
        self._on_opted_out = on_opted_out
        self._observer = observer
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

    def in_flight(self, channel_id: str) -> int:
        """This process's claims on the channel that its provider has not answered yet."""
        return self._per_channel.get(channel_id, 0)

    def forget_channel(self, channel_id: str) -> None:
        for table in (self._channel_bounds, self._sending, self._pacers):
            table.pop(channel_id, None)

    async def start(self) -> None:
        # Adapters are started by the registry as channels are loaded.
        self._loop_tasks = [
            supervised(self._run(worker), f"dispatcher-{worker}") for worker in range(self._workers)
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

    async def _run(self, worker: int) -> None:
        last_sweep = 0.0
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if worker == 0 and loop.time() - last_sweep >= self._reconcile_interval:
                last_sweep = loop.time()
                try:
                    await self._store.reconcile_receipts()
                except Exception as exc:
                    _log_failure("reconciling parked receipts", exc)
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
                    except Exception as exc:
                        _log_failure("claiming due messages", exc)
                if worker == 0 and self._deleted:
                    try:
                        await self._fail_deleted()
                    except Exception as exc:
                        _log_failure("failing the messages of deleted channels", exc)
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
        log_failure(task)
        self._wake.set()

    async def _record(
        self, what: str, delivery: Delivery, write: Callable[[], Awaitable[object]]
    ) -> None:
        """Write an attempt's outcome, again and again while the store is away.

        Given up only when the claim's lease has run out: the claim is then
        someone else's, and recovery sends the message again (flagged NO_OUTCOME).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._lease_ms / 1000
        wait = RECORD_RETRY_FIRST_S
        while True:
            try:
                await write()
                return
            except Exception as exc:
                if not is_unavailable(exc) or loop.time() + wait >= deadline:
                    log.error(
                        "recording %s of %s failed; its lease brings it back",
                        what,
                        delivery.message_id,
                        exc_info=exc,
                    )
                    return
                log.warning(
                    "recording %s of %s failed (%r); again in %.1f s",
                    what,
                    delivery.message_id,
                    exc,
                    wait,
                )
            await asyncio.sleep(wait)
            wait = min(wait * 2, RECORD_RETRY_MAX_S)

    async def _attempt(self, delivery: Delivery) -> None:
        # The attempt continues the trace of the request that accepted the
        # message: a child of its span, and (as the messaging conventions ask
        # of a "process" span) linked to it.
        accepted_in = tracing.stored_context(delivery.trace_context)
        span = tracing.tracer().start_span(
            f"process {delivery.channel_id}",
            context=accepted_in,
            kind=SpanKind.CONSUMER,
            links=tracing.link_to(accepted_in),
            attributes={
                "messaging.system": "cimhub",
                "messaging.operation.type": "process",
                "messaging.destination.name": delivery.channel_id,
                "messaging.message.id": delivery.message_id,
                "cimhub.attempt": delivery.attempt,
            },
        )
        started = time.perf_counter()
        with trace.use_span(span, end_on_exit=True):
            outcome = await self._try(delivery)
            span.set_attribute("cimhub.outcome", outcome.name)
            if outcome.failed:
                span.set_status(Status(StatusCode.ERROR, outcome.code or outcome.name))
            event(
                log,
                "dispatch.attempt",
                "attempt %d of %s on %s: %s",
                delivery.attempt,
                delivery.message_id,
                delivery.channel_id,
                outcome.name,
                level=logging.WARNING if outcome.failed else logging.INFO,
                message_id=delivery.message_id,
                tenant=delivery.tenant_id,
                channel=delivery.channel_id,
                attempt=delivery.attempt,
                outcome=outcome.name,
                code=outcome.code,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )

    async def _try(self, delivery: Delivery) -> Outcome:
        now = self._clock()
        if delivery.expire_at is not None and now >= delivery.expire_at:
            await self._record(
                "the expiry",
                delivery,
                lambda: self._store.finish(
                    delivery.message_id, DeliveryStatus.EXPIRED, "expired before dispatch"
                ),
            )
            return Outcome("EXPIRED", failed=True)
        adapter = self._registry.adapter(delivery.channel_id)
        if adapter is None:
            await self._record(
                "the failure",
                delivery,
                lambda: self._store.finish(
                    delivery.message_id,
                    DeliveryStatus.FAILED,
                    f"no adapter for channel {delivery.channel_id}",
                ),
            )
            return Outcome("FAILED", "NO_ADAPTER", failed=True)
        provider = self._provider_of(delivery.channel_id)
        timer = _Timer()
        try:
            try:
                slot = self._sending.get(delivery.channel_id)
                async with slot if slot is not None else contextlib.nullcontext():
                    if not await self._started(delivery, provider):
                        return Outcome("NOT_STARTED")
                    # Paced last, so the wait for the start's commit cannot
                    # bunch up sends the pacer spaced out.
                    pacer = self._pacers.get(delivery.channel_id)
                    if pacer is not None:
                        await pacer.wait()
                    timer.start()
                    accepted = await _provider_send(adapter, delivery, provider)
            finally:
                timer.stop()
                self._leave_channel()
        except RetryableProviderError as exc:
            self._observe(delivery, RETRYABLE, timer)
            return await self._retry_later(delivery, exc, provider, timer.ms)
        except PermanentProviderError as exc:
            self._observe(delivery, PERMANENT, timer)
            reason = f"{exc.code}: {exc.reason}" if exc.code else exc.reason
            failed = self._failure(delivery, provider, exc, timer.ms)
            await self._record(
                "the failure",
                delivery,
                lambda: self._store.finish(
                    delivery.message_id, DeliveryStatus.FAILED, reason, failed
                ),
            )
            if isinstance(exc, RecipientOptedOut) and self._on_opted_out is not None:
                code = exc.code
                await self._record("the opt-out", delivery, lambda: self._opted_out(delivery, code))
            return Outcome("FAILED", exc.code, failed=True)
        except Exception as exc:  # an adapter bug must not strand the message
            log.exception("adapter for %s raised", delivery.channel_id)
            self._observe(delivery, ADAPTER_ERROR, timer)
            return await self._retry_later(
                delivery, RetryableProviderError(type(exc).__name__, "ADAPTER"), provider, timer.ms
            )
        self._observe(delivery, ACCEPTED, timer)
        submitted = replace(accepted, latency_ms=timer.ms)
        await self._record(
            "the acceptance",
            delivery,
            lambda: self._store.mark_submitted(delivery, submitted, provider),
        )
        return Outcome("SUBMITTED")

    async def _opted_out(self, delivery: Delivery, code: str) -> None:
        assert self._on_opted_out is not None
        await self._on_opted_out(delivery, code)

    def _observe(self, delivery: Delivery, outcome: str, timer: _Timer) -> None:
        if self._observer is not None and timer.seconds is not None:
            self._observer.attempted(
                delivery.channel_id, outcome, timer.seconds, delivery.accepted_at
            )

    async def _started(self, delivery: Delivery, provider: str) -> bool:
        """Record the start durably before the request leaves, so recovery knows.

        Taken with the send slot, so what is started and unanswered never
        exceeds what a channel lets be at its provider at once. Starts that
        become due together share a commit.
        """
        started: list[bool] = []

        async def start() -> None:
            started.append(await self._store.start_attempt(delivery, provider))

        # A start whose commit was cut off may have landed: the retry then
        # finds it fenced and does not send; the lease brings it back.
        await self._record("the start", delivery, start)
        if started and started[-1]:
            return True
        if started:
            log.debug("claim on %s was taken over before its send", delivery.message_id)
        # Unsent (or unstarted), it is sent once its lease runs out.
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
    def _failure(
        delivery: Delivery, provider: str, exc: ProviderError, latency_ms: int | None = None
    ) -> AttemptRecord:
        return AttemptRecord(
            delivery.channel_id,
            provider,
            "FAILED",
            error_code=exc.code,
            reason=exc.reason,
            latency_ms=latency_ms,
        )

    async def _retry_later(
        self,
        delivery: Delivery,
        exc: RetryableProviderError,
        provider: str,
        latency_ms: int | None = None,
    ) -> Outcome:
        failed = self._failure(delivery, provider, exc, latency_ms)
        if delivery.attempt >= self._retry.max_attempts:
            await self._record(
                "the failure",
                delivery,
                lambda: self._store.finish(
                    delivery.message_id,
                    DeliveryStatus.FAILED,
                    f"gave up after {delivery.attempt} attempts: {exc.reason}",
                    failed,
                ),
            )
            return Outcome("FAILED", exc.code, failed=True)
        due = self._clock() + self._retry.delay_ms(delivery.attempt, exc.retry_after)
        await self._record(
            "the retry",
            delivery,
            lambda: self._store.reschedule(delivery.message_id, due, exc.reason, failed),
        )
        return Outcome("RETRY", exc.code, failed=True)


class _Timer:
    """How long the provider call took; None when it never started."""

    def __init__(self) -> None:
        self._started: float | None = None
        self.seconds: float | None = None
        self.ms: int | None = None

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self) -> None:
        if self._started is not None and self.seconds is None:
            self.seconds = time.perf_counter() - self._started
            self.ms = round(self.seconds * 1000)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, for its span and its log line."""

    name: str
    code: str = ""
    failed: bool = False


async def _provider_send(adapter: ChannelAdapter, delivery: Delivery, provider: str) -> Accepted:
    """The provider request, as a span of its own inside the attempt."""
    with tracing.tracer().start_as_current_span(
        f"provider {provider}",
        attributes={"cimhub.provider": provider, "messaging.message.id": delivery.message_id},
    ) as span:
        accepted = await adapter.send(delivery)
        span.set_attribute("cimhub.provider_message_id", accepted.provider_message_id)
        return accepted
