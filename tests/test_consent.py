"""The consent ledger end to end: keywords, refused sends, scopes, provider opt-outs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from cim.v1 import consent_service_pb2 as c
from cim.v1 import consent_service_pb2_grpc as cg
from cim.v1 import delivery_pb2 as d
from cim.v1 import messaging_service_pb2 as m
from cim.v1 import messaging_service_pb2_grpc as mg
from cim.v1 import outbound_pb2 as o
from cim.v1 import timeline_pb2 as t
from fakes.providers import HappyProvider
from server.api.context import DEFAULT_TENANT
from server.app import Hub
from server.domain.consent import CONSENT_REPLY, ConsentChange, ConsentSource, ConsentState
from server.domain.events import EventType
from server.domain.models import Delivery, OutboundDraft, conversation_for
from server.domain.paging import MESSAGES
from server.domain.provider import Accepted, RecipientOptedOut
from server.storage.store import SqlStore
from support.clock import eventually
from support.hub import channel_to
from support.inbound import contact, inbound_hub, logged, receive, text_message, wrapper

SMS = "sandbox-sms"
PHONE = "+447911123456"
OTHER = "+447911123457"


class OptedOutAtProvider(HappyProvider):
    """Refuses one number the way Twilio does after the recipient texted STOP there."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused

    async def send(self, delivery: Delivery) -> Accepted:
        if delivery.destination == self.refused:
            self.attempts.append(delivery)
            raise RecipientOptedOut("Attempt to send to unsubscribed recipient", "21610")
        return await super().send(delivery)


@asynccontextmanager
async def consent_hub(db_url: str, provider: HappyProvider) -> AsyncIterator[Any]:
    async with inbound_hub(db_url, adapters={SMS: provider}) as hub, channel_to(hub) as ch:
        yield hub, mg.MessagingServiceStub(ch), cg.ConsentServiceStub(ch)


def reached(provider: HappyProvider, message_id: str) -> bool:
    return any(a.message_id == message_id for a in provider.attempts)


def sent_to(provider: HappyProvider, address: str) -> list[Delivery]:
    return [a for a in provider.attempts if a.destination == address]


async def send_text(stub: Any, to: str, body: str, category: str = "") -> m.SendMessageResponse:
    return await stub.SendMessage(
        m.SendMessageRequest(
            channel_id=SMS,
            type=o.OUTBOUND_MESSAGE_TYPE_TEXT,
            to=o.OutboundContact(phone=to),
            text=o.OutboundText(body=body),
            category=category,
        )
    )


async def texted(hub: Hub, ext_id: str, body: str) -> None:
    """The customer at PHONE sends `body` on the SMS channel."""
    message = text_message(ext_id, body, sender=PHONE)
    await receive(hub, wrapper(message, contacts=[contact(channel_id=SMS, phone=PHONE)]))


async def settle(stub: Any, provider: HappyProvider) -> None:
    """A send to another number reaching the provider: everything queued before it was looked at."""
    marker = await send_text(stub, OTHER, "marker")
    await eventually(lambda: any(a.message_id == marker.message_id for a in provider.attempts))


