"""A batch renders each destination's body from its own values.

A body without placeholders is rendered once, and one content is every
draft's; one with a placeholder anywhere (in the text, deep in rich content,
or in a template) is rendered per destination. Drafts are made with the mark the
consent screen gives them, so the screen passes them on as they are.
"""

from __future__ import annotations

from typing import Any

from server.actions.consent import ConsentRules
from server.domain.batch import BatchGroup, BatchSend, Template, plan_batch
from server.domain.models import Channel

NOW = 1_790_000_000_000
SMS = Channel("sms", "SMS", "twilio", lane="CNNECT")
RCS = Channel("rcs", "RCS", "rbm", lane="CNNECT")
NUMBERS = ("+447911123456", "+447911123457", "+447911123458")


def _plan(kind: str, content: dict[str, Any] | None, **more: Any) -> list[Any]:
    send = BatchSend(
        channel=kind,
        from_address="CNNECT",
        groups=(
            BatchGroup(msisdn=NUMBERS[:2], substitutions={"name": "Ann"}),
            BatchGroup(msisdn=NUMBERS[2:], substitutions={"name": "Bo"}),
        ),
        content=content,
        **more,
    )
    channels = {"sms": SMS, "rcs": RCS}
    return [p.draft for p in plan_batch("t1", send, channels, NOW)]


def test_a_body_without_placeholders_is_the_same_for_every_destination() -> None:
    drafts = _plan("sms", {"type": "text", "text": "Your parcel is on its way"})
    assert [d.destination for d in drafts] == list(NUMBERS)
    assert {d.text for d in drafts} == {"Your parcel is on its way"}
    assert all(d.content["text"] == "Your parcel is on its way" for d in drafts)
    # One content, the batch's shared fields included, is every draft's: the
    # store encodes it once for all of them.
    assert len({id(d.content) for d in drafts}) == 1
    assert drafts[0].content == {
        "type": "text",
        "text": "Your parcel is on its way",
        "from": "CNNECT",
        "options": {},
    }


def test_a_placeholder_in_the_text_is_filled_per_destination() -> None:
    drafts = _plan("sms", {"type": "text", "text": "Hi $(name), this is for $(destination)"})
    assert [d.text for d in drafts] == [
        f"Hi Ann, this is for {NUMBERS[0]}",
        f"Hi Ann, this is for {NUMBERS[1]}",
        f"Hi Bo, this is for {NUMBERS[2]}",
    ]


def test_a_placeholder_deep_in_rich_content_is_filled_per_destination() -> None:
    card = {
        "type": "standalone",
        "richCard": {
            "title": "Offer",
            "suggestions": [{"reply": {"text": "Yes", "postbackData": "accept:$(destination)"}}],
        },
    }
    drafts = _plan("rcs", card)
    postbacks = [d.content["richCard"]["suggestions"][0]["reply"]["postbackData"] for d in drafts]
    assert postbacks == [f"accept:{n}" for n in NUMBERS]


def test_a_template_is_rendered_once_without_placeholders_and_per_destination_with() -> None:
    approved = {"sms": "APPROVED"}
    plain = Template("tp", "notice", "en", "Office closed today", approvals=approved)
    named = Template("tn", "greet", "en", "Hello $(name)", approvals=approved)
    for template, texts in (
        (plain, ["Office closed today"] * 3),
        (named, ["Hello Ann", "Hello Ann", "Hello Bo"]),
    ):
        send = BatchSend(
            channel="sms",
            from_address="CNNECT",
            groups=(
                BatchGroup(msisdn=NUMBERS[:2], substitutions={"name": "Ann"}),
                BatchGroup(msisdn=NUMBERS[2:], substitutions={"name": "Bo"}),
            ),
            template={"code": template.code},
        )
        planned = plan_batch("t1", send, {"sms": SMS}, NOW, template=template)
        assert [p.draft.text for p in planned if p.draft] == texts


class _Visible:
    def visible_to(self, _tenant: str) -> dict[str, Channel]:
        return {"sms": SMS}


def _screen() -> ConsentRules:
    # The screen reads only the channels; the rest is for other calls.
    stand_in: Any = None
    return ConsentRules(
        _Visible(),  # type: ignore[arg-type]
        lambda: None,
        ledger=stand_in,
        inbox=stand_in,
        replies=stand_in,
        secrets=stand_in,
    )


async def test_drafts_planned_with_the_consent_mark_pass_the_screen_as_they_are() -> None:
    send = BatchSend(
        channel="sms",
        from_address="CNNECT",
        groups=(BatchGroup(msisdn=NUMBERS),),
        content={"type": "text", "text": "Sale on"},
        category="",
    )
    marked = [p.draft for p in plan_batch("t1", send, {"sms": SMS}, NOW, consent_category="")]
    unmarked = [p.draft for p in plan_batch("t1", send, {"sms": SMS}, NOW)]
    assert {(d.consent_type, d.consent_category) for d in marked} == {("SMS", "")}
    assert {(d.consent_type, d.consent_category) for d in unmarked} == {("", "")}
    screened = await _screen().screen("t1", marked, "")
    assert all(a is b for a, b in zip(screened, marked, strict=True))
    # Unmarked drafts, or a different category, are marked by the screen itself.
    for drafts, category in ((unmarked, ""), (marked, "marketing")):
        again = await _screen().screen("t1", drafts, category)
        assert {(d.consent_type, d.consent_category) for d in again} == {("SMS", category)}
        assert all(d.content["category"] == category for d in again if category)
