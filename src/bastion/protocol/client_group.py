"""Which client a per-client limit counts an address against.

An IPv4 address is one client. An IPv6 client is usually given a whole /64 (RFC 6177:
a site gets /48 to /64), so it can pick a new address for every connection or request
and would get past any limit counted per address. Per-client limits (the connections
of ``limits.max_connections_per_client``, the address-keyed rate limits, the password
checks of ``auth_basic``) therefore count an IPv6 address against its prefix of
``limits.client_ipv6_prefix`` bits (64 by default; 128: each address). An IPv4-mapped
IPv6 address (``::ffff:10.0.0.1``, a dual-stack socket's view of an IPv4 peer) counts as
the IPv4 address it holds. The app, the access log and access rules still see the
address itself.
"""

from __future__ import annotations

import ipaddress
from typing import Final

__all__ = ["client_group"]

_KEPT: Final = 4096
_GROUPS: dict[tuple[str, int], str] = {}


def client_group(host: str, ipv6_prefix: int) -> str:
    """The name of the client ``host`` counts as: ``host`` itself for IPv4, else its
    IPv6 network of ``ipv6_prefix`` bits (``2001:db8:1:2::/64``)."""
    if host.find(":") < 0:
        return host  # IPv4 (or a unix socket's name): one client
    key = (host, ipv6_prefix)
    group = _GROUPS.get(key)
    if group is not None:
        return group
    try:
        addr = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    mapped = addr.ipv4_mapped
    if mapped is not None:
        group = str(mapped)
    elif ipv6_prefix >= 128:
        group = str(addr)
    else:
        net = ipaddress.IPv6Network((addr, ipv6_prefix), strict=False)
        group = f"{net.network_address}/{ipv6_prefix}"
    if len(_GROUPS) >= _KEPT:
        _GROUPS.clear()
    _GROUPS[key] = group
    return group
