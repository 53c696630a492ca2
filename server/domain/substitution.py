"""$(name) placeholders, rendered the same way for content and templates."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\$\(([A-Za-z0-9_.\-]+)\)")


class MissingVariables(ValueError):
    def __init__(self, names: list[str]) -> None:
        super().__init__("missing substitution: " + ", ".join(names))
        self.names = names


def render_text(text: str, values: Mapping[str, str], *, blank_missing: bool = False) -> str:
    if "$(" not in text:  # most texts have no variables; a batch renders one per destination
        return text
    missing: list[str] = []

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        if blank_missing:
            return ""
        missing.append(name)
        return match.group(0)

    rendered = PLACEHOLDER.sub(fill, text)
    if missing:
        raise MissingVariables(sorted(set(missing)))
    return rendered


def render_tree(value: Any, values: Mapping[str, str], *, blank_missing: bool = False) -> Any:
    """Render every string in a JSON-like tree; report all missing names at once."""
    missing: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            try:
                return render_text(node, values, blank_missing=blank_missing)
            except MissingVariables as exc:
                missing.update(exc.names)
                return node
        if isinstance(node, Mapping):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    rendered = walk(value)
    if missing:
        raise MissingVariables(sorted(missing))
    return rendered
