"""A message's content is stored as the JSON the API gave and reaches its adapter
parsed once into typed values, whatever shape the send had."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.domain.content import (
    Attachment,
    Button,
    CardMedia,
    ContactAddress,
    ContactName,
    ContactPhone,
    Location,
    Media,
    MessageContent,
    RichCard,
    SendOptions,
    Suggestion,
    Template,
    parse_content,
)
from server.domain.models import OutboundDraft, OutboundMessage
from server.domain.sending import SingleSend, canonical_content
from server.storage.store import SqlStore

SEEDS = Path(__file__).parent / "seeds"
SINGLE = json.loads((SEEDS / "outbound_msg.json").read_text())
SINGLE_PARTS = ("audio", "document", "image", "video", "location", "template", "text", "options")


def single(kind: str) -> dict[str, Any]:
    """Seed 002 as a single send of the given type stores its content."""
    parts = {k: SINGLE[k] for k in SINGLE_PARTS}
    parts["contacts"] = SINGLE["contacts"]
    send = SingleSend(channel_id="c", type=kind, to={"phone": "+16505551234"}, content=parts)
    return canonical_content(send)


def batch(seed: str) -> dict[str, Any]:
    """A batch seed's content as planning stores it: content plus from and options."""
    doc = json.loads((SEEDS / seed).read_text())
    shared = {"from": doc["from"], "options": doc["options"]}
    if "cc" in doc:
        shared.update(cc=doc["cc"], bcc=doc["bcc"])
    return {**doc["content"], **shared}


def test_a_single_text_send_with_buttons() -> None:
    content = parse_content(single("text"))
    assert content.type == "text"
    assert content.text == SINGLE["text"]["body"]
    assert content.buttons == (
        Button(
            id="occupation",
            title="Occupation",
            type="QUICK_REPLY",
            url="http://url",
            phone="+91 9988776655",
        ),
    )


def test_single_media_location_and_template_sends() -> None:
    image = parse_content(single("image"))
    part = SINGLE["image"]
    assert image.media == Media(
        url=part["link"], caption=part.get("caption", ""), filename=part.get("filename", "")
    )
    location = parse_content(single("location"))
    assert location.location == Location(
        latitude=12.90909,
        longitude=6.90808,
        name="Main Building",
        address="1 Hacker Way, Menlo Park, CA, 94025",
        url="Location URL",
    )
    template = parse_content(single("template"))
    assert template.template == Template(
        code="FEEDBACK",
        id="60d236c6142e53561cb7716c",
        language="en_US",
        data={"amount": 10, "currency": "INR"},
    )


def test_a_contact_card_takes_meta_fields_as_text() -> None:
    [card] = parse_content(single("contacts")).contacts
    assert card.name == ContactName(
        formatted_name="John Smith", first_name="John", last_name="Smith"
    )
    # Numbers in the seed (zip, wa_id) are text by the shared rule.
    assert card.addresses == (
        ContactAddress(
            street="1 Hacker Way",
            city="Menlo Park",
            state="CA",
            zip="94025",
            country="United States",
            country_code="us",
            type="HOME",
        ),
    )
    assert card.phones == (
        ContactPhone(phone="+1 (940) 555-1234", type="HOME", wa_id="16505551234"),
    )
    assert card.org.company == "WhatsApp"


def test_a_batch_rcs_card_with_suggestions_and_fallback_options() -> None:
    content = parse_content(batch("v2_rcs.json"))
    assert content.type == "standalone"
    assert content.sender == "a_156887855308557980"
    assert content.options == SendOptions(
        sms_fallback=True, fallback_text="fallback text", sms_sender_id="senderaddress"
    )
    card = content.rich_card
    assert card is not None
    assert (card.title, card.orientation, card.thumbnail_alignment) == (
        "The Card Title",
        "VERTICAL/HORIZONTAL",
        "LEFT",
    )
    assert card.media == CardMedia(url="https://bit.ly/2J5i2x0", height="SHORT/MEDIUM/TALL")
    assert card.suggestions[1] == Suggestion(
        type="viewLocation",
        display_text="Mobile Office",
        postback_data="e460dd65-e69b-4f86-a5af-458683248f2d_url_google",
        address="+14165551234",
        latitude=43.649269,
        longitude=-79.378423,
    )
    assert len(content.suggestions) >= 1


def test_a_batch_email() -> None:
    content = parse_content(batch("v2_email.json"))
    assert (content.type, content.subject, content.reply_to) == (
        "html",
        "Food",
        "support@brand.example.org",
    )
    assert content.html.startswith("<a no-track-connect")
    assert content.text == "This is a new email"
    assert content.cc == ("audit@brand.example.org",)
    assert content.bcc == ()
    assert content.options.from_name == "Brand Name"
    assert content.attachments == (
        Attachment(url="https://i.imgur.com/y5GjuE8.jpg", name="wings", mime_type="image/png"),
    )


