"""OTLP/HTTP span export with a lean encoder.

The SDK's exporter builds one protobuf object per span, attribute and link
and hashes each span's resource (a JSON dump) to group them; in a hub that
exports every span, that cost as much CPU as making the spans, on the same
interpreter as the requests. This module writes the same
ExportTraceServiceRequest bytes straight from the spans: field tags are
constants, attribute keys are encoded once, the resource and scope once per
batch. Sending (endpoint, headers, compression, timeout, retries) is still
the SDK exporter's, configured from the same OTEL_* variables.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind

_KIND = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
# SpanFlags: the context's is-remote bit is known (0x100), and set (0x200).
_FLAGS_LOCAL = struct.pack("<I", 0x100)
_FLAGS_REMOTE = struct.pack("<I", 0x300)
_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_SMALL = [bytes([n]) for n in range(128)]
# Not float: 0.0 == -0.0, but they encode differently.
_SCALARS = frozenset({str, int, bool})
_PAIRS_MAX = 4096


def _varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _SMALL[n]
    n &= 0xFFFF_FFFF_FFFF_FFFF  # int64 below zero takes ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    n = len(payload)
    return tag + (_SMALL[n] if n < 128 else _varint(n)) + payload


def _text(tag: bytes, value: str) -> bytes:
    return _field(tag, value.encode())


class Encoder:
    """Spans to ExportTraceServiceRequest bytes, keeping what repeats between batches."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}
        # (field, key, type, value) -> one encoded attribute. Most attributes repeat
        # (system, channel, outcome); ids do not, so the cache is emptied
        # whenever it fills rather than grown.
        self._pairs: dict[tuple[bytes, str, type, Any], bytes] = {}
        # id() -> (the object, so the id stays its own, and its bytes)
        self._made: dict[int, tuple[Any, bytes]] = {}

    def request(self, spans: Sequence[ReadableSpan]) -> bytes:
        # resource -> scope -> encoded spans, keyed by identity: a provider
        # hands every span the same two objects, and hashing a resource dumps
        # it to JSON.
        resources: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
        for span in spans:
            resource, scope = span.resource, span.instrumentation_scope
            scopes = resources.setdefault(id(resource), (resource, {}))[1]
            scopes.setdefault(id(scope), (scope, []))[1].append(_field(b"\x12", self.span(span)))
        out = []
        for resource, scopes in resources.values():
            body = _field(b"\x0a", self._resource(resource))
            for scope, encoded in scopes.values():
                scope_spans = _field(b"\x0a", self._scope(scope)) + b"".join(encoded)
                if scope is not None and scope.schema_url:
                    scope_spans += _text(b"\x1a", scope.schema_url)
                body += _field(b"\x12", scope_spans)
            if resource.schema_url:
                body += _text(b"\x1a", resource.schema_url)
            out.append(_field(b"\x0a", body))
        return b"".join(out)

    def span(self, span: ReadableSpan) -> bytes:
        ctx = span.get_span_context()
        assert ctx is not None
        parts = [
            b"\x0a\x10",
            ctx.trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            ctx.span_id.to_bytes(8, "big"),
        ]
        if ctx.trace_state:
            parts.append(_text(b"\x1a", _trace_state(ctx)))
        parent = span.parent
        if parent is not None:
            parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
        parts += (
            _text(b"\x2a", span.name),
            _KIND[span.kind],
            b"\x39",
            _FIXED64.pack(span.start_time or 0),
            b"\x41",
            _FIXED64.pack(span.end_time or 0),
        )
        parts.append(self._attributes(b"\x4a", span.attributes))
        if span.dropped_attributes:
            parts += (b"\x50", _varint(span.dropped_attributes))
        for ev in span.events:
            body = b"\x09" + _FIXED64.pack(ev.timestamp) + _text(b"\x12", ev.name)
            if ev.attributes:
                body += self._attributes(b"\x1a", ev.attributes)
            if ev.dropped_attributes:
                body += b"\x20" + _varint(ev.dropped_attributes)
            parts.append(_field(b"\x5a", body))
        if span.dropped_events:
            parts += (b"\x60", _varint(span.dropped_events))
        for link in span.links:
            lctx = link.context
            body = (
                b"\x0a\x10"
                + lctx.trace_id.to_bytes(16, "big")
                + b"\x12\x08"
                + lctx.span_id.to_bytes(8, "big")
            )
            if link.attributes:
                body += self._attributes(b"\x22", link.attributes)
            if link.dropped_attributes:
                body += b"\x28" + _varint(link.dropped_attributes)
            body += b"\x35" + (_FLAGS_REMOTE if lctx.is_remote else _FLAGS_LOCAL)
            parts.append(_field(b"\x6a", body))
        if span.dropped_links:
            parts += (b"\x70", _varint(span.dropped_links))
        status = span.status
        if status is not None:
            body = b""
            if status.description:
                body += _text(b"\x12", status.description)
            if status.status_code.value:
                body += b"\x18" + _varint(status.status_code.value)
            parts.append(_field(b"\x7a", body))
        parts += (
            b"\x85\x01",
            _FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL,
        )
        return b"".join(parts)

    # -- the parts that repeat ----------------------------------------------------------

    def _attributes(self, tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
        if not attributes:
            return b""
        keys, pairs = self._keys, self._pairs
        out = []
        for name, value in attributes.items():
            pair = (tag, name, value.__class__, value) if value.__class__ in _SCALARS else None
            encoded = pairs.get(pair) if pair is not None else None
            if encoded is None:
                key = keys.get(name)
                if key is None:
                    key = keys[name] = _text(b"\x0a", name)
                encoded = _field(tag, key + _field(b"\x12", _value(value, self)))
                if pair is not None:
                    if len(pairs) >= _PAIRS_MAX:
                        pairs.clear()
                    pairs[pair] = encoded
            out.append(encoded)
        return b"".join(out)

    def _resource(self, resource: Any) -> bytes:
        made = self._made.get(id(resource))
        if made is None or made[0] is not resource:
            made = self._made[id(resource)] = (
                resource,
                self._attributes(b"\x0a", resource.attributes),
            )
        return made[1]

    def _scope(self, scope: Any) -> bytes:
        if scope is None:
            return b""
        made = self._made.get(id(scope))
        if made is None or made[0] is not scope:
            body = _text(b"\x0a", scope.name) if scope.name else b""
            if scope.version:
                body += _text(b"\x12", scope.version)
            if scope.attributes:
                body += self._attributes(b"\x1a", scope.attributes)
            made = self._made[id(scope)] = (scope, body)
        return made[1]


def _value(value: Any, encoder: Encoder) -> bytes:
    """One AnyValue; a oneof, so even an empty or zero value is written."""
    if isinstance(value, str):
        return _text(b"\x0a", value)
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Mapping):
        return _field(b"\x32", encoder._attributes(b"\x0a", value))
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _value(v, encoder)) for v in value))
    raise TypeError(f"cannot export an attribute of type {type(value).__name__}")


def _trace_state(ctx: SpanContext) -> str:
    return ",".join(f"{key}={value}" for key, value in ctx.trace_state.items())


class SpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter, encoding with Encoder."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = Encoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        data = self._encoder.request(spans)
        if 0 < self._max_request_size < len(data):
            return SpanExportResult.FAILURE
        result = self._client.export(data)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
