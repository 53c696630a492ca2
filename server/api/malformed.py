"""Request bytes that do not decode are the caller's error: INVALID_ARGUMENT, not UNKNOWN.

grpc.aio answers UNKNOWN when a request deserializer raises, before any
interceptor or service sees the call. Here each deserializer is wrapped so that
a failure yields a ``Malformed`` marker instead, and the method behaviour
refuses the marker with a BadRequest naming the field the bytes broke in.
This interceptor runs first, so no other interceptor is handed a marker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from server.api.errors import to_status
from server.api.handlers import WrappingInterceptor, forward, rewrap
from server.domain.errors import Code, DomainError, FieldViolation

__all__ = ["Malformed", "MalformedRequestInterceptor", "locate_fault"]

# upb refuses messages nested deeper than this.
MAX_DEPTH = 100
# Finding the field re-reads the bytes in Python, which is far slower than the
# parser: past this many fields the fault is reported for the whole request, so
# a large undecodable message costs no more than a small one.
MAX_RECORDS = 10_000
_FD = FieldDescriptor
# Repeated fields of these types take one length-delimited record per item.
_ONE_PER_RECORD = frozenset({_FD.TYPE_MESSAGE, _FD.TYPE_STRING, _FD.TYPE_BYTES})


class Malformed:
    """Stands in for a request whose bytes did not decode."""

    __slots__ = ("description", "field")

    def __init__(self, field: str, description: str) -> None:
        self.field = field
        self.description = description

    def error(self) -> DomainError:
        return DomainError(
            Code.INVALID_ARGUMENT,
            "MALFORMED_REQUEST",
            f"{self.field}: {self.description}",
            (FieldViolation(self.field, self.description),),
        )


class _Fault(Exception):
    def __init__(self, path: str, description: str) -> None:
        super().__init__(description)
        self.path = path
        self.description = description


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def _varint(data: memoryview, pos: int, path: str) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise _Fault(path, "truncated or malformed varint")


def _take(data: memoryview, pos: int, size: int, path: str) -> int:
    if pos + size > len(data):
        raise _Fault(path, "truncated")
    return pos + size


class _TooLong(Exception):
    pass


def _walk(data: memoryview, desc: Descriptor, path: str, depth: int, budget: list[int]) -> None:
    """Raise a ``_Fault`` for the first thing in ``data`` that ``desc`` cannot take."""
    if depth > MAX_DEPTH:
        raise _Fault(path, "nested too deeply")
    seen: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        budget[0] -= 1
        if budget[0] < 0:
            raise _TooLong
        tag, pos = _varint(data, pos, path)
        number, wire = tag >> 3, tag & 7
        field = desc.fields_by_number.get(number)
        where = _field_path(desc, field, path, number, seen, wire)
        if number == 0:
            raise _Fault(where, "field number 0")
        if wire == 0:
            _, pos = _varint(data, pos, where)
        elif wire == 1:
            pos = _take(data, pos, 8, where)
        elif wire == 5:
            pos = _take(data, pos, 4, where)
        elif wire == 2:
            size, pos = _varint(data, pos, where)
            end = _take(data, pos, size, where)
            _check_delimited(data[pos:end], field, where, depth, budget)
            pos = end
        else:
            # Groups are long deprecated and no cim.v1 message has one.
            raise _Fault(where, f"unsupported wire type {wire}")


def _field_path(
    desc: Descriptor,
    field: FieldDescriptor | None,
    path: str,
    number: int,
    seen: dict[int, int],
    wire: int,
) -> str:
    # Inside Struct and friends the wire layout is not the JSON a client wrote,
    # and a map entry is one value of its map: both report the enclosing field.
    if desc.file.package == "google.protobuf" or desc.GetOptions().map_entry:
        return path
    if field is None:
        return _join(path, str(number))
    where = _join(path, field.json_name)
    if field.is_repeated and wire == 2 and field.type in _ONE_PER_RECORD:
        index = seen.get(number, 0)
        seen[number] = index + 1
        if not _is_map(field):
            where = f"{where}[{index}]"
    return where


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry


def _check_delimited(
    chunk: memoryview, field: FieldDescriptor | None, path: str, depth: int, budget: list[int]
) -> None:
    if field is None:
        return
    if field.type == _FD.TYPE_STRING:
        try:
            bytes(chunk).decode("utf-8")
        except UnicodeDecodeError:
            raise _Fault(path, "not valid UTF-8") from None
    elif field.type == _FD.TYPE_MESSAGE and field.message_type is not None:
        _walk(chunk, field.message_type, path, depth + 1, budget)


def locate_fault(data: bytes, desc: Descriptor) -> tuple[str, str] | None:
    """(JSON-style field path, what is wrong) for bytes that fail to decode as ``desc``."""
    try:
        # Slices of a memoryview share the bytes, so nesting does not copy them.
        _walk(memoryview(data), desc, "", 1, [MAX_RECORDS])
    except _Fault as fault:
        return fault.path or "request", fault.description
    except _TooLong:
        return None
    return None


def _safe(deserializer: Callable[[bytes], Any] | None, desc: Descriptor | None) -> Any:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, RecursionError, UnicodeDecodeError) as exc:
            where = locate_fault(data, desc) if desc is not None else None
            return Malformed(*(where or ("request", f"does not decode: {exc}")))

    return decode


def _descriptor(deserializer: Any) -> Descriptor | None:
    # Generated stubs register ``RequestType.FromString``.
    owner = getattr(deserializer, "__self__", None)
    desc = getattr(owner, "DESCRIPTOR", None)
    return desc if isinstance(desc, Descriptor) else None


def _unary(inner: Callable[..., Any]) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            await context.abort_with_status(to_status(request.error()))
        return await inner(request, context)

    return call


def _stream(inner: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Malformed):
            await context.abort_with_status(to_status(request.error()))
        async for item in forward(inner(request, context)):
            yield item

    return call


class MalformedRequestInterceptor(WrappingInterceptor):
    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        decode = _safe(handler.request_deserializer, _descriptor(handler.request_deserializer))
        return rewrap(handler, unary=_unary, stream=_stream, request_deserializer=decode)
