"""Log lines an operator can search: one per event of note, as JSON or as text.

An event is logged with `event(log, "dispatch.attempt", "...", message_id=...)`.
Its fields are chosen by the caller, never copied from a request, so a line
holds ids, names, codes and timings only: no credentials and no message text.
Every line carries the trace id of the span it was written under.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from server.telemetry.tracing import trace_id_of

FORMATS = ("text", "json")
_FIELDS = "cimhub_fields"
_EVENT = "cimhub_event"
# Always present in a JSON line, empty when they do not apply.
_STANDARD = ("trace_id", "message_id", "tenant", "channel")


def event(
    log: logging.Logger, name: str, text: str, *args: Any, level: int = logging.INFO, **fields: Any
) -> None:
    if log.isEnabledFor(level):
        log.log(level, text, *args, extra={_EVENT: name, _FIELDS: fields}, stacklevel=2)


class _TraceFilter(logging.Filter):
    """Stamps each record with the trace it was written under, before any handler runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, _FIELDS, None)
        if fields is None:
            fields = {}
            setattr(record, _FIELDS, fields)
        if not fields.get("trace_id"):
            fields["trace_id"] = trace_id_of()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, _FIELDS, None) or {}
        line: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, _EVENT, "log"),
            "msg": record.getMessage(),
        }
        for name in _STANDARD:
            line[name] = fields.get(name) or ""
        for name, value in fields.items():
            line.setdefault(name, value)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields: dict[str, Any] = getattr(record, _FIELDS, None) or {}
        extra = " ".join(f"{k}={v}" for k, v in fields.items() if v not in ("", None))
        if not extra:
            return text
        # The traceback, if any, stays last.
        head, sep, tail = text.partition("\n")
        return f"{head} {extra}{sep}{tail}"


def _iso(created: float) -> str:
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


def formatter(kind: str) -> logging.Formatter:
    if kind not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {kind!r}")
    return JsonFormatter() if kind == "json" else TextFormatter()


def setup(kind: str = "text", level: int | str = logging.INFO) -> logging.Handler:
    """One handler on the root logger, writing to stderr in the given format."""
    handler = logging.StreamHandler()
    install(handler, kind)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def install(handler: logging.Handler, kind: str) -> None:
    """Give handler the hub's format and the trace id of each record."""
    handler.setFormatter(formatter(kind))
    handler.addFilter(_TraceFilter())
