"""A batch renders each destination's body from its own values.

A body without placeholders is rendered once and shared by every draft; one
with a placeholder anywhere (in the text, deep in rich content, or in a
template) is rendered per destination.
"""

from __future__ import annotations

from typing import Any

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
    # Each draft still has its own content, with the batch's shared fields.
    assert len({id(d.content) for d in drafts}) == len(drafts)
    assert all(d.content["from"] == "CNNECT" for d in drafts)


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
