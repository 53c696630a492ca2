"""Deadline fallback: a message's next leg fires when the one before runs out of time.

The hubs are real ones on port 0 with the real adapter builder; the channels
are sandbox channels, the first of which never reports DELIVERED where a test
needs a leg that runs out of time. Timings are read from the stored history,
not from the test's own clock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest

from cim.v1 import delivery_pb2 as d
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import outbound_pb2 as o
from cim.v1 import timeline_pb2 as t
from fakes.providers import HappyProvider, RejectingProvider
from server.app import Hub
from server.domain.errors import DomainError
from server.domain.fallback import FallbackStep, plan_chain
from server.domain.models import Channel
from server.domain.status import DeliveryStatus
from server.storage.tx import now_ms
from support.hub import AUTH_HEADERS, channel_to, rest_call, running_hub
from support.postgres import PostgresServer

QUIET = Channel("rcs-quiet", "RCS", "sandbox", sandbox=True, settings={"receipt_status": "NONE"})
PROMPT = Channel("rcs-prompt", "RCS", "sandbox", sandbox=True)
SMS = Channel("sms-fallback", "SMS", "sandbox", lane="CNNECT", sandbox=True)
CHANNELS = (QUIET, PROMPT, SMS)
# Long enough for a hub to stop and another to start between the legs.
DEADLINE_S = 6
S = m.FallbackLegState


def _send(
    channel_id: str, deadline_s: int = DEADLINE_S, to: str = "+447911123123"
) -> m.SendMessageRequest:
    return m.SendMessageRequest(
        channel_id=channel_id,
        type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
        to=o.OutboundContact(phone=to),
        text=o.OutboundText(body="your code is 1234"),
        fallback=[m.FallbackStep(channel_id=SMS.channel_id, deadline_seconds=deadline_s)],
    )


async def _get(stub: mg.MessagingServiceStub, message_id: str) -> m.Message:
    return (await stub.GetMessage(m.GetMessageRequest(message_id=message_id))).message


async def _wait(
    stub: mg.MessagingServiceStub, message_id: str, ok: Callable[[m.Message], object]
) -> m.Message:
    async with asyncio.timeout(20):
        while True:
            got = await _get(stub, message_id)
            if ok(got):
                return got
            await asyncio.sleep(0.02)


def _on(msg: m.Message, channel_id: str) -> list[m.DeliveryAttempt]:
    return [a for a in msg.attempt_log if a.channel_id == channel_id]


def _left(msg: m.Message) -> bool:
    return msg.fallback[0].leave_time > 0


async def test_a_leg_without_delivery_fires_the_next_within_a_second_across_a_restart(
    db_url: str,
) -> None:
    async with running_hub(db_url, channels=CHANNELS) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        sent = await stub.SendMessage(_send(QUIET.channel_id))
        first = await _wait(stub, sent.message_id, _left)
    # The first hub is gone; the deadline is only in the database.
    due = first.fallback[0].leave_time + DEADLINE_S * 1000
    async with running_hub(db_url, channels=CHANNELS) as hub, channel_to(hub) as channel:
        assert now_ms() < due, "the restart took longer than the deadline"
        stub = mg.MessagingServiceStub(channel)
        got = await _wait(stub, sent.message_id, lambda g: g.status == d.DELIVERY_STATUS_DELIVERED)
    assert [a.channel_id for a in got.attempt_log] == [QUIET.channel_id, SMS.channel_id]
    sms = _on(got, SMS.channel_id)[0]
    assert 0 <= sms.timestamp - due < 1000
    rcs_leg, sms_leg = got.fallback
    assert (rcs_leg.state, sms_leg.state) == (
        S.FALLBACK_LEG_STATE_SUPERSEDED,
        S.FALLBACK_LEG_STATE_SUCCEEDED,
    )
    assert sms_leg.fire_time >= due
    assert got.succeeded_leg == 2
    assert got.id == sent.message_id


async def test_a_leg_delivered_in_time_sends_no_fallback_across_a_restart(db_url: str) -> None:
    async with running_hub(db_url, channels=CHANNELS) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        delivered = await stub.SendMessage(_send(PROMPT.channel_id))
        # Sent after it with the same deadline: once its SMS leg has left,
        # the delivered message's deadline has passed too.
        control = await stub.SendMessage(_send(QUIET.channel_id, to="+447911123124"))
        await _wait(stub, delivered.message_id, lambda g: g.status == d.DELIVERY_STATUS_DELIVERED)
        await _wait(stub, control.message_id, _left)
    async with running_hub(db_url, channels=CHANNELS) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        await _wait(stub, control.message_id, lambda g: _on(g, SMS.channel_id))
        got = await _get(stub, delivered.message_id)
    assert [a.channel_id for a in got.attempt_log] == [PROMPT.channel_id]
    assert [leg.state for leg in got.fallback] == [
        S.FALLBACK_LEG_STATE_SUCCEEDED,
        S.FALLBACK_LEG_STATE_WAITING,
    ]
    assert got.succeeded_leg == 1


async def test_a_receipt_for_a_leg_after_the_next_fired_is_flagged_late(db_url: str) -> None:
    rcs = HappyProvider()
    async with (
        running_hub(db_url, channels=CHANNELS, adapters={QUIET.channel_id: rcs}) as hub,
        channel_to(hub) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        sent = await stub.SendMessage(_send(QUIET.channel_id, deadline_s=1))
        await _wait(stub, sent.message_id, lambda g: g.status == d.DELIVERY_STATUS_DELIVERED)
        first = (await _get(stub, sent.message_id)).fallback[0]
        await rcs.report(QUIET.channel_id, first.provider_message_id, DeliveryStatus.DELIVERED)
        got = await _wait(stub, sent.message_id, lambda g: g.fallback[0].late_time > 0)
        timeline = await stub.GetMessageTimeline(
            t.GetMessageTimelineRequest(message_id=sent.message_id)
        )
    late = [h for h in got.history if h.reason.startswith("LATE_AFTER_FALLBACK")]
    assert [h.status for h in late] == [d.DELIVERY_STATUS_DELIVERED]
    assert "leg 1 on rcs-quiet" in late[0].reason
    # The SMS leg was delivered first: it is the one that succeeded.
    assert got.succeeded_leg == 2
    kinds = [(s.kind, s.reason.split(":")[0]) for s in timeline.steps]
    assert (t.TIMELINE_STEP_KIND_RECEIPT, "LATE_AFTER_FALLBACK") in kinds
    fallback = [s for s in timeline.steps if s.kind == t.TIMELINE_STEP_KIND_FALLBACK]
    assert [(s.from_channel_id, s.to_channel_id) for s in fallback] == [
        (QUIET.channel_id, SMS.channel_id)
    ]


async def test_a_refused_leg_fires_the_next_at_once_over_rest(db_url: str) -> None:
    channels = (QUIET, SMS)
    async with running_hub(
        db_url, channels=channels, adapters={QUIET.channel_id: RejectingProvider()}
    ) as hub:
        status, body = await rest_call(
            hub,
            "POST",
            "/api/v2/message/send",
            AUTH_HEADERS,
            {
                "channel": "rcs",
                "from": "agent",
                "to": [{"msisdn": ["+447911123125"]}],
                "content": {"type": "text", "text": "your code is 1234"},
                "fallback": [
                    {"channelId": SMS.channel_id, "deadlineSeconds": 3600, "successStatus": "READ"}
                ],
            },
        )
        assert status == 202, body
        message_id = body["results"][0]["messageId"]
        async with channel_to(hub) as channel:
            stub = mg.MessagingServiceStub(channel)
            got = await _wait(stub, message_id, lambda g: g.status == d.DELIVERY_STATUS_DELIVERED)
    refused, sms = got.fallback
    assert refused.state == S.FALLBACK_LEG_STATE_REFUSED
    assert refused.success_status == d.DELIVERY_STATUS_READ
    # Fired in the commit that recorded the refusal, not at the deadline.
    assert sms.fire_time == refused.settle_time
    assert [(a.channel_id, a.outcome) for a in got.attempt_log] == [
        (QUIET.channel_id, "FAILED"),
        (SMS.channel_id, "ACCEPTED"),
    ]
    assert d.DELIVERY_STATUS_FAILED not in [h.status for h in got.history]


async def test_a_chain_naming_an_unknown_channel_is_refused(db_url: str) -> None:
    async with running_hub(db_url, channels=CHANNELS) as hub:
        status, body = await rest_call(
            hub,
            "POST",
            "/api/v1/message/send",
            AUTH_HEADERS,
            {
                "channelId": QUIET.channel_id,
                "type": "OUTBOUND_MESSAGE_TYPE_TEXT",
                "to": {"phone": "+447911123126"},
                "text": {"body": "hi"},
                "fallback": [{"channelId": "nope", "deadlineSeconds": 5}],
            },
        )
    assert status == 400, body
    assert "fallback[0].channelId" in str(body)


@pytest.fixture
async def pg_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    name = await postgres_server.create_database_async()
    try:
        yield postgres_server.url(name)
    finally:
        await postgres_server.drop_database_async(name)


async def test_withdrawn_legs_never_fire(db_url: str) -> None:
    async with running_hub(db_url, channels=CHANNELS) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        withdrawn = await stub.SendMessage(_send(QUIET.channel_id, deadline_s=1))
        control = await stub.SendMessage(_send(QUIET.channel_id, 1, "+447911123127"))
        await _wait(stub, withdrawn.message_id, _left)
        assert await hub.store.outbox.withdraw_fallback(withdrawn.message_id) == 1
        await _wait(stub, control.message_id, lambda g: _on(g, SMS.channel_id))
        got = await _wait(
            stub, withdrawn.message_id, lambda g: g.fallback[0].state != S.FALLBACK_LEG_STATE_ACTIVE
        )
    assert [leg.state for leg in got.fallback] == [
        S.FALLBACK_LEG_STATE_TIMED_OUT,
        S.FALLBACK_LEG_STATE_CANCELLED,
    ]
    assert [a.channel_id for a in got.attempt_log] == [QUIET.channel_id]


async def test_cancelling_a_message_waiting_on_its_deadline_withdraws_the_legs_to_come(
    db_url: str,
) -> None:
    async with running_hub(db_url, channels=CHANNELS) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        waiting = await stub.SendMessage(_send(QUIET.channel_id, deadline_s=1))
        control = await stub.SendMessage(_send(QUIET.channel_id, 1, "+447911123128"))
        await _wait(stub, waiting.message_id, _left)
        answer = await stub.CancelMessage(
            m.CancelMessageRequest(message_id=waiting.message_id, reason="customer replied")
        )
        # The deadline of the control message passes after this one's.
        await _wait(stub, control.message_id, lambda g: _on(g, SMS.channel_id))
        got = await _wait(
            stub, waiting.message_id, lambda g: g.fallback[0].state != S.FALLBACK_LEG_STATE_ACTIVE
        )
        again = await stub.CancelMessage(m.CancelMessageRequest(message_id=waiting.message_id))
    assert answer.result.outcome == m.CANCEL_OUTCOME_FALLBACK_CANCELLED
    assert again.result.outcome == m.CANCEL_OUTCOME_ALREADY_SENT
    assert [leg.state for leg in got.fallback] == [
        S.FALLBACK_LEG_STATE_TIMED_OUT,
        S.FALLBACK_LEG_STATE_CANCELLED,
    ]
    assert [a.channel_id for a in got.attempt_log] == [QUIET.channel_id]
    assert any("customer replied" in h.reason for h in got.history)


@pytest.mark.parametrize(
    ("step", "field"),
    [
        (FallbackStep("nope", 5), "fallback[0].channelId"),
        (FallbackStep(QUIET.channel_id, 5), "fallback[0].channelId"),
        (FallbackStep("mail", 5), "fallback[0].channelId"),
        (FallbackStep(SMS.channel_id, 0), "fallback[0].deadlineSeconds"),
        (FallbackStep(SMS.channel_id, 86401), "fallback[0].deadlineSeconds"),
        (FallbackStep(SMS.channel_id, 5, DeliveryStatus.SUBMITTED), "fallback[0].successStatus"),
    ],
)
def test_a_chain_that_cannot_work_is_refused_naming_the_field(
    step: FallbackStep, field: str
) -> None:
    mail = Channel("mail", "EMAIL", "sandbox")
    channels = {c.channel_id: c for c in (*CHANNELS, mail)}
    with pytest.raises(DomainError) as refused:
        plan_chain(QUIET, [step], channels)
    assert [v.field for v in refused.value.violations] == [field]


def test_each_leg_waits_on_the_deadline_and_status_of_the_step_after_it() -> None:
    channels = {c.channel_id: c for c in CHANNELS}
    legs = plan_chain(
        QUIET,
        [
            FallbackStep(PROMPT.channel_id, 30, DeliveryStatus.READ),
            FallbackStep(SMS.channel_id, 60),
        ],
        channels,
    )
    assert [(leg.channel_id, leg.deadline_ms, leg.success) for leg in legs] == [
        (QUIET.channel_id, 30_000, DeliveryStatus.READ),
        (PROMPT.channel_id, 60_000, DeliveryStatus.DELIVERED),
        (SMS.channel_id, None, DeliveryStatus.DELIVERED),
    ]


async def _sweep_until_empty(hub: Hub) -> list[str]:
    fired: list[str] = []
    while found := await hub.store.outbox.fire_due_fallbacks(3):
        fired += [f.message_id for f in found]
    return fired


@pytest.mark.postgresql
async def test_two_hubs_on_one_database_fire_each_leg_once(pg_url: str) -> None:
    count = 60
    # The hubs' own sweepers look once a minute: the test makes both sweep at once.
    async with (
        running_hub(pg_url, channels=CHANNELS, fallback_sweep_interval=60) as one,
        running_hub(pg_url, channels=CHANNELS, fallback_sweep_interval=60) as two,
        channel_to(one) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        sent = [
            (await stub.SendMessage(_send(QUIET.channel_id, 1, f"+4479111240{i:02d}"))).message_id
            for i in range(count)
        ]
        armed = [await _wait(stub, message_id, _left) for message_id in sent]
        due = max(g.fallback[0].leave_time for g in armed) + 1000
        async with asyncio.timeout(10):
            while now_ms() <= due:  # noqa: ASYNC110 - waiting for the stored deadline
                await asyncio.sleep(0.05)
        by_one, by_two = await asyncio.gather(_sweep_until_empty(one), _sweep_until_empty(two))
        one.dispatcher.wake()
        two.dispatcher.wake()
        got = [
            await _wait(stub, message_id, lambda g: g.status == d.DELIVERY_STATUS_DELIVERED)
            for message_id in sent
        ]
    # Both swept the same due legs side by side; each leg fired once, on one of them.
    assert Counter(by_one + by_two) == dict.fromkeys(sent, 1)
    assert all(len(_on(g, SMS.channel_id)) == 1 for g in got)
    assert all(g.succeeded_leg == 2 for g in got)
