"""One server line of ``[upstreams.NAME] servers``, parsed.

``HOST:PORT``, ``[V6]:PORT``, ``unix:/path``, ``http://HOST[:PORT]`` (port 80 when a
URL has none) or ``https://HOST[:PORT]`` (TLS, port 443), then optional ``weight=N``,
``max_conns=N`` and ``backup``, separated by spaces, as in nginx's ``server`` directive.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

__all__ = ["ServerAddressError", "ServerSpec", "parse_server"]

_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


class ServerAddressError(ValueError):
    """A server line that is not one of the accepted forms."""


class ServerSpec(NamedTuple):
    """Where a server is and how much of the traffic it takes."""

    host: str  # a name, an IPv4 or IPv6 address (no brackets); "" for a Unix socket
    port: int  # 0 for a Unix socket
    unix_path: str  # "" unless a Unix socket
    weight: int
    max_conns: int  # 0 = no limit
    backup: bool
    tls: bool = False  # an https:// server

    @property
    def label(self) -> str:
        """How logs and error bodies name the server."""
        if self.unix_path:
            return f"unix:{self.unix_path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def authority(self) -> bytes:
        """What a ``Host`` header naming this server holds."""
        return b"localhost" if self.unix_path else self.label.encode("ascii")


EXPECTED = (
    'expected "HOST:PORT", "[IPV6]:PORT", "unix:/path", "http://HOST[:PORT]" or '
    '"https://HOST[:PORT]", '
    "then optionally weight=N, max_conns=N, backup"
)


def parse_server(text: str) -> ServerSpec:
    """Parse one server line; raise :class:`ServerAddressError` saying what is wrong."""
    words = text.split()
    if not words:
        raise ServerAddressError(f"{EXPECTED}, got an empty string")
    address, options = words[0], words[1:]
    weight, max_conns, backup = 1, 0, False
    for option in options:
        name, sep, value = option.partition("=")
        if name == "backup" and not sep:
            backup = True
        elif name in ("weight", "max_conns") and sep and value.isdigit():
            number = int(value)
            if name == "weight":
                if not 1 <= number <= 1000:
                    raise ServerAddressError(f"weight must be from 1 to 1000, got {value}")
                weight = number
            else:
                max_conns = number
        else:
            raise ServerAddressError(f"unknown option {option!r} ({EXPECTED})")
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            raise ServerAddressError(f"{EXPECTED}, got {text!r} (no socket path)")
        return ServerSpec("", 0, path, weight, max_conns, backup)
    default_port = 0
    tls = False
    scheme, sep, rest = address.partition("://")
    if sep:
        if scheme == "http":
            default_port = 80
        elif scheme == "https":
            default_port, tls = 443, True
        else:
            raise ServerAddressError(
                f"{EXPECTED}, got {text!r} (a server URL is http:// or https://)"
            )
        address = rest.rstrip("/")
        if "/" in address:
            raise ServerAddressError(f"{EXPECTED}, got {text!r} (a server URL has no path)")
    host, port = _split_host_port(address, default_port, text)
    return ServerSpec(host, port, "", weight, max_conns, backup, tls)


def _split_host_port(address: str, default_port: int, text: str) -> tuple[str, int]:
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise ServerAddressError(f"{EXPECTED}, got {text!r} (no closing bracket)")
        host, rest = address[1:end], address[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ServerAddressError(f"{EXPECTED}, got {text!r} (not an IPv6 address)") from None
        if rest and not rest.startswith(":"):
            raise ServerAddressError(f"{EXPECTED}, got {text!r}")
        port_text = rest[1:]
    else:
        if address.count(":") > 1:
            raise ServerAddressError(f"{EXPECTED}, got {text!r} (put an IPv6 address in [])")
        host, _, port_text = address.partition(":")
        if not _HOST_RE.fullmatch(host):
            raise ServerAddressError(f"{EXPECTED}, got {text!r} (not a host name or address)")
    if not port_text:
        if not default_port:
            raise ServerAddressError(f"{EXPECTED}, got {text!r} (no port)")
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ServerAddressError(f"{EXPECTED}, got {text!r} (the port must be 1-65535)")
    return host, int(port_text)
