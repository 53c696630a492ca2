"""Cancelling messages before they leave: one, a batch, and a race with the dispatcher."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select

from cim.v1 import delivery_pb2 as d
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from fakes.providers import FlakyProvider, HappyProvider, SlowProvider
from server.api.context import DEFAULT_TENANT
from server.config import DEFAULT_CHANNELS
from server.domain.status import DeliveryStatus
from server.storage.message_schema import attempts, messages
from support.clock import eventually
from support.hub import channel_to, rest_session, running_hub

SMS = "sandbox-sms"
CANCELLED = m.CANCEL_OUTCOME_CANCELLED
ALREADY_SENT = m.CANCEL_OUTCOME_ALREADY_SENT
ALREADY_FINAL = m.CANCEL_OUTCOME_ALREADY_FINAL


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"+4479111{i:05d}" for i in range(start, start + count)]


def batch(to: list[str], **extra: Any) -> m.SendBatchRequest:
    return m.SendBatchRequest(
        channel="sms",
        from_address="CNNECT",
        to=[m.BatchDestination(msisdn=to)],
        content=m.BatchContent(type="text", text="hello"),
        **extra,
    )


def sms_channels(**changes: Any) -> tuple[Any, ...]:
    return tuple(replace(c, **changes) if c.channel_id == SMS else c for c in DEFAULT_CHANNELS)


async def _status(hub: Any, message_id: str) -> DeliveryStatus:
    return (await hub.store.messages.get_message(DEFAULT_TENANT, message_id)).status


async def test_a_scheduled_message_cancelled_over_rest_is_cancelled_everywhere(
    db_url: str,
) -> None:
    provider = HappyProvider()
    async with running_hub(db_url, adapters={SMS: provider}) as hub, rest_session() as http:
        base = f"http://127.0.0.1:{hub.http_port}"
        body = {
            "channel": "sms",
            "from": "CNNECT",
            "to": [{"msisdn": numbers(2)}],
            "content": {"type": "text", "text": "later"},
            "sendAt": str(int(time.time()) + 24 * 3600),
        }
        async with http.post(f"{base}/api/v2/message/send", json=body) as resp:
            assert resp.status == 202, await resp.text()
            sent = (await resp.json())["results"]
        first, second = (r["messageId"] for r in sent)
        async with http.post(
            f"{base}/api/v1/messages/{first}/cancel", json={"reason": "campaign withdrawn"}
        ) as resp:
            assert resp.status == 200, await resp.text()
            result = (await resp.json())["data"]["result"]
        assert result == {
            "messageId": first,
            "outcome": "CANCELLED",
            "status": "CANCELLED",
        }
        async with http.post(f"{base}/api/v1/messages/{first}/cancel") as resp:
            again = (await resp.json())["data"]["result"]
        async with http.get(f"{base}/api/v1/messages/{first}/timeline") as resp:
            timeline = (await resp.json())["data"]
        async with http.post(f"{base}/api/v1/messages/no-such-message/cancel") as resp:
            missing = resp.status
        stored = await hub.store.messages.get_message(DEFAULT_TENANT, first)
        untouched = await _status(hub, second)
        events = await hub.store.events.events_after(DEFAULT_TENANT, 0, 100)
    assert again["outcome"] == "ALREADY_FINAL"
    assert again["status"] == "CANCELLED"
    assert stored.status is DeliveryStatus.CANCELLED
    assert [(h.status, h.reason) for h in stored.history] == [
        (DeliveryStatus.SCHEDULED, ""),
        (DeliveryStatus.CANCELLED, "campaign withdrawn"),
    ]
    final = timeline["steps"][-1]
    assert final["kind"] == "FINAL", final
    assert final["status"] == "CANCELLED"
    assert any(e.event.message_id == first and e.event.status == "CANCELLED" for e in events)
    assert untouched is DeliveryStatus.SCHEDULED
    assert missing == 404
    assert provider.attempts == []


async def test_a_batch_is_cancelled_as_one_and_a_sent_message_is_reported_sent(
    db_url: str,
) -> None:
    provider = HappyProvider()
    async with running_hub(db_url, adapters={SMS: provider}) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        later = await stub.SendBatch(batch(numbers(3), send_at=str(int(time.time()) + 3600)))
        now = await stub.SendBatch(batch(numbers(1, start=50)))
        sent_id = now.results[0].message_id
        await eventually(lambda: len(provider.attempts) == 1)
        await _wait_status(hub, sent_id, DeliveryStatus.SUBMITTED)
        cancelled = await stub.CancelBatch(m.CancelBatchRequest(batch_id=later.batch_id))
        too_late = await stub.CancelBatch(m.CancelBatchRequest(batch_id=now.batch_id))
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.CancelBatch(m.CancelBatchRequest(batch_id="no-such-batch"))
        listed = await stub.GetMessage(m.GetMessageRequest(message_id=sent_id))
    assert later.batch_id and now.batch_id and later.batch_id != now.batch_id
    assert sorted(r.message_id for r in cancelled.results) == sorted(
        r.message_id for r in later.results
    )
    assert {(r.outcome, r.status) for r in cancelled.results} == {
        (CANCELLED, d.DELIVERY_STATUS_CANCELLED)
    }
    assert [(r.message_id, r.outcome, r.status) for r in too_late.results] == [
        (sent_id, ALREADY_SENT, d.DELIVERY_STATUS_SUBMITTED)
    ]
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    assert listed.message.batch_id == now.batch_id
    assert len(provider.attempts) == 1


async def test_another_tenant_cannot_cancel_a_message_or_a_batch(db_url: str) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        await hub.store.keys.create_tenant("tenant-b")
        b_key = await hub.store.keys.create_api_key("tenant-b")
        b_md = (("x-api-id", b_key.api_id), ("x-api-key", b_key.secret))
        stub = mg.MessagingServiceStub(channel)
        sent = await stub.SendBatch(batch(numbers(1), send_at=str(int(time.time()) + 3600)))
        message_id = sent.results[0].message_id
        codes = []
        for call in (
            stub.CancelMessage(m.CancelMessageRequest(message_id=message_id), metadata=b_md),
            stub.CancelBatch(m.CancelBatchRequest(batch_id=sent.batch_id), metadata=b_md),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            codes.append(refused.value.code())
        status = await _status(hub, message_id)
    assert codes == [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND]
    assert status is DeliveryStatus.SCHEDULED


async def test_a_message_waiting_for_its_retry_is_cancelled_and_not_retried(db_url: str) -> None:
    # The first request fails with Retry-After an hour: the message waits for its retry.
    provider = FlakyProvider(failures=1, retry_after=3600)
    async with running_hub(db_url, adapters={SMS: provider}) as hub, channel_to(hub) as channel:
        stub = mg.MessagingServiceStub(channel)
        sent = await stub.SendBatch(batch(numbers(1)))
        message_id = sent.results[0].message_id
        await eventually(lambda: len(provider.attempts) == 1)

        async def retry_recorded() -> bool:
            found = await hub.store.messages.get_message(DEFAULT_TENANT, message_id)
            return len(found.attempt_log) == 1

        await _until(retry_recorded)
        answer = await stub.CancelMessage(m.CancelMessageRequest(message_id=message_id))
        stored = await hub.store.messages.get_message(DEFAULT_TENANT, message_id)
    assert answer.result.outcome == CANCELLED
    assert stored.status is DeliveryStatus.CANCELLED
    assert len(provider.attempts) == 1


async def test_cancels_racing_the_dispatch_of_1000_messages_never_cancel_a_sent_one(
    db_url: str,
) -> None:
    """Every message ends cancelled with no request at the provider, or sent exactly once.

    The provider answers slowly through 8 slots, so the dispatcher keeps
    claiming ahead while 750 single cancels (in random order) and one batch
    cancel race it.
    """
    provider = SlowProvider(delay=0.02)
    narrow = sms_channels(max_in_flight=8)
    async with (
        running_hub(db_url, adapters={SMS: provider}, channels=narrow) as hub,
        channel_to(hub) as channel,
    ):
        stub = mg.MessagingServiceStub(channel)
        batches = [await stub.SendBatch(batch(numbers(250, start=i * 250))) for i in range(4)]
        ids = [r.message_id for b in batches for r in b.results]
        assert len(set(ids)) == 1000
        await eventually(lambda: len(provider.attempts) > 0)
        singles = [r.message_id for b in batches[:3] for r in b.results]
        random.Random(7).shuffle(singles)
        gate = asyncio.Semaphore(32)

        async def cancel_one(message_id: str) -> m.CancelResult:
            async with gate:
                answer = await stub.CancelMessage(m.CancelMessageRequest(message_id=message_id))
                return answer.result

        whole = asyncio.ensure_future(
            stub.CancelBatch(m.CancelBatchRequest(batch_id=batches[3].batch_id))
        )
        answers = list(await asyncio.gather(*(cancel_one(i) for i in singles)))
        answers += list((await whole).results)
        statuses = await _final_statuses(hub, ids)
        await eventually(lambda: hub.dispatcher.in_flight(SMS) == 0, within=60)
        async with hub.store.engine.connect() as conn:
            logged = (
                await conn.execute(
                    select(attempts.c.message_id, func.count()).group_by(attempts.c.message_id)
                )
            ).all()
    requests = Counter(a.message_id for a in provider.attempts)
    answered = {a.message_id: a.outcome for a in answers}
    attempt_logs = dict(logged)
    assert sorted(answered) == sorted(ids)
    for message_id in ids:
        status = statuses[message_id]
        if status == DeliveryStatus.CANCELLED.value:
            assert requests[message_id] == 0, message_id
            assert answered[message_id] == CANCELLED, message_id
            assert message_id not in attempt_logs, message_id
        else:
            assert status == DeliveryStatus.SUBMITTED.value, (message_id, status)
            assert requests[message_id] == 1, message_id
            assert answered[message_id] == ALREADY_SENT, message_id
    outcomes = Counter(statuses.values())
    print(f"race: {dict(outcomes)}")
    # Both sides of the race were taken.
    assert outcomes[DeliveryStatus.CANCELLED.value] > 0
    assert outcomes[DeliveryStatus.SUBMITTED.value] > 0


async def _until(check: Any, within: float = 10) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - the state is in the database
            await asyncio.sleep(0.02)


async def _wait_status(hub: Any, message_id: str, status: DeliveryStatus) -> None:
    async def reached() -> bool:
        return await _status(hub, message_id) is status

    await _until(reached)


async def _final_statuses(hub: Any, ids: list[str]) -> dict[str, str]:
    """Each message's status once none is waiting any more."""
    found: dict[str, str] = {}

    async def settled() -> bool:
        async with hub.store.engine.connect() as conn:
            rows = (await conn.execute(select(messages.c.id, messages.c.status))).all()
        found.clear()
        found.update({r.id: r.status for r in rows})
        waiting = {DeliveryStatus.ACCEPTED.value, DeliveryStatus.SCHEDULED.value}
        return len(found) == len(ids) and not waiting & set(found.values())

    await _until(settled, within=120)
    return found
