"""$(name) placeholders, rendered the same way for content and templates.

Rendering builds its output piece by piece and stops as soon as a cap is
passed: a short text that names a long value many times must not cost its
full rendered size before it is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\$\(([A-Za-z0-9_.\-]+)\)")


class MissingVariables(ValueError):
    def __init__(self, names: list[str]) -> None:
        super().__init__("missing substitution: " + ", ".join(names))
        self.names = names


class TooLong(ValueError):
    """A rendering passed its cap. ``key`` is the top-level key of the tree
    whose own cap was passed, or "" when it was the cap on the whole."""

    def __init__(self, limit: int, key: str = "") -> None:
        super().__init__(f"longer than {limit} characters once its variables are filled in")
        self.limit = limit
        self.key = key


def render_text(
    text: str,
    values: Mapping[str, str],
    *,
    blank_missing: bool = False,
    keep_missing: bool = False,
    limit: int | None = None,
) -> str:
    """``keep_missing`` leaves unknown placeholders as written; ``limit`` is in characters."""
    if "$(" not in text:  # most texts have no variables; a batch renders one per destination
        if limit is not None and len(text) > limit:
            raise TooLong(limit)
        return text
    missing: list[str] = []
    parts: list[str] = []
    size = start = 0
    for match in PLACEHOLDER.finditer(text):
        name = match.group(1)
        if name in values:
            value = values[name]
        elif keep_missing:
            value = match.group(0)
        elif blank_missing:
            value = ""
        else:
            missing.append(name)
            value = match.group(0)
        literal = text[start : match.start()]
        size += len(literal) + len(value)
        if limit is not None and size > limit:
            raise TooLong(limit)
        parts += (literal, value)
        start = match.end()
    tail = text[start:]
    if limit is not None and size + len(tail) > limit:
        raise TooLong(limit)
    if missing:
        raise MissingVariables(sorted(set(missing)))
    parts.append(tail)
    return "".join(parts)


def render_tree(
    value: Any,
    values: Mapping[str, str],
    *,
    blank_missing: bool = False,
    limit: int | None = None,
    key_limits: Mapping[str, int] | None = None,
) -> Any:
    """Render every string in a JSON-like tree; report all missing names at once.

    ``limit`` caps the characters of all rendered strings together, and
    ``key_limits`` the string under each named top-level key.
    """
    missing: set[str] = set()
    own_limits = key_limits or {}
    room = limit

    def text(node: str, key: str) -> str:
        nonlocal room
        own = own_limits.get(key) if key else None
        by_key = own is not None and (room is None or own <= room)
        cap = own if by_key else room
        try:
            rendered = render_text(node, values, blank_missing=blank_missing, limit=cap)
        except MissingVariables as exc:
            missing.update(exc.names)
            return node
        except TooLong:
            if by_key:
                raise TooLong(own or 0, key) from None
            raise TooLong(limit or 0) from None
        if room is not None:
            room -= len(rendered)
        return rendered

    def walk(node: Any, key: str = "") -> Any:
        if isinstance(node, str):
            return text(node, key)
        if isinstance(node, Mapping):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    if isinstance(value, Mapping):
        rendered = {k: walk(v, k) for k, v in value.items()}
    else:
        rendered = walk(value)
    if missing:
        raise MissingVariables(sorted(missing))
    return rendered
