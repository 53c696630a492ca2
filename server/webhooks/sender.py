"""Drains the webhook outbox: signs each row and POSTs it to its URL."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from server.aio import AGAIN, IDLE, WorkerLoop, log_failure
from server.domain.retry import RetryPolicy
from server.domain.webhook_delivery import GONE, PostOutcome, delivery_id
from server.domain.webhook_signing import sign
from server.net.http import OutboundError, OutboundHttp
from server.observability.metrics import DEAD, DELIVERED, RETRY
from server.storage.faults import is_unavailable
from server.storage.tx import now_ms
from server.storage.webhooks import WebhookJob
from server.telemetry import tracing
from server.telemetry.logs import event

log = logging.getLogger(__name__)


def webhook_id(job: WebhookJob) -> str:
    # Stable across retries and redrives so receivers can drop duplicates.
    return delivery_id(job.id)


def encode(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class DeliveryObserver(Protocol):
    """Told what each webhook POST came to: for the metrics."""

    def webhook(self, outcome: str) -> None: ...


class WebhookQueue(Protocol):
    """The webhook outbox as the sender drains it."""

    async def claim_webhooks(self, limit: int, lease_ms: int) -> list[WebhookJob]: ...

    async def settle_webhook(
        self, job: WebhookJob, outcome: PostOutcome, retry_at: int | None, disable_after_ms: int
    ) -> bool: ...


class WebhookSender:
    def __init__(
        self,
        store: WebhookQueue,
        http: OutboundHttp,
        *,
        retry: RetryPolicy,
        max_age_ms: int = 24 * 3600 * 1000,
        disable_after_ms: int = 0,
        batch_size: int = 64,
        lease_ms: int = 60_000,
        poll_interval: float = 0.25,
        max_in_flight: int = 64,
        clock: Callable[[], int] = now_ms,
        observer: DeliveryObserver | None = None,
    ) -> None:
        self._store = store
        self._observer = observer
        self._http = http
        self._retry = retry
        self._max_age_ms = max_age_ms
        # A tenant webhook failing without a break for this long is disabled; 0: never.
        self._disable_after_ms = disable_after_ms
        self._batch_size = batch_size
        self._lease_ms = lease_ms
        self._slots = asyncio.Semaphore(max_in_flight)
        self._clock = clock
        self._loop = WorkerLoop(
            "webhook-sender",
            self._claim_round,
            interval=poll_interval,
            expected=is_unavailable,
            what="claiming due webhooks",
            logger=log,
        )
        self._in_flight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._loop.start()

    def wake(self) -> None:
        """Something was enqueued; look now rather than at the next poll."""
        self._loop.wake()

    async def close(self) -> None:
        """Stop claiming; the OutboundHttp belongs to the caller and stays open."""
        await self._loop.close()
        # Let posts already on the wire record their outcome; the rest come
        # back when their lease runs out.
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=5)

    async def _claim_round(self) -> float | None:
        claimed = await self._store.claim_webhooks(self._batch_size, self._lease_ms)
        for job in claimed:
            await self._slots.acquire()
            task = asyncio.create_task(self._attempt(job))
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        # A full batch: more is likely due.
        return AGAIN if len(claimed) >= self._batch_size else IDLE

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        log_failure(task)

    async def _attempt(self, job: WebhookJob) -> None:
        # Each delivery attempt is a span of the trace of the change it reports.
        reported = tracing.stored_context(job.trace_context)
        span = tracing.tracer().start_span(
            "webhook deliver",
            context=reported,
            kind=SpanKind.PRODUCER,
            attributes={
                "cimhub.webhook.id": webhook_id(job),
                "cimhub.webhook.attempt": job.attempts,
                "server.address": _host(job.url),
            },
        )
        with trace.use_span(span, end_on_exit=True):
            started = time.perf_counter()
            try:
                outcome, status = await self._deliver(job)
            except Exception:  # a store hiccup: the lease brings the row back
                log.exception("recording the outcome of webhook %d failed", job.id)
                outcome, status = "ERROR", 0
            span.set_attribute("cimhub.webhook.outcome", outcome)
            if outcome != "DELIVERED":
                span.set_status(Status(StatusCode.ERROR, outcome))
            event(
                log,
                "webhook.delivery",
                "webhook %s attempt %d to %s: %s",
                webhook_id(job),
                job.attempts,
                _host(job.url),
                outcome,
                level=logging.INFO if outcome == "DELIVERED" else logging.WARNING,
                message_id=_message_id(job),
                tenant=job.tenant_id,
                channel=_channel(job),
                webhook_id=webhook_id(job),
                attempt=job.attempts,
                outcome=outcome,
                http_status=status,
                host=_host(job.url),
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )

    async def _deliver(self, job: WebhookJob) -> tuple[str, int]:
        """POST the job and record what became of it: (outcome, HTTP status or 0)."""
        body = encode(job.payload)
        hook_id = webhook_id(job)
        timestamp = self._clock() // 1000
        headers = {
            "Content-Type": "application/json",
            "webhook-id": hook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(job.secret, hook_id, timestamp, body),
        }
        retry_after: int | None = None
        started = time.monotonic()
        try:
            result = await self._http.post_result(job.url, body, headers)
        except OutboundError as exc:
            status, error = 0, exc.reason
        else:
            status, retry_after = result.status, result.retry_after_s
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        now = self._clock()
        outcome = PostOutcome(status, error, round((time.monotonic() - started) * 1000), now)
        retry_at: int | None = None
        fresh = now - (job.age_from or job.created_at) < self._max_age_ms
        if not outcome.ok and status != GONE and fresh:
            retry_at = now + self._retry.delay_ms(job.attempts, retry_after)
        disabled = await self._store.settle_webhook(job, outcome, retry_at, self._disable_after_ms)
        if disabled:
            # The host only: a receiver's path or query may carry its own token.
            log.warning(
                "tenant %s's webhook to %s disabled after: %s", job.tenant_id, _host(job.url), error
            )
        if retry_at is None:
            # Done or dead: the next row with the same ordering key is now eligible.
            self.wake()
        name = DELIVERED if outcome.ok else RETRY if retry_at is not None else DEAD
        self._observe(name)
        return ("DELIVERED" if outcome.ok else "RETRY" if retry_at is not None else "DEAD"), status

    def _observe(self, outcome: str) -> None:
        if self._observer is not None:
            self._observer.webhook(outcome)


def _host(url: str) -> str:
    # Only the host: a receiver's path or query may carry its own token.
    return urlsplit(url).hostname or ""


def _data(job: WebhookJob) -> dict[str, object]:
    data = job.payload.get("data") if isinstance(job.payload, dict) else None
    return data if isinstance(data, dict) else {}


def _message_id(job: WebhookJob) -> str:
    return str(_data(job).get("messageId") or "")


def _channel(job: WebhookJob) -> str:
    return str(_data(job).get("channel") or "")
