"""The syntax of header fields a server may put on the wire (RFC 9110 §5), in one place.

Every response head bastion writes (final, informational, a 101) and every header rule
of the edge is checked here, with the same rule: a name is a token; a value holds no
control characters but horizontal tab (no CR, LF, NUL, DEL), so nothing an app or a
configuration sends can split a response or smuggle a header. Checked names and short
values are remembered (in bounded caches) so the common case costs one lookup.
"""

from __future__ import annotations

import re
from typing import Final

from bastion.protocol.types import InvalidResponse

__all__ = [
    "NOT_TRAILERS",
    "InvalidField",
    "accepts_trailers",
    "as_bytes",
    "check_header_name",
    "check_header_value",
    "known_header_names",
    "known_header_values",
    "valid_header_name",
    "valid_header_value",
]

_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# field-value: VCHAR, obs-text, SP and HTAB (RFC 9110 5.5); everything else is refused
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

#: checked names, mapped to their lower-case form (bounded)
known_header_names: Final[dict[bytes, bytes]] = {}
#: checked values of at most 64 bytes (bounded)
known_header_values: Final[set[bytes]] = set()


class InvalidField(InvalidResponse, ValueError):
    """A header name or value that must not reach the wire."""


def valid_header_name(name: object) -> bool:
    return isinstance(name, bytes) and _TOKEN.fullmatch(name) is not None


def valid_header_value(value: object) -> bool:
    return isinstance(value, bytes) and _BAD_VALUE.search(value) is None


def check_header_name(name: object) -> bytes:
    """The lower-case form of a valid header name; raises :class:`InvalidField`."""
    if not isinstance(name, bytes) or _TOKEN.fullmatch(name) is None:
        raise InvalidField(f"invalid header name {name!r}")
    lname = name.lower()
    if len(known_header_names) < 1024:
        known_header_names[name] = lname
    return lname


def check_header_value(name: object, value: object) -> None:
    """Raise :class:`InvalidField` unless ``value`` may be sent as header ``name``."""
    if not isinstance(value, bytes) or _BAD_VALUE.search(value) is not None:
        raise InvalidField(f"invalid value for header {name!r}: {value!r}")
    if len(value) <= 64 and len(known_header_values) < 4096:
        known_header_values.add(value)


def as_bytes(data: object) -> bytes:
    """Body data as ``bytes``: bytes-like objects (bytearray, memoryview) are accepted
    and copied; anything else raises ``TypeError`` with the same words in every build."""
    if data.__class__ is bytes:
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"body data must be bytes, not {type(data).__name__}")


#: fields never sent as trailers (RFC 9110 6.5.1): hop-by-hop and framing fields,
#: routing, request modifiers, authentication, response control, and those that
#: describe the content
NOT_TRAILERS: Final = frozenset(
    {
        b"age",
        b"authorization",
        b"cache-control",
        b"connection",
        b"content-encoding",
        b"content-length",
        b"content-range",
        b"content-type",
        b"cookie",
        b"date",
        b"expect",
        b"expires",
        b"host",
        b"if-match",
        b"if-modified-since",
        b"if-none-match",
        b"if-range",
        b"if-unmodified-since",
        b"keep-alive",
        b"location",
        b"max-forwards",
        b"pragma",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"range",
        b"retry-after",
        b"set-cookie",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"vary",
        b"warning",
        b"www-authenticate",
    }
)


def accepts_trailers(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether request ``headers`` say the client takes trailer fields (``TE: trailers``)."""
    for name, value in headers:
        if name == b"te":
            for token in value.split(b","):
                if token.split(b";", 1)[0].strip().lower() == b"trailers":
                    return True
    return False
