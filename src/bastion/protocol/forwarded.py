"""The real client address behind trusted proxies.

A proxy in front of bastion (nginx, a cloud load balancer) connects from its own
address; it says who its client was in a header it adds: ``X-Forwarded-For`` (and
``X-Forwarded-Proto`` / ``X-Forwarded-Host``), or RFC 7239 ``Forwarded``. Anyone can
send those headers, so they are believed only as far as a chain of trusted proxies
vouches for them:

- the connection's peer must be trusted, or the headers are ignored entirely;
- the addresses are walked from the right (the one the nearest proxy added) to the
  left; each trusted address passes on to the next; the first untrusted one is the
  client;
- an entry that is not an address (garbage, ``unknown``, an obfuscated ``_name``) ends
  the walk: the client is then the last trusted hop, never a value the sender chose;
- several lines of the same header are one comma-separated list, in order.

Only the header family chosen in the configuration is read (``x-forwarded`` or
``forwarded``): a proxy that sets one family usually passes the other through from the
client untouched, and believing it would let the client choose its own address.

:meth:`TrustedProxies.resolve` is called by the connection where the request head is
built, so the router, access control, the gateways and the access log all see the same
client and scheme. Without trusted proxies it is never called.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final, Literal

from bastion.protocol.head import RequestHead

__all__ = ["ForwardedError", "TrustedProxies", "parse_address", "parse_forwarded"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Family = Literal["x-forwarded", "forwarded"]

_MAX_HOPS: Final = 64  # entries looked at, from the right; a longer list is cut there
_HOST_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]_"
)


class ForwardedError(ValueError):
    """A trusted-proxy entry that is not an address, a network, ``*`` or ``unix``."""


def _ip(text: str) -> Address | None:
    """``text`` as an address, IPv4-mapped IPv6 (``::ffff:10.0.0.1``) as IPv4."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return None
        mapped = addr.ipv4_mapped
        if mapped is not None:
            return mapped
    return addr


# hop text -> parsed (a proxy's clients repeat: parsing an address costs microseconds)
_PARSED: dict[str, tuple[str, int] | None] = {}


def parse_address(text: str) -> tuple[str, int] | None:
    """One hop as ``(address, port)``: ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``,
    ``[2001:db8::1]``, ``[2001:db8::1]:80``. Port 0 when none is given. Anything else
    (``unknown``, ``_hidden``, names, garbage) is None."""
    try:
        return _PARSED[text]
    except KeyError:
        pass
    found = _parse_address(text)
    if len(_PARSED) >= 4096:
        _PARSED.clear()
    _PARSED[text] = found
    return found


def _parse_address(text: str) -> tuple[str, int] | None:
    text = text.strip()
    port = 0
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if rest[:1] != ":" or not rest[1:].isdigit() or not rest[1:].isascii():
                return None
            port = int(rest[1:])
        if host.find(":") < 0:
            return None  # brackets are for IPv6 only
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit() or not port_text.isascii():
            return None
        port = int(port_text)
    else:
        host = text
    if port > 65535 or not host.isascii():
        return None
    addr = _ip(host)
    if addr is None:
        return None
    return str(addr), port