def test_aliases_of_one_field_read_as_one() -> None:
    assert parse_content({"type": "image", "mediaContentUrl": "https://x/a.png"}).media == Media(
        url="https://x/a.png"
    )
    template = parse_content({"type": "template", "template": {"name": "hi", "language": "de"}})
    assert template.template == Template(code="hi", language="de")
    # int64 fields arrive from protobuf's JSON as strings.
    email = parse_content({"attachments": [{"mediaUrl": "https://x/a", "size": "1234"}]})
    assert email.attachments[0].size == 1234


def test_the_message_type_stands_in_for_content_without_one() -> None:
    assert parse_content({"text": "hi"}, message_type="text").type == "text"
    assert parse_content({}, message_type="location").type == "location"
    assert parse_content(None).type == "text"


def test_options_read_by_the_shared_flag_rule() -> None:
    def fallback(value: Any) -> bool:
        return parse_content({"options": {"smsFallback": value}}).options.sms_fallback

    assert [fallback(v) for v in (True, "true", "yes", "1", "on")] == [True] * 5
    # Not a flag: not asked for, rather than read by Python's truthiness.
    assert [fallback(v) for v in (False, "no", "maybe", 2, [1])] == [False] * 5


def test_a_text_sends_content_reads_as_it_would_beside_any_other_key() -> None:
    # Content of type, text, from, category and options alone takes a shorter
    # read; a key of any other field, even null, takes the whole one.
    plain: list[dict[str, Any]] = [
        {},
        {"type": "text", "text": "Your code is 1234", "from": "CNNECT", "options": {}},
        {"text": 94025.0, "from": 447700900123, "category": "marketing"},
        {"type": None, "text": None, "options": "none"},
        {"text": {"not": "text"}, "type": ["sms"], "category": True},
        {"options": {"smsFallback": "yes", "text": "fb", "smsSenderId": "S", "fromName": "N"}},
        {"options": {"smsFallback": "maybe", "smsSenderId": 7}},
    ]
    for content in plain:
        for kind in ("", "text", "image"):
            short = parse_content(content, message_type=kind)
            assert short == parse_content({**content, "mediaUrl": None}, message_type=kind)
    assert parse_content(plain[1]) == MessageContent(
        type="text", text="Your code is 1234", sender="CNNECT"
    )
    assert parse_content(plain[2]) == MessageContent(
        text="94025", sender="447700900123", category="marketing"
    )
    assert parse_content(plain[5]).options == SendOptions(True, "fb", "S", "N")
    # One more key, and it is read.
    image = parse_content({"type": "image", "text": "hi", "mediaUrl": "https://x/a.png"})
    assert image.media == Media(url="https://x/a.png")


def test_parts_of_the_wrong_shape_count_as_absent_and_keep_their_place() -> None:
    content = parse_content(
        {
            "type": "carousel",
            "text": {"not": "text"},
            "cards": ["not a card", {"title": "b"}],
            "suggestions": "reply",
            "richCard": ["not", "a", "card"],
            "attachments": [7, {"mediaUrl": "https://x/a"}],
            "latitude": "north",
            "options": "none",
            "template": "FEEDBACK",
            "cc": "one@example.com",
        }
    )
    assert content.text == ""
    assert content.cards == (RichCard(), RichCard(title="b"))
    assert content.suggestions == ()
    assert content.rich_card is None
    assert content.attachments == (Attachment(), Attachment(url="https://x/a"))
    assert content.location == Location(latitude=None, longitude=None)
    assert content.options == SendOptions()
    assert content.template is None
    assert content.cc == ("one@example.com",)


def _draft(content: dict[str, Any], kind: str) -> OutboundDraft:
    return OutboundDraft(
        channel_id="sandbox",
        destination="+447700900123",
        type=kind,
        text="",
        content=content,
        conversation_id="c0ffee00-0000-0000-0000-000000000002",
    )


def _render(created: Sequence[OutboundMessage]) -> bytes:
    return b""


async def test_a_claimed_message_carries_typed_content_and_the_row_keeps_its_json(
    db_url: str,
) -> None:
    stored = batch("v2_rcs.json")
    store = await SqlStore.open(db_url, lambda _events: None)
    try:
        accepted = await store.messages.accept(
            "t-content", [_draft(stored, "standalone")], None, _render
        )
        [message] = accepted.messages
        [delivery] = await store.outbox.claim_due(10, 60_000)
        kept = await store.messages.get_message("t-content", message.id)
    finally:
        await store.close()
    assert isinstance(delivery.content, MessageContent)
    assert delivery.content == parse_content(stored)
    assert delivery.content.rich_card is not None
    assert delivery.content.rich_card.title == "The Card Title"
    # What the API stored and answers with is the JSON it was given.
    assert dict(kept.content) == stored
