"""Dispatcher behaviour against providers that fail in known ways."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from cim.v1 import config_service_pb2 as cfg
from cim.v1 import config_service_pb2_grpc as cfg_grpc
from cim.v1 import delivery_pb2 as d
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import outbound_pb2 as o
from fakes.providers import BlackHoleProvider, FlakyProvider, HappyProvider, RejectingProvider
from server.config import DEFAULT_CHANNELS
from server.domain.status import DeliveryStatus
from support.hub import channel_to, running_hub


def _text(body: str = "hi") -> m.SendMessageRequest:
    return m.SendMessageRequest(
        channel_id="sandbox",
        type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
        to=o.OutboundContact(phone="+447700900123"),
        text=o.OutboundText(body=body),
    )


async def _wait_status(stub: mg.MessagingServiceStub, message_id: str, status: int) -> m.Message:
    async with asyncio.timeout(10):
        while True:
            got = (await stub.GetMessage(m.GetMessageRequest(message_id=message_id))).message
            if got.status == status:
                return got
            await asyncio.sleep(0.02)


FAST_RETRY = {"retry_base_ms": 20, "retry_cap_ms": 100}


async def test_retryable_errors_are_retried_until_accepted(db_url: str) -> None:
    provider = FlakyProvider(failures=2)
    async with (
        running_hub(db_url, adapters={"sandbox": provider}, **FAST_RETRY) as hub,
        channel_to(hub) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        sent = await stub.SendMessage(_text())
        got = await _wait_status(stub, sent.message_id, d.DELIVERY_STATUS_SUBMITTED)
    assert len(provider.attempts) == 3
    assert [a.attempt for a in provider.attempts] == [1, 2, 3]
    assert got.attempts == 3
    assert [(a.number, a.outcome, a.error_code) for a in got.attempt_log] == [
        (1, "FAILED", "503"),
        (2, "FAILED", "503"),
        (3, "ACCEPTED", ""),
    ]
    assert got.attempt_log[-1].provider_message_id == got.provider_message_id


async def test_permanent_error_fails_with_provider_reason(db_url: str) -> None:
    provider = RejectingProvider()
    async with (
        running_hub(db_url, adapters={"sandbox": provider}, **FAST_RETRY) as hub,
        channel_to(hub) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        sent = await stub.SendMessage(_text())
        got = await _wait_status(stub, sent.message_id, d.DELIVERY_STATUS_FAILED)
    assert len(provider.attempts) == 1
    assert got.history[-1].reason == "21211: invalid destination number"


async def test_gives_up_after_max_attempts(db_url: str) -> None:
    provider = FlakyProvider(failures=100)
    async with (
        running_hub(
            db_url, adapters={"sandbox": provider}, retry_max_attempts=3, **FAST_RETRY
        ) as hub,
        channel_to(hub) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        sent = await stub.SendMessage(_text())
        got = await _wait_status(stub, sent.message_id, d.DELIVERY_STATUS_FAILED)
    assert len(provider.attempts) == 3
    assert "gave up after 3 attempts" in got.history[-1].reason


async def test_black_hole_times_out_then_retries(db_url: str) -> None:
    provider = BlackHoleProvider(timeout=0.05)
    async with (
        running_hub(
            db_url, adapters={"sandbox": provider}, retry_max_attempts=2, **FAST_RETRY
        ) as hub,
        channel_to(hub) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        sent = await stub.SendMessage(_text())
        got = await _wait_status(stub, sent.message_id, d.DELIVERY_STATUS_FAILED)
    assert len(provider.attempts) == 2
    assert "provider timed out" in got.history[-1].reason


async def test_receipts_never_move_status_backwards_and_replays_change_nothing(db_url: str) -> None:
    provider = HappyProvider()
    async with (
        running_hub(db_url, adapters={"sandbox": provider}) as hub,
        channel_to(hub) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        sent = await stub.SendMessage(_text())
        got = await _wait_status(stub, sent.message_id, d.DELIVERY_STATUS_SUBMITTED)
        pid = got.provider_message_id
        for status in (
            DeliveryStatus.DELIVERED,
            DeliveryStatus.DELIVERED,
            DeliveryStatus.SUBMITTED,
        ):
            await provider.report("sandbox", pid, status)
        final = (await stub.GetMessage(m.GetMessageRequest(message_id=sent.message_id))).message
    assert final.status == d.DELIVERY_STATUS_DELIVERED
    assert [h.status for h in final.history] == [
        d.DELIVERY_STATUS_ACCEPTED,
        d.DELIVERY_STATUS_SUBMITTED,
        d.DELIVERY_STATUS_DELIVERED,
    ]


async def test_receipt_that_outruns_submission_is_applied_later(db_url: str) -> None:
    class EagerProvider(HappyProvider):
        """Reports delivery before its send call has even returned."""

        async def send(self, delivery):  # type: ignore[no-untyped-def]
            accepted = await super().send(delivery)
            await self.report(
                delivery.channel_id, accepted.provider_message_id, DeliveryStatus.DELIVERED
            )
            return accepted

    async with (
        running_hub(db_url, adapters={"sandbox": EagerProvider()}) as hub,
        channel_to(hub) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        sent = await stub.SendMessage(_text())
        got = await _wait_status(stub, sent.message_id, d.DELIVERY_STATUS_DELIVERED)
    assert [h.status for h in got.history][-2:] == [
        d.DELIVERY_STATUS_SUBMITTED,
        d.DELIVERY_STATUS_DELIVERED,
    ]


async def test_a_channel_never_has_more_in_flight_than_its_bound(db_url: str) -> None:
    class SlowProvider(HappyProvider):
        def __init__(self) -> None:
            super().__init__()
            self.current = 0
            self.peak = 0
            self.full = asyncio.Event()

        async def send(self, delivery):  # type: ignore[no-untyped-def]
            self.current += 1
            self.peak = max(self.peak, self.current)
            if self.current >= 3:
                self.full.set()
            try:
                # The first sends wait for the channel to fill (or long enough to
                # show it never does), so the bound is reached however slowly a
                # loaded machine starts each send; later ones are merely slow.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        await self.full.wait()
                await asyncio.sleep(0.05)
                return await super().send(delivery)
            finally:
                self.current -= 1

    provider = SlowProvider()
    narrow = replace(DEFAULT_CHANNELS[0], max_in_flight=3)
    async with (
        running_hub(
            db_url, adapters={"sandbox": provider}, channels=(narrow, *DEFAULT_CHANNELS[1:])
        ) as hub,
        channel_to(hub) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        for i in range(12):
            await stub.SendMessage(_text(f"m{i}"))
        async with asyncio.timeout(10):
            while len(provider.attempts) < 12:  # noqa: ASYNC110 - counting at the provider
                await asyncio.sleep(0.02)
    assert provider.peak == 3


async def test_a_claim_takes_no_more_than_the_channels_have_room_for(db_url: str) -> None:
    """Claimed rows beyond a channel's bound went straight back: two writes for nothing."""

    class SlowProvider(HappyProvider):
        async def send(self, delivery):  # type: ignore[no-untyped-def]
            await asyncio.sleep(0.05)
            return await super().send(delivery)

    provider = SlowProvider()
    narrow = replace(DEFAULT_CHANNELS[0], max_in_flight=3)
    async with (
        running_hub(db_url, adapters={"sandbox": provider}, channels=(narrow,)) as hub,
        channel_to(hub) as channel,
    ):
        released: list[str] = []
        release_many = hub.store.outbox.release_many

        async def counted(message_ids):  # type: ignore[no-untyped-def]
            released.extend(message_ids)
            await release_many(message_ids)

        hub.store.outbox.release_many = counted  # type: ignore[method-assign]
        stub = mg.MessagingServiceStub(channel)
        await asyncio.gather(*(stub.SendMessage(_text(f"m{i}")) for i in range(24)))
        async with asyncio.timeout(10):
            while len(provider.attempts) < 24:  # noqa: ASYNC110 - counting at the provider
                await asyncio.sleep(0.02)
    assert released == []