def _split_quoted(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside double-quoted strings."""
    parts: list[str] = []
    start = 0
    quoted = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _unquote(value: str) -> str | None:
    value = value.strip()
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"'):
            return None
        out = []
        i = 1
        while i < len(value) - 1:
            c = value[i]
            if c == "\\":
                i += 1
                if i >= len(value) - 1:
                    return None
                c = value[i]
            elif c == '"':
                return None
            out.append(c)
            i += 1
        return "".join(out)
    return value


def parse_forwarded(values: Iterable[str]) -> list[dict[str, str] | None]:
    """The elements of ``Forwarded`` header lines, left to right: each a dict of its
    lower-cased parameter names to their (unquoted) values, or None where an element does
    not parse (a repeated parameter, a bad quoted string, a pair without ``=``)."""
    elements: list[dict[str, str] | None] = []
    for line in values:
        for element in _split_quoted(line, ","):
            if not element.strip():
                continue  # empty list elements are allowed (RFC 9110 5.6.1)
            params: dict[str, str] | None = {}
            for pair in _split_quoted(element, ";"):
                if not pair.strip():
                    continue
                name, eq, raw = pair.partition("=")
                name = name.strip().lower()
                value = _unquote(raw) if eq else None
                if value is None or not name or params is None or name in params:
                    params = None
                    break
                params[name] = value
            elements.append(params)
    return elements


class TrustedProxies:
    """The proxies whose forwarding headers are believed, and how to read them."""

    __slots__ = ("_cache", "family", "networks", "trust_all", "trust_unix")

    def __init__(self, entries: Iterable[str], family: Family = "x-forwarded") -> None:
        networks: list[Network] = []
        self.trust_all = False
        self.trust_unix = False
        for entry in entries:
            for item in entry.split(","):
                item = item.strip()
                if not item:
                    continue
                if item == "*":
                    self.trust_all = True
                elif item == "unix":
                    self.trust_unix = True
                else:
                    try:
                        net = ipaddress.ip_network(item, strict=False)
                    except ValueError:
                        raise ForwardedError(
                            f"expected an IP address, a network like 10.0.0.0/8, "
                            f'"unix" or "*", got {item!r}'
                        ) from None
                    networks.append(net)
        self.networks: Final = tuple(networks)
        self.family: Final = family
        self._cache: dict[str, bool] = {}

    @property
    def enabled(self) -> bool:
        """Whether anything is trusted at all."""
        return bool(self.networks) or self.trust_all or self.trust_unix

    def trusts(self, host: str) -> bool:
        """Whether the address ``host`` is one of the trusted proxies."""
        if self.trust_all:
            return True
        known = self._cache.get(host)
        if known is not None:
            return known
        addr = _ip(host)
        found = addr is not None and any(addr in net for net in self.networks)
        if len(self._cache) < 1024:
            self._cache[host] = found
        return found

    def resolve(self, head: RequestHead) -> RequestHead:
        """``head`` with the client, scheme and host the trusted proxies vouch for (the
        same object when there is nothing to change)."""
        peer = head.client
        if peer is None:
            if not self.trust_unix and not self.trust_all:
                return head
        elif not self.trusts(peer[0]):
            return head
        if self.family == "forwarded":
            return self._resolve_forwarded(head)
        return self._resolve_x_forwarded(head)

    def _walk(self, hops: list[tuple[str, int] | None]) -> int:
        """The index in ``hops`` of the client, or -1 for the peer itself."""
        chosen = -1
        for i in range(len(hops) - 1, max(-1, len(hops) - 1 - _MAX_HOPS), -1):
            hop = hops[i]
            if hop is None:
                break  # the last trusted hop stands
            chosen = i
            if not self.trusts(hop[0]):
                break
        return chosen

    def _resolve_x_forwarded(self, head: RequestHead) -> RequestHead:
        fors: list[str] = []
        protos: list[str] = []
        host: bytes | None = None
        for name, value in head.headers:
            if name == b"x-forwarded-for":
                fors.extend(value.decode("latin-1").split(","))
            elif name == b"x-forwarded-proto":
                protos.extend(value.decode("latin-1").split(","))
            elif name == b"x-forwarded-host":
                host = value  # the last one, set by the nearest proxy
        hops = [parse_address(f) for f in fors if f.strip()]
        chosen = self._walk(hops)
        client = hops[chosen] if chosen >= 0 else None
        proto: str | None = None
        protos = [p.strip() for p in protos if p.strip()]
        if protos:
            # one per hop when every proxy appends; else the nearest proxy's
            proto = protos[chosen] if len(protos) == len(hops) and chosen >= 0 else protos[-1]
        return self._new_head(head, client, proto, host.decode("latin-1") if host else None)

    def _resolve_forwarded(self, head: RequestHead) -> RequestHead:
        lines = [v.decode("latin-1") for n, v in head.headers if n == b"forwarded"]
        if not lines:
            return head
        elements = parse_forwarded(lines)
        hops: list[tuple[str, int] | None] = []
        for element in elements:
            hops.append(None if element is None else parse_address(element.get("for", "")))
        chosen = self._walk(hops)
        if chosen < 0:
            # garbage next to us: keep the peer; its element may still be read for the
            # scheme only if it parsed
            element = elements[-1] if elements else None
            if element is None or hops[-1] is not None:
                return head
            return self._new_head(head, None, element.get("proto"), element.get("host"))
        element = elements[chosen]
        assert element is not None
        return self._new_head(head, hops[chosen], element.get("proto"), element.get("host"))

    @staticmethod
    def _new_head(
        head: RequestHead, client: tuple[str, int] | None, proto: str | None, host: str | None
    ) -> RequestHead:
        scheme: str | None = None
        if proto is not None:
            low = proto.strip().lower()
            if low == "https" or low == "http":
                scheme = low
        headers: list[tuple[bytes, bytes]] | None = None
        if host is not None:
            host = host.strip()
            if host and len(host) <= 255 and all(c in _HOST_CHARS for c in host):
                value = host.encode("ascii")
                headers = [(n, v) for n, v in head.headers if n != b"host"]
                headers.append((b"host", value))
        if client is None and scheme is None and headers is None:
            return head
        if client is not None and head.client is not None and client == head.client:
            client = None
        return head.replace(client=client, scheme=scheme, headers=headers)
