"""The hub's Prometheus metrics: one registry per hub, fed by small hooks.

Each hub owns a CollectorRegistry of its own, so several hubs in one process
(as in the tests) never share a series. The parts that do the work hold a
narrow hook (a method of HubMetrics passed in by the composition root) and
the label children they touch on every call are bound once and cached, so a
hot path pays for a dict lookup and an increment.

Labels are kept to small, operator-defined sets: transport, RPC method or
route template, status code, channel id, outcome. Message ids, addresses and
anything a tenant types never become a label.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from server.domain.status import TERMINAL, DeliveryStatus

# The 0.0.4 text format: what every Prometheus 2.x server reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# A *_created series beside every counter doubles what is scraped for nothing
# the alert rules use.
metrics.disable_created_metrics()

_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PROVIDER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Accept to provider or handset spans retries and schedules: seconds to an hour.
_JOURNEY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_ACCEPTED = frozenset({DeliveryStatus.ACCEPTED.value, DeliveryStatus.SCHEDULED.value})
_FINAL = frozenset(s.value for s in TERMINAL)

# What a dispatch attempt came to.
ACCEPTED, RETRYABLE, PERMANENT, ADAPTER_ERROR = (
    "accepted",
    "retryable_error",
    "permanent_error",
    "adapter_error",
)
# What a webhook POST came to.
DELIVERED, RETRY, DEAD = "delivered", "retry", "dead"


class StatusMove(Protocol):
    """A message's status as one commit changed it (the store's record of it)."""

    @property
    def channel_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def accepted_at(self) -> int: ...
    @property
    def at(self) -> int: ...


class OutboxView(Protocol):
    """The shared outbox as one cheap query sees it."""

    @property
    def depth(self) -> Mapping[tuple[str, int], int]: ...
    @property
    def oldest_due(self) -> Mapping[str, int]: ...
    @property
    def dead_letters(self) -> int: ...


OutboxSource = Callable[[], Awaitable[OutboxView]]


class _Bound:
    """Label children made once per label set, so a hot path skips .labels()."""

    def __init__(self, make: Callable[..., Any]) -> None:
        self._make = make
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._make(*values)
        return child


class _OutboxCollector(Collector):
    """Serves the last outbox snapshot; HubMetrics.refresh takes a new one."""

    def __init__(self) -> None:
        self.snapshot: OutboxView | None = None
        self.taken_at_ms = 0

    def collect(self) -> Iterable[Metric]:
        shared = " Describes the shared outbox: every replica reports the same value."
        depth = GaugeMetricFamily(
            "cimhub_outbox_depth",
            "Messages waiting in the outbox to be sent, by channel and priority." + shared,
            labels=["channel", "priority"],
        )
        age = GaugeMetricFamily(
            "cimhub_outbox_oldest_age_seconds",
            "How long the oldest due, unsent message of each channel has been due." + shared,
            labels=["channel"],
        )
        dead = GaugeMetricFamily(
            "cimhub_webhook_dead_letters",
            "Webhook deliveries that ran out of retries and wait for a redrive." + shared,
        )
        snap = self.snapshot
        if snap is not None:
            for (channel, priority), count in sorted(snap.depth.items()):
                depth.add_metric([channel, str(priority)], count)
            for channel, due_at in sorted(snap.oldest_due.items()):
                age.add_metric([channel], max(0.0, (self.taken_at_ms - due_at) / 1000))
            dead.add_metric([], snap.dead_letters)
        yield from (depth, age, dead)


class HubMetrics:
    def __init__(
        self,
        *,
        outbox: OutboxSource | None = None,
        outbox_max_age_s: float = 2.0,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._outbox_source = outbox
        self._outbox_max_age_ms = int(outbox_max_age_s * 1000)
        self._clock_ms = clock_ms
        self._outbox = _OutboxCollector()
        r.register(self._outbox)
        requests = Counter(
            "cimhub_requests_total",
            "API calls answered, by transport (grpc or rest), method and status code.",
            ["transport", "method", "code"],
            registry=r,
        )
        request_seconds = Histogram(
            "cimhub_request_duration_seconds",
            "Time to answer one unary API call (streams are counted, not timed).",
            ["transport", "method", "code"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.request = _Bound(lambda *v: (requests.labels(*v), request_seconds.labels(*v)))
        accepted = Counter(
            "cimhub_messages_accepted_total",
            "Messages accepted for sending (committed), by channel.",
            ["channel"],
            registry=r,
        )
        self._accepted = _Bound(accepted.labels)
        final = Counter(
            "cimhub_messages_final_total",
            "Messages reaching a final status, by channel and status. A message that "
            "moves on from one final status to a later one (DELIVERED, then READ) "
            "counts under each.",
            ["channel", "status"],
            registry=r,
        )
        self._final = _Bound(final.labels)
        attempts = Counter(
            "cimhub_dispatch_attempts_total",
            "Sends handed to a channel's provider, by channel and outcome.",
            ["channel", "outcome"],
            registry=r,
        )
        provider_seconds = Histogram(
            "cimhub_provider_request_duration_seconds",
            "Time a channel's provider took to answer one send.",
            ["channel"],
            buckets=_PROVIDER_BUCKETS,
            registry=r,
        )
        self._attempt = _Bound(lambda c, o: (attempts.labels(c, o), provider_seconds.labels(c)))
        self._to_provider = Histogram(
            "cimhub_accept_to_provider_seconds",
            "From a message's acceptance to the provider accepting its send.",
            buckets=_JOURNEY_BUCKETS,
            registry=r,
        )
        self._to_delivered = Histogram(
            "cimhub_accept_to_delivered_seconds",
            "From a message's acceptance to the commit of its DELIVERED receipt.",
            buckets=_JOURNEY_BUCKETS,
            registry=r,
        )
        webhooks = Counter(
            "cimhub_webhook_deliveries_total",
            "Webhook POSTs to receivers, by outcome (delivered, retry, dead).",
            ["outcome"],
            registry=r,
        )
        self._webhook = _Bound(webhooks.labels)
        subscribers = Gauge(
            "cimhub_stream_subscribers",
            "Event streams open on this replica, by transport.",
            ["transport"],
            registry=r,
        )
        self.subscribers = _Bound(subscribers.labels)
        limited = Counter(
            "cimhub_rate_limited_total",
            "Calls refused by a per-tenant limit, by scope (rate or streams).",
            ["scope"],
            registry=r,
        )
        self._limited = _Bound(limited.labels)
        self._commit_seconds = Histogram(
            "cimhub_db_commit_duration_seconds",
            "Time one group commit took, from taking a connection to COMMIT.",
            buckets=_COMMIT_BUCKETS,
            registry=r,
        )
        self._commit_batch = Histogram(
            "cimhub_db_commit_batch_size",
            "Writes that shared one group commit.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )

    # -- hooks -----------------------------------------------------------------

    def committed(self, seconds: float, writes: int, moves: Sequence[StatusMove]) -> None:
        """A group commit is durable; count what it did to messages."""
        self._commit_seconds.observe(seconds)
        self._commit_batch.observe(writes)
        for move in moves:
            if move.status in _ACCEPTED:
                self._accepted(move.channel_id).inc()
            elif move.status in _FINAL:
                self._final(move.channel_id, move.status).inc()
                if move.status == DeliveryStatus.DELIVERED and move.accepted_at:
                    self._to_delivered.observe(max(0, move.at - move.accepted_at) / 1000)

    def attempted(
        self, channel_id: str, outcome: str, seconds: float, accepted_at: int | None = None
    ) -> None:
        """One send reached a provider (or an adapter) and came back."""
        counter, timing = self._attempt(channel_id, outcome)
        counter.inc()
        timing.observe(seconds)
        if outcome == ACCEPTED and accepted_at:
            self._to_provider.observe(max(0, self._clock_ms() - accepted_at) / 1000)

    def webhook(self, outcome: str) -> None:
        self._webhook(outcome).inc()

    def rate_limited(self, scope: str) -> None:
        self._limited(scope).inc()

    # -- scrape ----------------------------------------------------------------

    def watch_outbox(self, source: OutboxSource) -> None:
        """Where scrapes read the outbox from (the store, which opens after us)."""
        self._outbox_source = source

    async def refresh(self) -> None:
        """Take a new outbox snapshot unless the last one is recent enough.

        Every replica answers for the same shared tables, and each scrape of
        each replica would otherwise run the query again.
        """
        if self._outbox_source is None:
            return
        now = self._clock_ms()
        if self._outbox.snapshot is not None and now - self._outbox.taken_at_ms < (
            self._outbox_max_age_ms
        ):
            return
        self._outbox.snapshot = await self._outbox_source()
        self._outbox.taken_at_ms = now

    def render(self) -> bytes:
        return generate_latest(self.registry)
