"""One claimed message handed to its channel's adapter, and its outcome recorded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from server.channels import ChannelRegistry
from server.domain.models import Delivery
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
from server.telemetry import tracing
from server.telemetry.logs import event

log = logging.getLogger(__name__)
# Recording a start or an outcome that failed (the database went away) is
# tried again, ever later, for as long as the claim's lease lasts.
RECORD_RETRY_FIRST_S = 0.1
RECORD_RETRY_MAX_S = 2.0


class SendPacer(Protocol):
    """Waits until the next send of one channel may go out."""

    async def wait(self) -> None: ...


class AttemptObserver(Protocol):
    """Told how each send handed to an adapter came back: for the metrics."""

    def attempted(
        self, channel_id: str, outcome: str, seconds: float, accepted_at: int | None = None
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    """What a send on one channel waits for: a send slot, then its pacer."""

    slot: asyncio.Semaphore | None = None
    pacer: SendPacer | None = None


class AttemptRecords(Protocol):
    """What an attempt records in the outbox: its start and its outcome."""

    async def start_attempt(self, delivery: Delivery, provider: str) -> bool: ...

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


class Attempts:
    def __init__(
        self,
        store: AttemptRecords,
        channels: ChannelRegistry,
        *,
        lease_ms: int,
        retry: RetryPolicy,
        clock: Callable[[], int],
        observer: AttemptObserver | None = None,
        on_opted_out: Callable[[Delivery, str], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._registry = channels
        self._lease_ms = lease_ms
        self._retry = retry
        self._clock = clock
        self._observer = observer
        # Told when a provider refuses a recipient who unsubscribed with it.
        self._on_opted_out = on_opted_out

    async def run(
        self, delivery: Delivery, limits: ChannelLimits, answered: Callable[[], None]
    ) -> None:
        """Send one claimed delivery; ``answered`` is called once its provider has answered."""
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
            outcome = await self._try(delivery, limits, answered)
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

    async def _try(
        self, delivery: Delivery, limits: ChannelLimits, answered: Callable[[], None]
    ) -> Outcome:
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
                slot = limits.slot
                async with slot if slot is not None else contextlib.nullcontext():
                    if not await self._started(delivery, provider):
                        return Outcome("NOT_STARTED")
                    # Paced last, so the wait for the start's commit cannot
                    # bunch up sends the pacer spaced out.
                    if limits.pacer is not None:
                        await limits.pacer.wait()
                    timer.start()
                    accepted = await _provider_send(adapter, delivery, provider)
            finally:
                timer.stop()
                answered()
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
