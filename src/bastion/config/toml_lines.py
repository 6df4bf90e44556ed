"""Line numbers of the keys in a TOML document, for error messages.

``tomllib`` parses a document into plain dicts and keeps no positions, so this module
scans the text itself: table headers (``[server]``), key/value lines (``bind = ...``) and
dotted keys (``server.bind = ...``). It only needs to be right for documents that
``tomllib`` already accepted, and it is only used to point at a line: where it finds
nothing, the message names the nearest enclosing key it did find, or no line at all.

An array of tables (``[[routes]]``) counts its elements: the keys of the third one are
found under ``("routes", 2, ...)``, and a sub-table header such as ``[routes.static]``
belongs to the element last opened, as in TOML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

KeyPath = tuple[str | int, ...]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_PART = rf"\s*(?:{_BARE}|{_QUOTED})\s*"
_DOTTED = rf"{_PART}(?:\.{_PART})*"
_HEADER_RE = re.compile(rf"^(\[\[?)({_DOTTED})\]\]?\s*(?:#.*)?$")
_KEY_RE = re.compile(rf"^({_DOTTED})=")
_PART_RE = re.compile(rf"\s*({_BARE}|{_QUOTED})\s*")
_INLINE_KEY_RE = re.compile(rf"[{{,]\s*({_DOTTED})=")


def _split(dotted: str) -> tuple[str, ...]:
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
    arrays: dict[KeyPath, int] = {}  # array of tables -> index of its last element
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
            table = _resolve(_split(header.group(2)), arrays)
            if header.group(1) == "[[":
                index = arrays.get(table, -1) + 1
                arrays[table] = index
                lines.setdefault(table, number)
                table = (*table, index)
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


def _resolve(path: tuple[str, ...], arrays: Mapping[KeyPath, int]) -> KeyPath:
    """Put the index of the current element after each array of tables on ``path``."""
    out: KeyPath = ()
    for i, part in enumerate(path):
        out = (*out, part)
        if out in arrays and i < len(path) - 1:
            out = (*out, arrays[out])
    return out


def line_of(lines: Mapping[KeyPath, int], path: Sequence[str | int]) -> int:
    """The line of ``path``, or of its nearest enclosing key that has one; 0 if none."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return 0