class TimingProvider(HappyProvider):
    """Accepts everything and notes when each send reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def send(self, delivery):  # type: ignore[no-untyped-def]
        self.times.append(asyncio.get_running_loop().time())
        return await super().send(delivery)


async def test_a_channel_is_never_sent_faster_than_its_tps(db_url: str) -> None:
    provider = TimingProvider()
    tps = 20
    paced = replace(DEFAULT_CHANNELS[0], tps=tps)
    async with (
        running_hub(
            db_url, adapters={"sandbox": provider}, channels=(paced, *DEFAULT_CHANNELS[1:])
        ) as hub,
        channel_to(hub) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        await asyncio.gather(*(stub.SendMessage(_text(f"m{i}")) for i in range(41)))
        async with asyncio.timeout(15):
            while len(provider.times) < 41:  # noqa: ASYNC110 - counting at the provider
                await asyncio.sleep(0.02)
    gaps = [b - a for a, b in zip(provider.times, provider.times[1:], strict=False)]
    rate = (len(provider.times) - 1) / (provider.times[-1] - provider.times[0])
    busiest = max(
        sum(1 for t in provider.times if start <= t < start + 1.0) for start in provider.times
    )
    print(f"\nconfigured tps={tps} measured rate={rate:.2f}/s busiest 1s window={busiest} sends")
    assert rate <= tps * 1.01
    assert min(gaps) >= 1 / tps * 0.95
    assert busiest <= tps


async def test_a_channel_created_at_runtime_is_paced_by_its_own_tps(db_url: str) -> None:
    tps = 10
    new = cfg.Channel(channel_id="rt-paced", contact_type="SMS", provider="sandbox", tps=tps)
    provider = TimingProvider()
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        await cfg_grpc.ConfigServiceStub(channel).CreateChannel(
            cfg.CreateChannelRequest(channel=new)
        )
        # Watch the sends at the provider; the limits under test are the dispatcher's.
        await hub.channels.use_adapter("rt-paced", provider)
        stub = mg.MessagingServiceStub(channel)
        request = _text()
        request.channel_id = "rt-paced"
        request.to.phone = "+447911100077"
        await asyncio.gather(*(stub.SendMessage(request) for _ in range(11)))
        async with asyncio.timeout(15):
            while len(provider.times) < 11:  # noqa: ASYNC110 - counting at the provider
                await asyncio.sleep(0.02)
    gaps = [b - a for a, b in zip(provider.times, provider.times[1:], strict=False)]
    print(f"\nruntime channel tps={tps} smallest gap={min(gaps) * 1000:.0f} ms")
    assert min(gaps) >= 1 / tps * 0.95
