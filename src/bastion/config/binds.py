"""Listen addresses: parsing the ``server.bind`` strings into typed values.

Accepted forms::

    127.0.0.1:8000      0.0.0.0:80      :8000 (all IPv4 interfaces)
    [::1]:8000          [::]:8000
    localhost:8000      (a host name, resolved when the socket is made)
    unix:/run/app.sock  (a Unix domain socket)
    fd://3              (an inherited, already listening file descriptor)
    systemd             (every socket passed by systemd socket activation, LISTEN_FDS)
"""

from __future__ import annotations

from typing import Literal

import msgspec

BindKind = Literal["tcp", "unix", "fd", "systemd"]

BIND_FORMS = "HOST:PORT, [IPV6]:PORT, unix:/path, fd://N or systemd"


class BindSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One parsed listen address."""

    kind: BindKind
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1
    text: str = ""  # the string it was parsed from, for messages

    def __str__(self) -> str:
        return self.text


class BindError(ValueError):
    """A bind string that does not fit any accepted form."""


def parse_bind(text: str) -> BindSpec:
    """Parse one ``server.bind`` entry; raise :class:`BindError` saying what was expected."""
    s = text.strip()
    if not s:
        raise BindError(f"expected {BIND_FORMS}, got an empty string")
    if s == "systemd":
        return BindSpec(kind="systemd", text=s)
    if s.startswith("unix:"):
        path = s[len("unix:") :]
        if not path:
            raise BindError(f"expected a path after 'unix:', got {text!r}")
        return BindSpec(kind="unix", path=path, text=s)
    if s.startswith("fd://"):
        num = s[len("fd://") :]
        if not num.isdigit():
            raise BindError(f"expected fd://N with N a file descriptor number, got {text!r}")
        return BindSpec(kind="fd", fd=int(num), text=s)
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or s[end + 1 : end + 2] != ":":
            raise BindError(f"expected [IPV6]:PORT, got {text!r}")
        host, port_text = s[1:end], s[end + 2 :]
    else:
        host, sep, port_text = s.rpartition(":")
        if not sep:
            raise BindError(f"expected {BIND_FORMS}, got {text!r}")
        if ":" in host:
            raise BindError(f"IPv6 addresses need brackets, like [::1]:8000; got {text!r}")
        host = host or "0.0.0.0"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise BindError(f"expected a port number 0-65535, got {port_text!r} in {text!r}")
    return BindSpec(kind="tcp", host=host, port=int(port_text), text=s)