async def test_stop_in_five_spellings_and_two_languages_refuses_until_start(db_url: str) -> None:
    provider = HappyProvider()
    spellings = ["STOP", "  stop! ", "Arrêt", "arret.", "Unsubscribe"]
    async with consent_hub(db_url, provider) as (hub, stub, consents):
        for i, word in enumerate(spellings):
            await texted(hub, f"out-{i}", word)
            refused = await send_text(stub, PHONE, f"offer {i}")
            assert refused.refusal == "OPTED_OUT", word
            assert refused.status == d.DELIVERY_STATUS_FAILED
            await settle(stub, provider)
            assert all(a.message_id != refused.message_id for a in provider.attempts), word
            message = (
                await stub.GetMessage(m.GetMessageRequest(message_id=refused.message_id))
            ).message
            assert message.status == d.DELIVERY_STATUS_FAILED
            assert [h.reason for h in message.history] == ["OPTED_OUT"]
            assert message.attempts == 0
            timeline = await stub.GetMessageTimeline(
                t.GetMessageTimelineRequest(message_id=refused.message_id)
            )
            final = timeline.steps[-1]
            assert (final.kind, final.reason) == (t.TIMELINE_STEP_KIND_FINAL, "OPTED_OUT")

            await texted(hub, f"in-{i}", "start")
            allowed = await send_text(stub, PHONE, f"news {i}")
            assert allowed.refusal == ""
            await eventually(lambda: reached(provider, allowed.message_id))  # noqa: B023
        # A STOP, then a QUIT while opted out: recorded, but confirmed once; the
        # STOP again under its first id is a repeat and changes nothing.
        await texted(hub, "out-again", "STOP")
        await texted(hub, "out-again-2", "QUIT")
        await texted(hub, "out-again", "STOP")
        await settle(stub, provider)
        got = await consents.GetConsent(c.GetConsentRequest(channel_type="sms", address=PHONE))
        events = await logged(hub, EventType.CONTENT)
        # Replies are accepted before the inbound call answers: count what is stored.
        stored = await hub.store.messages.list_messages(
            DEFAULT_TENANT, page=MESSAGES.request(DEFAULT_TENANT, 500, "")
        )
        # And every one of them reaches the customer.
        replies = {r.id for r in stored.items if "subscribed" in r.text}
        await eventually(lambda: replies <= {a.message_id for a in provider.attempts})

    to_phone = [r.text for r in stored.items if r.destination == PHONE]
    confirmations = [text for text in to_phone if "unsubscribed" in text]
    assert len(confirmations) == len(spellings) + 1  # one per opt-out, none for the repeat
    resubscribed = [text for text in to_phone if "subscribed again" in text]
    assert len(resubscribed) == len(spellings)
    # The audit history: every keyword, in order, with its source and inbound message.
    steps = [(h.state, h.source, h.reason) for h in got.history]
    keyword = c.CONSENT_SOURCE_INBOUND_KEYWORD
    expected = []
    for word in spellings:
        expected += [(c.CONSENT_STATE_OPTED_OUT, keyword, word.strip())]
        expected += [(c.CONSENT_STATE_OPTED_IN, keyword, "start")]
    expected += [(c.CONSENT_STATE_OPTED_OUT, keyword, "STOP")]
    expected += [(c.CONSENT_STATE_OPTED_OUT, keyword, "QUIT")]
    assert steps == expected
    assert all(h.inbound_message_id for h in got.history)
    assert len({h.inbound_message_id for h in got.history}) == len(got.history)
    [entry] = got.consents
    assert (entry.scope, entry.state, entry.reason) == ("all", c.CONSENT_STATE_OPTED_OUT, "STOP")
    # The inbound messages still reached the conversation's stream, marked.
    marks = [
        (e.event.message, e.event.data["consent"]["action"], e.event.data["consent"]["changed"])
        for e in events
        if "consent" in e.event.data
    ]
    expected_marks = []
    for word in spellings:
        expected_marks += [(word, "OPT_OUT", True), ("start", "OPT_IN", True)]
    expected_marks += [("STOP", "OPT_OUT", True), ("QUIT", "OPT_OUT", False)]
    assert marks == expected_marks


async def test_a_batch_with_one_opted_out_destination_sends_the_others(db_url: str) -> None:
    provider = HappyProvider()
    numbers = ["+447911123401", "+447911123402", "+447911123403"]
    async with consent_hub(db_url, provider) as (_hub, stub, consents):
        await consents.SetConsent(
            c.SetConsentRequest(
                channel_type="SMS",
                address="+44 7911 123402",
                state=c.CONSENT_STATE_OPTED_OUT,
                reason="asked by phone",
            )
        )
        reply = await stub.SendBatch(
            m.SendBatchRequest(
                channel="sms",
                from_address="CNNECT",
                to=[m.BatchDestination(msisdn=numbers)],
                content=m.BatchContent(type="text", text="Sale today"),
            )
        )
        await eventually(lambda: len(provider.attempts) == 2)
        await settle(stub, provider)
        [refused] = [r for r in reply.results if r.error]
        timeline = await stub.GetMessageTimeline(
            t.GetMessageTimelineRequest(message_id=refused.message_id)
        )

    sent = [r for r in reply.results if not r.error]
    assert [r.destination for r in sent] == [numbers[0], numbers[2]]
    assert all(r.status == d.DELIVERY_STATUS_ACCEPTED for r in sent)
    assert (refused.destination, refused.error) == (numbers[1], "OPTED_OUT")
    assert refused.status == d.DELIVERY_STATUS_FAILED and refused.message_id
    to_numbers = sorted(a.destination for a in provider.attempts if a.destination != OTHER)
    assert to_numbers == [numbers[0], numbers[2]]
    assert timeline.steps[0].reason == "OPTED_OUT"
    assert (timeline.steps[-1].status, timeline.steps[-1].reason) == (
        d.DELIVERY_STATUS_FAILED,
        "OPTED_OUT",
    )


