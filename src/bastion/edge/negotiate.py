"""Choosing a content coding from a request's ``Accept-Encoding`` (RFC 9110 §12.5.3).

:func:`choose_encoding` is the whole rule; :class:`EncodingChooser` wraps it with a small
cache for one fixed list of codings, because clients send only a handful of distinct
``Accept-Encoding`` values and the answer for each never changes.

The rule, for each coding the server can produce:

- its weight is the ``q`` the client gave it by name, else the ``q`` of ``*``, else it is
  not acceptable; ``x-gzip`` counts as ``gzip``; ``q=0`` excludes;
- the coding with the highest weight wins; ties go to the earlier one in ``available``
  (the server's preference);
- when the client names ``identity`` with a weight higher than the winner's, the
  response goes out unencoded.

``None`` means "send the response as it is" (identity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

__all__ = ["EncodingChooser", "choose_encoding", "parse_accept_encoding"]

_ALIASES = {"x-gzip": "gzip", "x-compress": "compress"}


def _weight(params: str) -> float:
    """The ``q`` parameter of one list member (1.0 when absent, 0.0 when malformed)."""
    for param in params.split(";"):
        name, eq, value = param.partition("=")
        if eq and name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            if math.isnan(q) or q <= 0.0:
                return 0.0
            return 1.0 if q > 1.0 else q
    return 1.0


def parse_accept_encoding(accept_encoding: bytes) -> dict[str, float]:
    """Coding name (lower case) -> weight, for every member of the header.

    A coding named twice keeps its highest weight.
    """
    out: dict[str, float] = {}
    text = accept_encoding.decode("latin-1")
    for member in text.split(","):
        name, _, params = member.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        name = _ALIASES.get(name, name)
        q = _weight(params) if params else 1.0
        if q > out.get(name, -1.0):
            out[name] = q
    return out


def choose_encoding(accept_encoding: bytes, available: Sequence[str]) -> str | None:
    """The coding from ``available`` to use for a client that sent ``accept_encoding``.

    ``available`` lists the codings the server can produce, most preferred first (names
    as in ``Content-Encoding``: ``"zstd"``, ``"br"``, ``"gzip"``). Returns ``None`` when
    the response should go out unencoded.
    """
    if not accept_encoding:
        return None
    weights = parse_accept_encoding(accept_encoding)
    star = weights.get("*", 0.0)
    best: str | None = None
    best_q = 0.0
    for coding in available:
        q = weights.get(coding, star)
        if q > best_q:
            best, best_q = coding, q
    if best is None:
        return None
    identity = weights.get("identity")
    if identity is not None and identity > best_q:
        return None
    return best


class EncodingChooser:
    """:func:`choose_encoding` for one fixed ``available`` list, remembering answers.

    Call it with the raw ``Accept-Encoding`` value. The cache is bounded, so clients
    that send unusual values cannot make it grow without limit.
    """

    __slots__ = ("_available", "_cache")

    MAX_CACHED: ClassVar[int] = 256

    def __init__(self, available: Sequence[str]) -> None:
        self._available = tuple(available)
        self._cache: dict[bytes, str | None] = {}

    @property
    def available(self) -> tuple[str, ...]:
        return self._available

    def __call__(self, accept_encoding: bytes) -> str | None:
        try:
            return self._cache[accept_encoding]
        except KeyError:
            pass
        choice = choose_encoding(accept_encoding, self._available)
        if len(self._cache) < self.MAX_CACHED:
            self._cache[accept_encoding] = choice
        return choice
