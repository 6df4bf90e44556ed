"""Line numbers of the keys in a TOML document, for error messages.

``tomllib`` parses a document into plain dicts and keeps no positions, so this module
scans the text itself: table headers (``[server]``), key/value lines (``bind = ...``) and
dotted keys (``server.bind = ...``). It only needs to be right for documents that
``tomllib`` already accepted, and it is only used to point at a line: where it finds
nothing, the message names the nearest enclosing key it did find, or no line at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

KeyPath = tuple[str, ...]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_PART = rf"\s*(?:{_BARE}|{_QUOTED})\s*"
_DOTTED = rf"{_PART}(?:\.{_PART})*"
_HEADER_RE = re.compile(rf"^\[\[?({_DOTTED})\]\]?\s*(?:#.*)?$")
_KEY_RE = re.compile(rf"^({_DOTTED})=")
_PART_RE = re.compile(rf"\s*({_BARE}|{_QUOTED})\s*")
_INLINE_KEY_RE = re.compile(rf"[{{,]\s*({_DOTTED})=")


def _split(dotted: str) -> KeyPath:
    parts = []
    for m in _PART_RE.finditer(dotted):
        part = m.group(1)
        if part[0] in "\"'":
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map each key path (``("server", "bind")``) to its 1-based line number."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    closing: str | None = None  # the delimiter of a multi-line string we are inside
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if closing is not None:
            if closing in line:
                closing = None
            continue
        if not line or line.startswith("#"):
            continue
        header = _HEADER_RE.match(line)
        if header:
            table = _split(header.group(1))
            lines.setdefault(table, number)
            continue
        m = _KEY_RE.match(line)
        if not m:
            continue
        path = table + _split(m.group(1))
        for i in range(len(table) + 1, len(path) + 1):
            lines.setdefault(path[:i], number)
        rest = line[m.end() :]
        # keys of an inline table written on the same line: app = { target = "x" }
        if rest.lstrip().startswith("{"):
            for inner in _INLINE_KEY_RE.finditer(rest):
                lines.setdefault(path + _split(inner.group(1)), number)
        for delim in ('"""', "'''"):
            if rest.count(delim) % 2 == 1:
                closing = delim
                break
    return lines


def line_of(lines: Mapping[KeyPath, int], path: Sequence[str]) -> int:
    """The line of ``path``, or of its nearest enclosing key that has one; 0 if none."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return 0