async def test_transactional_passes_a_marketing_opt_out_but_nothing_passes_all(
    db_url: str,
) -> None:
    provider = HappyProvider()
    async with consent_hub(db_url, provider) as (_hub, stub, consents):

        async def set_state(scope: str, state: c.ConsentState.ValueType) -> None:
            await consents.SetConsent(
                c.SetConsentRequest(channel_type="SMS", address=PHONE, scope=scope, state=state)
            )

        await set_state("marketing", c.CONSENT_STATE_OPTED_OUT)
        transactional = await send_text(stub, PHONE, "Your code is 1234", "transactional")
        marketing = await send_text(stub, PHONE, "Sale", "Marketing")
        unlabelled = await send_text(stub, PHONE, "Hello")
        # It must go out before the opt-out of all, which would otherwise
        # withdraw it while it still waits for a dispatcher.
        await eventually(lambda: reached(provider, transactional.message_id))
        await set_state("all", c.CONSENT_STATE_OPTED_OUT)
        after_all = await send_text(stub, PHONE, "Your code is 5678", "transactional")
        await set_state("all", c.CONSENT_STATE_OPTED_IN)
        after_in = await send_text(stub, PHONE, "Your code is 9012", "transactional")
        await eventually(lambda: reached(provider, after_in.message_id))
        await settle(stub, provider)

    assert transactional.refusal == ""
    assert marketing.refusal == "OPTED_OUT"
    assert unlabelled.refusal == "OPTED_OUT"  # it could be marketing
    assert after_all.refusal == "OPTED_OUT"
    assert after_in.refusal == ""
    assert {a.message_id for a in sent_to(provider, PHONE)} == {
        transactional.message_id,
        after_in.message_id,
    }
    [last] = [a for a in provider.attempts if a.message_id == after_in.message_id]
    assert last.content.category == "transactional"


async def test_a_provider_opt_out_is_recorded_and_stops_the_next_send(db_url: str) -> None:
    provider = OptedOutAtProvider(PHONE)
    async with consent_hub(db_url, provider) as (_hub, stub, consents):
        first = await send_text(stub, PHONE, "Hello")
        await eventually(lambda: len(sent_to(provider, PHONE)) == 1)

        async def recorded() -> c.GetConsentResponse:
            # The opt-out is written just after the failure the provider answered.
            async with asyncio.timeout(10):
                while True:
                    try:
                        return await consents.GetConsent(
                            c.GetConsentRequest(channel_type="SMS", address=PHONE)
                        )
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.NOT_FOUND
                        await asyncio.sleep(0.02)

        got = await recorded()
        second = await send_text(stub, PHONE, "Hello again")
        await settle(stub, provider)
        listed = await consents.ListConsents(
            c.ListConsentsRequest(source=c.CONSENT_SOURCE_PROVIDER_ERROR)
        )

    [entry] = got.consents
    assert entry.state == c.CONSENT_STATE_OPTED_OUT
    assert entry.source == c.CONSENT_SOURCE_PROVIDER_ERROR
    assert entry.message_id == first.message_id
    assert entry.reason.startswith("21610")
    assert [h.source for h in got.history] == [c.CONSENT_SOURCE_PROVIDER_ERROR]
    assert second.refusal == "OPTED_OUT"
    assert len(sent_to(provider, PHONE)) == 1  # the refusal was paid for once, not twice
    assert [e.address for e in listed.results] == [PHONE]


