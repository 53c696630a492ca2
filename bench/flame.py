"""Flame graphs as standalone SVG from py-spy's collapsed stacks (`--format raw`).

    .venv/bin/python bench/flame.py PROFILE.folded OUT.svg [--title TEXT]

One box per frame, its width the share of samples whose stack passes through
it, callers below callees; hovering a box shows the frame and its share. Frames
of the project are warm, the standard library grey, other packages blue, so the
hub's own code stands out. No browser script is needed to read it.
"""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

WIDTH = 1600
ROW = 17
MIN_PX = 0.6  # narrower boxes are left out; their samples still count in their parent


@dataclass
class Node:
    name: str
    samples: int = 0
    children: dict[str, Node] = field(default_factory=dict)


def parse(lines: Iterable[str]) -> Node:
    root = Node("all")
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        root.samples += n
        node = root
        for frame in stack.split(";"):
            node = node.children.setdefault(frame, Node(frame))
            node.samples += n
    return root


def depth(node: Node) -> int:
    return 1 + max((depth(c) for c in node.children.values()), default=0)


def colour(name: str) -> str:
    if "server/" in name or "adapters/" in name:
        return "#f28e2b"
    if "site-packages" in name or "/" not in name.split("(")[-1]:
        return "#76b7e8"
    return "#c8c8c8"


def render(root: Node, title: str) -> str:
    rows = depth(root)
    height = (rows + 2) * ROW
    scale = WIDTH / max(1, root.samples)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>',
        f'<text x="4" y="13">{html.escape(title)} ({root.samples:,} samples)</text>',
    ]

    def box(node: Node, x: float, level: int) -> None:
        w = node.samples * scale
        if w < MIN_PX:
            return
        y = height - (level + 1) * ROW
        share = 100.0 * node.samples / root.samples
        label = html.escape(node.name)
        out.append(
            f"<g><title>{label} — {share:.1f}%</title>"
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW - 1}" '
            f'fill="{colour(node.name)}" stroke="#fff" stroke-width="0.5"/>'
        )
        chars = int(w / 6.6)
        if chars >= 4:
            text = node.name if len(node.name) <= chars else node.name[: chars - 2] + ".."
            out.append(f'<text x="{x + 2:.1f}" y="{y + ROW - 5}">{html.escape(text)}</text>')
        out.append("</g>")
        cx = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            box(child, cx, level + 1)
            cx += child.samples * scale

    box(root, 0.0, 0)
    out.append("</svg>")
    return "\n".join(out)


def write_svg(folded: Path, svg: Path, title: str) -> None:
    svg.write_text(render(parse(folded.read_text().splitlines()), title))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folded", type=Path)
    parser.add_argument("svg", type=Path)
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    write_svg(args.folded, args.svg, args.title or args.folded.stem)
    return 0


if __name__ == "__main__":
    sys.exit(main())
