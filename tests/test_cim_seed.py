"""The documented example payloads parse as written and survive a round trip."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cim.v1 import cim_message_pb2, messaging_service_pb2, outbound_pb2
from server.gateway.jsonmap import parse, to_json

SEEDS = Path(__file__).parent / "seeds"


def load(name: str) -> Any:
    return json.loads((SEEDS / name).read_text())


def scalars(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from scalars(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from scalars(item, (*path, index))
    elif value is not None:
        yield path, value


def lookup(doc: Any, path: tuple) -> Any:
    for step in path:
        doc = doc[step]
    return doc


# -- CIM message -------------------------------------------------------------------------


@pytest.fixture
def cim_seed() -> dict[str, Any]:
    return load("cim_message.json")


def test_cim_seed_parses(cim_seed: dict[str, Any]) -> None:
    msg = parse(cim_seed, cim_message_pb2.CimMessage)
    assert msg.id == "63c0ea05-4878-4d65-b6e0-2564ec29fc89"
    header = msg.header
    assert header.sender.type == cim_message_pb2.SENDER_TYPE_CONNECTOR
    assert header.sender.sender_name == "WEB_CONNECTOR"
    assert header.channel_data.service_identifier == "{{$randomPhoneNumber}}"
    assert header.channel_data.customer_first_name == "{{$randomCustomerFirstName}}"
    assert header.timestamp == 1677151053951
    assert header.HasField("language") and header.HasField("security_info")
    assert header.HasField("entities")
    assert not header.HasField("customer")
    assert not header.HasField("scheduling_meta_data")
    assert list(header.intent) == []


def test_cim_seed_round_trips(cim_seed: dict[str, Any]) -> None:
    msg = parse(cim_seed, cim_message_pb2.CimMessage)
    assert parse(to_json(msg), cim_message_pb2.CimMessage) == msg


def test_cim_seed_scalars_survive(cim_seed: dict[str, Any]) -> None:
    out = to_json(parse(cim_seed, cim_message_pb2.CimMessage))
    assert out["header"]["sender"]["type"] == "CONNECTOR"
    assert out["header"]["timestamp"] == 1677151053951
    for path, value in scalars(cim_seed):
        try:
            assert lookup(out, path) == value, path
        except KeyError:
            # proto3 does not print defaults, so only a zero value may go missing.
            assert value in (0, "", False), path


# -- OutBoundMsg -------------------------------------------------------------------------


@pytest.fixture
def send() -> messaging_service_pb2.SendMessageRequest:
    return parse(load("outbound_msg.json"), messaging_service_pb2.SendMessageRequest)


def test_outbound_seed_top_level(send: messaging_service_pb2.SendMessageRequest) -> None:
    assert send.channel_id == "91SERVICENUMBER"
    assert send.type == outbound_pb2.OUTBOUND_MESSAGE_TYPE_TEXT
    assert send.mask is False
    assert send.message_id_resend == "gBEGkYiEB1VXAglK1ZEqA1YKPrU"
    assert send.text.body == "your-text-message-content"
    assert send.to.contact_id == "string"
    for media in (send.audio, send.document, send.image, send.video):
        assert media.link == "http(s)://the-url"


def test_outbound_seed_contact_card(send: messaging_service_pb2.SendMessageRequest) -> None:
    (card,) = send.contacts
    (address,) = card.addresses
    assert address.zip == "94025"
    assert address.country_code == "us"
    assert card.phones[0].wa_id == "16505551234"
    assert card.phones[0].phone == "+1 (940) 555-1234"
    assert card.name.formatted_name == "John Smith"
    assert card.org.company == "WhatsApp"
    assert card.emails[0].type == "WORK"
    assert card.ims[0].service == "FACEBOOK"


def test_outbound_seed_location_and_options(
    send: messaging_service_pb2.SendMessageRequest,
) -> None:
    assert send.location.latitude == "12.90909"
    assert send.location.longitude == "6.90808"
    assert send.options.button_display_scheme == "auto"
    (button,) = send.options.buttons
    assert button.uid == "806799978207096"
    assert button.variable == "data.var_1"


def test_outbound_seed_template_data_is_a_struct(
    send: messaging_service_pb2.SendMessageRequest,
) -> None:
    assert send.template.code == "FEEDBACK"
    assert send.template.data["amount"] == 10
    assert send.template.data["currency"] == "INR"


def test_outbound_seed_round_trips(send: messaging_service_pb2.SendMessageRequest) -> None:
    again = parse(to_json(send), messaging_service_pb2.SendMessageRequest)
    assert again == send
    assert to_json(send)["contacts"][0]["phones"][0]["wa_id"] == "16505551234"