async def test_only_a_whole_message_on_a_keyword_channel_is_a_keyword(db_url: str) -> None:
    provider = HappyProvider()
    async with consent_hub(db_url, provider) as (hub, stub, consents):
        await texted(hub, "s1", "Please stop sending me these")
        # The generic sandbox channel is not SMS, RCS or WhatsApp.
        stop = text_message("s2", "STOP", sender=PHONE)
        await receive(hub, wrapper(stop, contacts=[contact(phone=PHONE)]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await consents.GetConsent(c.GetConsentRequest(channel_type="SMS", address=PHONE))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert (await send_text(stub, PHONE, "still fine")).refusal == ""


async def test_a_tenants_own_keywords_and_reply(db_url: str) -> None:
    provider = HappyProvider()
    async with consent_hub(db_url, provider) as (hub, stub, consents):
        settings = c.ConsentSettings(opt_out_keywords=["Fini"], opt_out_reply="Adieu.")
        updated = await consents.UpdateConsentSettings(
            c.UpdateConsentSettingsRequest(settings=settings)
        )
        await texted(hub, "k1", "STOP")  # no longer a keyword for this tenant
        assert (await send_text(stub, PHONE, "one")).refusal == ""
        await texted(hub, "k2", "fini !")
        assert (await send_text(stub, PHONE, "two")).refusal == "OPTED_OUT"
        await eventually(lambda: any(a.text == "Adieu." for a in provider.attempts))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await consents.UpdateConsentSettings(
                c.UpdateConsentSettingsRequest(settings=c.ConsentSettings(opt_in_keywords=["!!"]))
            )

    assert list(updated.settings.opt_out_keywords) == ["Fini"]
    assert list(updated.settings.opt_in_keywords) == ["START", "UNSTOP", "YES"]  # built in
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "settings.optInKeywords" in (caught.value.details() or "")


async def test_an_opt_out_withdraws_sends_still_waiting_to_go(db_url: str) -> None:
    provider = HappyProvider()
    async with consent_hub(db_url, provider) as (hub, stub, consents):

        async def scheduled(category: str) -> str:
            reply = await stub.SendBatch(
                m.SendBatchRequest(
                    channel="sms",
                    from_address="CNNECT",
                    to=[m.BatchDestination(msisdn=[PHONE])],
                    content=m.BatchContent(type="text", text=f"{category} tomorrow"),
                    send_at=str(int(time.time()) + 3600),
                    category=category,
                )
            )
            assert reply.results[0].status == d.DELIVERY_STATUS_SCHEDULED
            return reply.results[0].message_id

        async def state(message_id: str) -> tuple[int, str]:
            got = await stub.GetMessage(m.GetMessageRequest(message_id=message_id))
            return got.message.status, got.message.history[-1].reason

        marketing, transactional = await scheduled("marketing"), await scheduled("transactional")
        await consents.SetConsent(
            c.SetConsentRequest(
                channel_type="SMS",
                address=PHONE,
                scope="marketing",
                state=c.CONSENT_STATE_OPTED_OUT,
            )
        )
        after_marketing = await state(marketing), await state(transactional)
        await texted(hub, "w1", "STOP")
        after_stop = await state(transactional)

    failed = (d.DELIVERY_STATUS_FAILED, "OPTED_OUT")
    assert after_marketing == (failed, (d.DELIVERY_STATUS_SCHEDULED, ""))
    assert after_stop == failed


async def test_a_later_opt_out_leaves_the_confirmation_of_the_one_before(db_url: str) -> None:
    # No dispatcher runs here, so both messages are still waiting when the
    # second keyword lands, as a slow channel would leave them.
    store = await SqlStore.open(db_url, lambda _events: None)
    try:

        def draft(text: str, content: dict[str, Any]) -> OutboundDraft:
            return OutboundDraft(
                channel_id=SMS,
                destination=PHONE,
                type="text",
                text=text,
                content={"type": "text", "text": text, **content},
                conversation_id=conversation_for(DEFAULT_TENANT, SMS, PHONE),
            )

        accepted = await store.messages.accept(
            DEFAULT_TENANT,
            [draft("You are unsubscribed.", {CONSENT_REPLY: True}), draft("Offer", {})],
            None,
            lambda _created: b"",
        )
        reply, offer = (msg.id for msg in accepted.messages)
        quit_again = ConsentChange(
            "SMS", PHONE, "all", ConsentState.OPTED_OUT, ConsentSource.INBOUND_KEYWORD, "QUIT"
        )
        applied = await store.consents.record_consent(DEFAULT_TENANT, quit_again, (SMS,))
        assert applied.withdrawn == (offer,)
        assert (await store.messages.get_message(DEFAULT_TENANT, reply)).status.value == "ACCEPTED"
        assert (await store.messages.get_message(DEFAULT_TENANT, offer)).status.value == "FAILED"
    finally:
        await store.close()
