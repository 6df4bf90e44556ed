"""Access control by client address: a route's ``access`` rules.

::

    [[routes]]
    path = "/admin/"
    app = "default"
    access = ["allow 10.0.0.0/8", "allow 2001:db8::/32", "deny all"]

Each rule is ``allow`` or ``deny`` followed by an address, a network (CIDR) or ``all``;
the rules are tried in order and the first that matches decides, as in nginx. A client
no rule matches is allowed (end the list with ``deny all`` to refuse the rest). A denied
client gets ``403 Forbidden``.

The address is the request head's ``client``: the real client behind trusted proxies
(:mod:`bastion.protocol.forwarded`, the PROXY protocol), the same one the app and the
access log see. An IPv4-mapped IPv6 peer (``::ffff:10.0.0.1``, a dual-stack socket)
matches IPv4 rules. A client on a Unix socket has no address: only ``all`` matches it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from bastion.config.schema import Config, RouteConfig
from bastion.edge.respond import FixedResponse
from bastion.edge.types import FilterResult, RouteMatch
from bastion.protocol.types import Exchange
from bastion.tasks import WorkerTasks

__all__ = ["FORBIDDEN", "AccessControl", "AccessRuleError", "access_filter", "parse_rule"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORBIDDEN = FixedResponse(403, b"Forbidden\n", "text/plain; charset=utf-8")

RULE_FORM = '"allow NETWORK", "deny NETWORK", "allow all" or "deny all"'


class AccessRuleError(ValueError):
    """A rule that does not parse."""


def parse_rule(text: str) -> tuple[bool, Network | None]:
    """``(allow, network)`` for one rule; network None for ``all``."""
    words = text.split()
    if len(words) != 2 or words[0] not in ("allow", "deny"):
        raise AccessRuleError(f"expected {RULE_FORM}, got {text!r}")
    allow = words[0] == "allow"
    if words[1] == "all":
        return allow, None
    try:
        net = ipaddress.ip_network(words[1], strict=False)
    except ValueError:
        raise AccessRuleError(
            f"expected an address or network like 10.0.0.0/8 or 2001:db8::/32 after "
            f"{words[0]!r}, got {words[1]!r}"
        ) from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:  # ::ffff:10.0.0.0/104 is 10.0.0.0/8
            net = ipaddress.IPv4Network((mapped, net.prefixlen - 96))
    return allow, net


class AccessControl:
    """A :data:`~bastion.edge.types.RequestFilter`: the route's rules, in order."""

    __slots__ = ("_cache", "rules")

    def __init__(self, rules: Sequence[str]) -> None:
        self.rules = tuple(parse_rule(r) for r in rules)
        self._cache: dict[str, bool] = {}

    def allows(self, host: str | None) -> bool:
        """Whether a client at address ``host`` (None: no address) may pass."""
        if host is None:
            for allow, net in self.rules:
                if net is None:
                    return allow
            return True
        known = self._cache.get(host)
        if known is not None:
            return known
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            addr = None
        if isinstance(addr, ipaddress.IPv6Address):
            if addr.scope_id:
                addr = ipaddress.IPv6Address(host.partition("%")[0])
            mapped = addr.ipv4_mapped
            if mapped is not None:
                addr = mapped
        result = True
        for allow, net in self.rules:
            if net is None or (addr is not None and addr in net):
                result = allow
                break
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[host] = result
        return result

    def __call__(self, exchange: Exchange, match: RouteMatch) -> FilterResult:
        client = exchange.head.client
        if self.allows(None if client is None else client[0]):
            return exchange
        FORBIDDEN(exchange, match)
        return None


def access_filter(
    config: Config, route: RouteConfig | None, tasks: WorkerTasks
) -> AccessControl | None:
    """The route's access control, or None when it has no rules."""
    if route is None or not route.access:
        return None
    return AccessControl(route.access)
