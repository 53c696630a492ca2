"""Input that cannot be decoded is the caller's error, named by field, and the hub stays up.

One table per kind of bad input, each pushed through one hub per database
engine: numbers out of range for their proto field, JWT time claims that are
not whole numbers, gRPC request bytes that do not decode, and REST bodies that
are not JSON. Every case must be a 4xx (or INVALID_ARGUMENT / UNAUTHENTICATED)
and never a 5xx, UNKNOWN or INTERNAL; after each table /healthz still answers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cim.v1 import customer_service_pb2 as c
from cim.v1 import messaging_service_pb2 as m
from server.api.server import MAX_METADATA_BYTES
from server.app import Hub
from support.hub import channel_to, rest_session, running_hub

V1_SEND = "/api/v1/message/send"
V2_SEND = "/api/v2/message/send"
LIST = "/api/v1/messages"
DIGITS_5000 = "9" * 5000
INT32 = "[-2147483648, 2147483647]"
INT64 = "[-9223372036854775808, 9223372036854775807]"


def v2_body(**extra: str) -> bytes:
    """A valid SendBatch body with raw JSON text spliced in for the given fields."""
    fields = {
        "channel": '"sms"',
        "from": '"CNNECT"',
        "to": '[{"msisdn": ["+447911123456"]}]',
        "content": '{"type": "text", "text": "hello"}',
        **extra,
    }
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()


async def assert_healthy(hub: Hub) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{hub.http_port}/healthz") as resp,
    ):
        assert resp.status == 200


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, content_type: str | None
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type} if content_type else {}
    skip = () if content_type else ("Content-Type",)
    async with http.post(url, data=body, headers=headers, skip_auto_headers=skip) as resp:
        return resp.status, await resp.json()


def fields_of(payload: dict[str, Any]) -> list[str]:
    return [e["field"] for e in payload.get("errors", [])]


def grpc_rejection(err: grpc.aio.AioRpcError) -> tuple[str, str, list[str]]:
    """(code name, ErrorInfo reason, BadRequest fields) of a failed call."""
    status = rpc_status.from_call(err)
    reason, fields = "", []
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad):
            fields.extend(v.field for v in bad.field_violations)
    return err.code().name, reason, fields


# -- 1. numbers ----------------------------------------------------------------------------

# (name, body or query, field, description fragment)
NUMBER_BODIES = [
    ("priority 20 digits", v2_body(priority="99999999999999999999"), "priority", INT32),
    ("priority 2**31", v2_body(priority=str(2**31)), "priority", INT32),
    ("priority -2**31-1", v2_body(priority=str(-(2**31) - 1)), "priority", INT32),
    ("priority 5000 digits", v2_body(priority=DIGITS_5000), "priority", INT32),
    ("priority -5000 digits", v2_body(priority="-" + DIGITS_5000), "priority", INT32),
    ("priority NaN", v2_body(priority="NaN"), "priority", "non-finite"),
    ("priority Infinity", v2_body(priority="Infinity"), "priority", "non-finite"),
    ("priority -Infinity", v2_body(priority="-Infinity"), "priority", "non-finite"),
    ("priority 1e400", v2_body(priority="1e400"), "priority", "non-finite"),
    ("priority 1.5", v2_body(priority="1.5"), "priority", "expected an integer, got 1.5"),
    ("priority '1.5'", v2_body(priority='"1.5"'), "priority", "expected an integer"),
    ("priority 'NaN'", v2_body(priority='"NaN"'), "priority", "expected an integer"),
    ("validity 2**63", v2_body(validity=str(2**63)), "validity", INT64),
    ("validity 1e30", v2_body(validity="1e30"), "validity", INT64),
    ("validity '1e400'", v2_body(validity='"1e400"'), "validity", INT64),
    ("validity '5000 digits'", v2_body(validity=f'"{DIGITS_5000}"'), "validity", INT64),
    ("from NaN", v2_body(**{"from": "NaN"}), "from", "non-finite"),
    ("from 5000 digits", v2_body(**{"from": DIGITS_5000}), "from", "characters"),
    ("to[0].msisdn[0] Infinity", v2_body(to='[{"msisdn": [Infinity]}]'), "to[0].msisdn[0]", ""),
]
NUMBER_QUERIES = [
    ("pageSize=99999999999999999999", "pageSize", INT32),
    ("page_size=2147483648", "pageSize", INT32),
    (f"pageSize={DIGITS_5000}", "pageSize", INT32),
    ("pageSize=1e400", "pageSize", INT32),
    ("pageSize=NaN", "pageSize", "expected an integer"),
    ("pageSize=Infinity", "pageSize", "expected an integer"),
    ("pageSize=-Infinity", "pageSize", "expected an integer"),
    ("pageSize=1.5", "pageSize", "expected an integer"),
]
# Numbers where strings or integers are declared, as documented payloads send them.
NUMBERS_ACCEPTED = [
    ("priority '2'", v2_body(priority='"2"')),
    ("priority 2.0", v2_body(priority="2.0")),
    ("validity '3600'", v2_body(validity='"3600"')),
    ("from as a number", v2_body(**{"from": "447911000000"})),
]


async def test_out_of_range_numbers_are_400_with_the_field(db_url: str) -> None:
    async with running_hub(db_url) as hub, rest_session() as http:
        base = f"http://127.0.0.1:{hub.http_port}"
        for name, body, field, fragment in NUMBER_BODIES:
            status, payload = await post(http, base + V2_SEND, body, "application/json")
            assert status == 400, (name, payload)
            assert fields_of(payload) == [field], (name, payload)
            assert fragment in payload["errors"][0]["description"], (name, payload)
        for query, field, fragment in NUMBER_QUERIES:
            async with http.get(f"{base}{LIST}?{query}") as resp:
                payload = await resp.json()
            assert resp.status == 400, (query[:40], payload)
            assert fields_of(payload) == [field], (query[:40], payload)
            assert fragment in payload["errors"][0]["description"], (query[:40], payload)
        for name, body in NUMBERS_ACCEPTED:
            status, payload = await post(http, base + V2_SEND, body, "application/json")
            assert status == 202, (name, payload)

        # Over gRPC an integer is a varint; one longer than ten bytes is no number.
        async with channel_to(hub) as channel:
            raw = channel.unary_unary("/cim.v1.MessagingService/ListMessages")
            try:
                await raw(b"\x08" + b"\xff" * 11 + b"\x01")
                raise AssertionError("an 11-byte varint was accepted")
            except grpc.aio.AioRpcError as err:
                assert grpc_rejection(err) == (
                    "INVALID_ARGUMENT",
                    "MALFORMED_REQUEST",
                    ["pageSize"],
                )
        await assert_healthy(hub)
    print(
        f"\nnumbers: {len(NUMBER_BODIES)} bodies and {len(NUMBER_QUERIES)} queries refused"
        f" with the field, {len(NUMBERS_ACCEPTED)} accepted, 1 gRPC varint refused"
    )


# -- 2. JWT time claims --------------------------------------------------------------------

JWT_APP = "app-jwt"
JWT_KEY = bytes(range(32)) + b"-jwt-signing-key"
JWT_SECRET = base64.b64encode(JWT_KEY).decode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def raw_token(claims_json: str) -> str:
    """An HS256 token over claims given as JSON text, so any literal can be sent."""
    head = _b64(b'{"alg":"HS256","typ":"JWT"}')
    body = _b64(claims_json.encode())
    mac = hmac.new(JWT_KEY, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def claims(**literals: str) -> str:
    fields = {"iss": json.dumps(JWT_APP), "iat": str(int(time.time())), **literals}
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"


def bad_time_claims() -> list[tuple[str, str]]:
    now = int(time.time())
    cases = []
    for name in ("iat", "exp", "nbf"):
        for label, literal in [
            ("NaN", "NaN"),
            ("Infinity", "Infinity"),
            ("-Infinity", "-Infinity"),
            ("1e400", "1e400"),
            ("a string", f'"{now}"'),
            ("true", "true"),
            ("10**30", str(10**30)),
            ("5000 digits", "9" * 5000),
            ("a list", f"[{now}]"),
            ("an object", f'{{"t":{now}}}'),
            ("a fraction", f"{now}.5"),
        ]:
            cases.append((f"{name} {label}", claims(**{name: literal})))
    cases.append(("claims nested 3000 deep", claims(iat="[" * 3000 + "]" * 3000)))
    return cases


async def _grpc_auth(hub: Hub, token: str) -> tuple[str, str]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
        call = channel.unary_unary(
            "/cim.v1.MessagingService/ListMessages",
            request_serializer=m.ListMessagesRequest.SerializeToString,
            response_deserializer=m.ListMessagesResponse.FromString,
        )
        try:
            await call(
                m.ListMessagesRequest(page_size=1),
                metadata=(("authorization", f"Bearer {token}"),),
            )
        except grpc.aio.AioRpcError as err:
            code, reason, _ = grpc_rejection(err)
            return code, reason
    return "OK", ""


async def test_large_headers_get_the_same_answer_every_time(db_url: str) -> None:
    """Headers under the server's metadata limit reach authentication on every
    try; over it, every try is RESOURCE_EXHAUSTED. gRPC's own default refuses
    headers between 8 and 16 KiB at random, so 40 tries of 12 KiB would show it."""
    async with running_hub(db_url) as hub:
        under = "x" * (MAX_METADATA_BYTES * 3 // 4)
        answers = {await _grpc_auth(hub, under) for _ in range(40)}
        assert answers == {("UNAUTHENTICATED", "INVALID_TOKEN")}
        over = "x" * (MAX_METADATA_BYTES + 1024)
        answers = {(await _grpc_auth(hub, over))[0] for _ in range(10)}
        assert answers == {"RESOURCE_EXHAUSTED"}


async def _rest_auth(hub: Hub, token: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{hub.http_port}{LIST}?pageSize=1",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        return resp.status, (await resp.json()).get("messageKey", "")


async def test_jwt_time_claims_must_be_whole_numbers(db_url: str) -> None:
    async with running_hub(db_url, jwt_secrets=((JWT_APP, JWT_SECRET),)) as hub:
        now = int(time.time())
        good = [
            ("iat now", claims()),
            ("iat now.0", claims(iat=f"{now}.0")),
            ("exp and nbf whole", claims(exp=str(now + 60), nbf=str(now - 60))),
        ]
        for name, text in good:
            token = raw_token(text)
            assert await _grpc_auth(hub, token) == ("OK", ""), name
            assert (await _rest_auth(hub, token))[0] == 200, name
        refused = bad_time_claims()
        for name, text in refused:
            token = raw_token(text)
            assert await _grpc_auth(hub, token) == ("UNAUTHENTICATED", "INVALID_TOKEN"), name
            assert await _rest_auth(hub, token) == (401, "INVALID_TOKEN"), name
        await assert_healthy(hub)
    print(f"\njwt: {len(good)} tokens accepted, {len(refused)} refused on both transports")


# -- 3. gRPC bytes -------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | 0x80 if n else low)
        if not n:
            return bytes(out)


def deep_push(depth: int) -> bytes:
    """A PushData request whose data Struct is nested ``depth`` levels.

    Built on the wire by hand: the protobuf runtime will not build what it could not read.
    """
    data = b""
    for _ in range(depth):
        # Struct{fields: {"a": Value{struct_value: data}}}
        value = b"\x2a" + _varint(len(data)) + data
        entry = b"\x0a\x01a\x12" + _varint(len(value)) + value
        data = b"\x0a" + _varint(len(entry)) + entry
    head = c.PushDataRequest(id="obj-1", type="CUSTOMER").SerializeToString()
    return head + b"\x1a" + _varint(len(data)) + data


def batch_with_bad_utf8() -> bytes:
    good = m.SendBatchRequest(
        channel="sms",
        to=[m.BatchDestination(msisdn=["+447911123456"]), m.BatchDestination(msisdn=["XX"])],
    ).SerializeToString()
    return good.replace(b"XX", b"\xff\xfe")


# (name, method, raw request bytes, field)
GRPC_BYTES = [
    ("truncated", "/cim.v1.MessagingService/ListMessages", b"\x12\x05ab", "pageToken"),
    ("bad varint", "/cim.v1.MessagingService/ListMessages", b"\xff\xff\xff", "request"),
    ("bad UTF-8", "/cim.v1.MessagingService/ListMessages", b"\x12\x02\xff\xfe", "pageToken"),
    ("nested bad UTF-8", "/cim.v1.MessagingService/SendBatch", None, "to[1].msisdn[0]"),
    ("Struct 200 deep", "/cim.v1.CustomerService/PushData", None, "data"),
    ("bad UTF-8 in a map", "/cim.v1.MessagingService/SendBatch", None, "substitutions"),
    # Past the fields the server will search, the fault is the whole request's.
    ("fault after 20000 fields", "/cim.v1.MessagingService/ListMessages", None, "request"),
]


def grpc_cases() -> list[tuple[str, str, bytes, str]]:
    substitutions = m.SendBatchRequest(channel="sms", substitutions={"k": "ZZ"})
    built = {
        "nested bad UTF-8": batch_with_bad_utf8(),
        "Struct 200 deep": deep_push(200),
        "bad UTF-8 in a map": substitutions.SerializeToString().replace(b"ZZ", b"\xff\xfe"),
        "fault after 20000 fields": b"\x08\x01" * 20_000 + b"\x12\x05ab",
    }
    return [(n, meth, raw if raw is not None else built[n], f) for n, meth, raw, f in GRPC_BYTES]


async def test_undecodable_grpc_bytes_are_invalid_argument(db_url: str) -> None:
    async with running_hub(db_url) as hub, channel_to(hub) as channel:
        cases = grpc_cases()
        for name, method, raw, field in cases:
            call = channel.unary_unary(method)  # bytes in, bytes out
            try:
                await call(raw)
                raise AssertionError(f"{name}: accepted")
            except grpc.aio.AioRpcError as err:
                assert grpc_rejection(err) == ("INVALID_ARGUMENT", "MALFORMED_REQUEST", [field]), (
                    name,
                    err.details(),
                )
        stream = channel.unary_stream("/cim.v1.NotificationService/StreamNotifications")
        try:
            async for _ in stream(b"\xff\xff"):
                pass
            raise AssertionError("stream: accepted")
        except grpc.aio.AioRpcError as err:
            assert grpc_rejection(err)[:2] == ("INVALID_ARGUMENT", "MALFORMED_REQUEST")

        # Well-formed bytes still work, and so does a Struct as deep as decoders allow.
        ok = channel.unary_unary("/cim.v1.MessagingService/ListMessages")
        assert m.ListMessagesResponse.FromString(await ok(b"\x08\x01")) is not None
        push = channel.unary_unary("/cim.v1.CustomerService/PushData")
        assert await push(deep_push(20)) is not None

        # The REST façade calls the same handlers in process, through the new wrapper.
        async with rest_session() as http:
            base = f"http://127.0.0.1:{hub.http_port}"
            async with http.get(f"{base}{LIST}?pageSize=1") as resp:
                assert resp.status == 200
            nested: Any = 1
            for _ in range(200):
                nested = {"a": nested}
            body = json.dumps({"id": "obj-2", "type": "CUSTOMER", "data": nested}).encode()
            status, payload = await post(http, base + "/api/v1/data/push", body, "application/json")
            assert status == 400, payload
            assert fields_of(payload)[0].startswith("data.a.a"), payload
            status, payload = await post(
                http, base + V2_SEND, b'{"from": "\xff"}', "application/json"
            )
            assert (status, fields_of(payload)) == (400, ["body"]), payload
        await assert_healthy(hub)
    print(f"\ngrpc bytes: {len(cases)} unary and 1 stream request refused with the field")


# -- 4. Content-Type ------------------------------------------------------------------------

# (name, Content-Type or None for none, body, expected status)
CONTENT_TYPES = [
    ("text/plain", "text/plain", v2_body(), 415),
    ("form", "application/x-www-form-urlencoded", b"channel=sms&from=CNNECT", 415),
    ("multipart", "multipart/form-data; boundary=x", b"--x--", 415),
    ("octet-stream", "application/octet-stream", v2_body(), 415),
    ("no content type", None, v2_body(), 415),
    ("xml", "application/xml", b"<send/>", 415),
    ("json", "application/json", v2_body(), 202),
    ("json; charset", "application/json; charset=utf-8", v2_body(), 202),
    ("upper case", "Application/JSON", v2_body(), 202),
    ("+json", "application/vnd.cimhub.send+json", v2_body(), 202),
    # No body at all is "not given", whatever the type says; validation names the field.
    ("empty, no type", None, b"", 400),
]


async def test_json_routes_want_a_json_content_type(db_url: str) -> None:
    async with running_hub(db_url) as hub, rest_session() as http:
        base = f"http://127.0.0.1:{hub.http_port}"
        for name, content_type, body, expected in CONTENT_TYPES:
            status, payload = await post(http, base + V2_SEND, body, content_type)
            assert status == expected, (name, payload)
            if expected == 415:
                assert payload["statusKey"] == "INVALID_ARGUMENT", payload
                assert payload["messageKey"] == "UNSUPPORTED_MEDIA_TYPE", payload
                assert fields_of(payload) == ["content-type"], payload
                assert set(payload) >= {"status", "message", "timestamp", "traceid"}
        # A route without a body does not look at the type.
        async with http.get(
            f"{base}{LIST}?pageSize=1", headers={"Content-Type": "text/plain"}
        ) as r:
            assert r.status == 200
        # Provider callbacks take form bodies and are not JSON routes.
        status, _ = await _post_text(http, base + "/callbacks/sandbox-sms")
        assert status != 415 and status < 500, status
        # A v1 send without a body still reaches validation.
        status, payload = await post(http, base + V1_SEND, b"", None)
        assert status == 400 and payload["errors"], payload
        await assert_healthy(hub)
    print(f"\ncontent types: {len(CONTENT_TYPES)} cases, 2 bodiless routes unaffected")


async def _post_text(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with http.post(url, data=b"MessageSid=SM1&MessageStatus=delivered", headers=form) as r:
        return r.status, await r.text()


# -- 5. HTTP that does not parse -------------------------------------------------------
KEY_WITH_NUL = "x-api-key: not-for-the-log-0123456789\x00"
RAW_REQUESTS = [
    ("NUL in a header value", "X-Probe: a\x00b"),
    ("NUL in a header name", "X-Pro\x00be: a"),
    ("bare CR in a header value", "X-Probe: a\rb"),
    ("NUL in a key header", KEY_WITH_NUL),
]


async def _raw_get(port: int, header: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: hub\r\n{header}\r\n\r\n".encode("latin-1"))
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()  # the server closes after refusing
    finally:
        writer.close()


async def test_malformed_http_is_one_info_line_not_a_traceback(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_hub(db_url) as hub:
        for name, header in RAW_REQUESTS:
            caplog.clear()
            with caplog.at_level(logging.INFO):
                reply = await _raw_get(hub.http_port, header)
            assert reply.startswith(b"HTTP/1.") and b" 400 " in reply.split(b"\r\n")[0], name
            noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
            assert not noisy, f"{name}: {[r.getMessage() for r in noisy]}"
            refusals = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
            assert len(refusals) == 1 and refusals[0].levelno == logging.INFO, name
            assert "not-for-the-log" not in caplog.text, name
        await assert_healthy(hub)
