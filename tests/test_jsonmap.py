"""JSON <-> proto mapping of the public API: quirks in, public spelling out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cim.v1 import (
    cim_message_pb2,
    config_service_pb2,
    content_pb2,
    delivery_pb2,
    messaging_service_pb2,
    outbound_pb2,
)
from server.gateway.jsonmap import JsonMappingError, _path_from_parse_error, parse, to_json

Send = messaging_service_pb2.SendMessageRequest


def error_of(data: object, cls: type = Send) -> JsonMappingError:
    with pytest.raises(JsonMappingError) as caught:
        parse(data, cls)
    return caught.value


# -- quirks ----------------------------------------------------------------------------


def test_numbers_become_strings_without_a_trailing_zero() -> None:
    msg = parse(
        {
            "contacts": [{"addresses": [{"zip": 94025}], "phones": [{"wa_id": 16505551234}]}],
            "location": {"latitude": 12.90909, "longitude": -6.5},
            "options": {"buttons": [{"uid": 806799978207096}]},
        },
        Send,
    )
    assert msg.contacts[0].addresses[0].zip == "94025"
    assert msg.contacts[0].phones[0].wa_id == "16505551234"
    assert msg.location.latitude == "12.90909"
    assert msg.location.longitude == "-6.5"
    assert msg.options.buttons[0].uid == "806799978207096"


def test_bool_accepts_true_and_false_strings() -> None:
    assert parse({"mask": "true"}, Send).mask is True
    assert parse({"mask": "FALSE"}, Send).mask is False
    assert parse({"mask": True}, Send).mask is True
    assert error_of({"mask": "yes"}).field == "mask"


def test_map_string_values_accept_numbers() -> None:
    msg = parse(
        {"substitutions": {"amount": 10, "rate": 1.5}, "to": [{"substitutions": {"n": 7}}]},
        messaging_service_pb2.SendBatchRequest,
    )
    assert dict(msg.substitutions) == {"amount": "10", "rate": "1.5"}
    assert dict(msg.to[0].substitutions) == {"n": "7"}


def test_null_means_absent_at_every_level() -> None:
    msg = parse(
        {
            "channelId": None,
            "to": {"phone": None, "name": "Ann"},
            "contacts": [None, {"phones": None}],
            "template": None,
        },
        Send,
    )
    assert msg.channel_id == ""
    assert msg.to.name == "Ann"
    assert len(msg.contacts) == 1
    assert not msg.HasField("template")


def test_json_and_proto_names_are_both_accepted() -> None:
    assert parse({"channel_id": "a"}, Send).channel_id == "a"
    assert parse({"channelId": "a"}, Send).channel_id == "a"
    batch = parse({"from": "ACME"}, messaging_service_pb2.SendBatchRequest)
    assert batch.from_address == "ACME"
    assert error_of({"channelId": "a", "channel_id": "b"}).field == "channelId"


def test_ints_accept_quoted_and_integral_numbers() -> None:
    batch = messaging_service_pb2.SendBatchRequest
    assert parse({"validity": "3600"}, batch).validity == 3600
    assert parse({"validity": 3600.0}, batch).validity == 3600
    assert parse({"priority": 2}, batch).priority == 2


def test_text_with_a_pattern_takes_no_numbers() -> None:
    # The digits of a number could break the pattern, so the number is refused
    # as a number, as the document's type says.
    err = error_of({"provider": 5}, config_service_pb2.Channel)
    assert (err.field, err.description) == ("provider", "expected a string, got a number")
    assert parse({"channelId": 5}, Send).channel_id == "5"


@pytest.mark.parametrize("text", ["3.6e3", "+3600", " 3600", "3600.0", "\u0663\u0666\u0660\u0660"])
def test_quoted_whole_numbers_are_plain_decimal_digits(text: str) -> None:
    batch = messaging_service_pb2.SendBatchRequest
    assert parse({"validity": "0003600"}, batch).validity == 3600
    err = error_of({"validity": text}, batch)
    assert (err.field, err.description) == ("validity", "expected an integer, got a string")


def test_fractional_numbers_as_text_are_decimal_or_protojson_words() -> None:
    for text, number in [("1.5", 1.5), ("-2e10", -2e10), ("Infinity", float("inf"))]:
        assert parse({"latitude": text}, content_pb2.Suggestion).latitude == number
    for text in ("1_000", " 1", "0x10", "inf", "1e999"):
        assert error_of({"latitude": text}, content_pb2.Suggestion).field == "latitude", text


@pytest.mark.parametrize("value", ["UNSPECIFIED", "outbound_message_type_unspecified", 0])
def test_an_enum_left_unspecified_is_left_out_rather_than_sent(value: object) -> None:
    err = error_of({"type": value})
    assert err.field == "type"
    assert "UNSPECIFIED" not in err.description.partition("expected one of")[2]


# -- enums -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["CONNECTOR", "connector", "Connector", "SENDER_TYPE_CONNECTOR", "sender_type_connector"],
)
def test_enum_accepts_full_or_unprefixed_name_in_any_case(text: str) -> None:
    msg = parse({"type": text}, cim_message_pb2.Sender)
    assert msg.type == cim_message_pb2.SENDER_TYPE_CONNECTOR


def test_enum_accepts_known_numbers() -> None:
    assert parse({"type": 6}, Send).type == outbound_pb2.OUTBOUND_MESSAGE_TYPE_TEXT
    assert "TEXT" in error_of({"type": 99}).description


def test_outbound_type_text() -> None:
    assert parse({"type": "text"}, Send).type == outbound_pb2.OUTBOUND_MESSAGE_TYPE_TEXT


def test_to_json_renders_enums_without_prefix_and_omits_unspecified() -> None:
    msg = messaging_service_pb2.Message(
        id="m1",
        status=delivery_pb2.DELIVERY_STATUS_DELIVERED,
        history=[
            delivery_pb2.StatusChange(status=delivery_pb2.DELIVERY_STATUS_ACCEPTED, timestamp=1),
            delivery_pb2.StatusChange(status=delivery_pb2.DELIVERY_STATUS_UNSPECIFIED),
        ],
    )
    out = to_json(msg)
    assert out["status"] == "DELIVERED"
    assert out["history"] == [{"status": "ACCEPTED", "timestamp": 1}, {}]
    assert "status" not in to_json(messaging_service_pb2.Message(id="x"))
    assert parse(out, messaging_service_pb2.Message) == msg


def test_to_json_keeps_int64_as_numbers_and_drops_defaults() -> None:
    big = 2**60 + 1
    out = to_json(messaging_service_pb2.Message(id="m", create_time=big, attempts=0))
    assert out == {"id": "m", "createTime": big}
    assert isinstance(out["createTime"], int)


# -- errors ----------------------------------------------------------------------------


def test_unknown_nested_field_reports_its_path() -> None:
    err = error_of({"to": {"foo": 1}})
    assert (err.field, err.description) == ("to.foo", "unknown field")


def test_unknown_top_level_field() -> None:
    assert error_of({"nope": 1}).field == "nope"


def test_repeated_index_appears_in_the_path() -> None:
    err = error_of({"contacts": [{}, {"phones": [{}, {"wa_id": "1", "bogus": 2}]}]})
    assert err.field == "contacts[1].phones[1].bogus"


def test_repeated_scalar_index_path() -> None:
    err = error_of(
        {"to": [{"msisdn": ["1", "2", {"x": 1}]}]}, messaging_service_pb2.SendBatchRequest
    )
    assert err.field == "to[0].msisdn[2]"
    assert "expected a string" in err.description


def test_string_in_int_field() -> None:
    err = error_of({"validity": "soon"}, messaging_service_pb2.SendBatchRequest)
    assert (err.field, err.description) == ("validity", "expected an integer, got a string")


def test_int_out_of_range() -> None:
    err = error_of({"priority": 2**40}, messaging_service_pb2.SendBatchRequest)
    assert err.field == "priority"
    assert "out of range" in err.description


def test_unknown_enum_lists_allowed_values() -> None:
    err = error_of({"header": {"sender": {"type": "robot"}}}, cim_message_pb2.CimMessage)
    assert err.field == "header.sender.type"
    for name in ("AGENT", "BOT", "CONNECTOR", "CUSTOMER"):
        assert name in err.description
    assert "UNSPECIFIED" not in err.description


def test_error_paths_use_json_names() -> None:
    err = error_of(
        {"header": {"channel_data": {"request_priority": "high"}}}, cim_message_pb2.CimMessage
    )
    assert err.field == "header.channelData.requestPriority"


def test_shape_errors() -> None:
    assert error_of([1]).field == ""
    assert error_of({"to": "someone"}).field == "to"
    assert error_of({"contacts": {}}).description.startswith("expected an array")
    assert error_of({"template": {"data": "x"}}).field == "template.data"


def test_two_members_of_a_oneof_are_rejected() -> None:
    err = error_of({"plain": {}, "media": {}}, cim_message_pb2.MessageBody)
    assert err.field == "media"
    assert "only one of" in err.description


def test_bool_field_rejects_numbers() -> None:
    err = error_of({"sandbox": 1}, config_service_pb2.ListChannelsRequest)
    assert err.field == "sandbox"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('Failed to parse to field: no field named "foo" at "SendMessageRequest.to".\n', "to"),
        ("Failed to parse data field: Struct must be a dict at R.template.data..", "template.data"),
        ("Failed to parse contacts field: Failed to parse phones field: boom", "contacts.phones"),
    ],
)
def test_unforeseen_parse_errors_still_get_a_path(text: str, path: str) -> None:
    assert _path_from_parse_error(text) == path


# -- well-known types ------------------------------------------------------------------


def test_struct_is_passed_through_untouched() -> None:
    data = {
        "amount": 10,
        "currency": "INR",
        "nested": {"none": None, "flag": True, "list": [1, "two", None, {"deep": "x"}]},
        "type": "text",
    }
    msg = parse({"template": {"data": data}}, Send)
    assert to_json(msg)["template"]["data"] == data


def test_struct_keeps_unknown_looking_keys_and_numbers() -> None:
    msg = parse({"header": {"entities": {"zip": 94025}}}, cim_message_pb2.CimMessage)
    assert to_json(msg)["header"]["entities"] == {"zip": 94025}


# -- properties ------------------------------------------------------------------------


@given(
    channel=st.text(), body=st.text(), kind=st.sampled_from(outbound_pb2.OutboundMessageType.keys())
)
def test_send_request_round_trips(channel: str, body: str, kind: str) -> None:
    msg = Send(channel_id=channel, text=outbound_pb2.OutboundText(body=body), type=kind)
    assert parse(to_json(msg), Send) == msg


@given(number=st.integers(min_value=-(10**18), max_value=10**18))
def test_any_integer_in_a_string_field_keeps_its_digits(number: int) -> None:
    msg = parse({"to": {"phone": number}}, Send)
    assert msg.to.phone == str(number)


@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_floats_in_string_fields_round_trip_exactly(value: float) -> None:
    msg = parse({"location": {"latitude": value}}, Send)
    assert float(msg.location.latitude) == value
