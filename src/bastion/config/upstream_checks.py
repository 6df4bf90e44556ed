"""Checks on ``[upstreams.NAME]`` and the routes' ``proxy`` tables.

Every server line must parse; a group needs at least one server that is not a backup;
a route's ``proxy.upstream`` must name a group; its ``host`` must be a header value.
Like :mod:`.checks`, each function yields messages and raises nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator

from bastion.config.errors import Source, problem
from bastion.config.schema import Config, UpstreamConfig
from bastion.config.tables import route_label
from bastion.config.toml_write import toml_value
from bastion.protocol.fields import valid_header_value
from bastion.upstream.address import ServerAddressError, parse_server

Src = Callable[[str], Source]


def check_upstreams(config: Config, src: Src) -> Iterator[str]:
    for name, upstream in config.upstreams.items():
        label = f"upstreams.{name}.servers"
        if not upstream.servers:
            yield problem(src(label), label, "expected at least one server, got []")
            continue
        primaries = bad = 0
        for text in upstream.servers:
            try:
                spec = parse_server(text)
            except ServerAddressError as exc:
                yield problem(src(label), label, str(exc))
                bad += 1
                continue
            primaries += not spec.backup
        if primaries == 0 and not bad:
            yield problem(src(label), label, "expected at least one server that is not a backup")
        hash_on = upstream.hash_on
        kind, sep, what = hash_on.partition(":")
        if not (
            hash_on in ("client", "path") or (sep and kind in ("header", "cookie") and _token(what))
        ):
            key = f"upstreams.{name}.hash_on"
            yield problem(
                src(key),
                key,
                'expected "client", "path", "header:NAME" or "cookie:NAME", '
                f"got {toml_value(hash_on)}",
            )
        if upstream.sticky_cookie and not _token(upstream.sticky_cookie):
            key = f"upstreams.{name}.sticky_cookie"
            yield problem(
                src(key), key, f"expected a cookie name, got {toml_value(upstream.sticky_cookie)}"
            )
        path = upstream.health_path
        if path and (not path.startswith("/") or not _token(path.replace("/", "a"), "?=&%.~")):
            key = f"upstreams.{name}.health_path"
            yield problem(
                src(key), key, f'expected a path such as "/health", got {toml_value(path)}'
            )
        yield from _check_tls_files(name, upstream, src)


def _token(text: str, extra: str = "") -> bool:
    """Letters, digits and !#$%&'*+-.^_`|~ (an RFC 9110 token), plus ``extra``."""
    allowed = "!#$%&'*+-.^_`|~" + extra
    return bool(text) and all(c.isascii() and (c.isalnum() or c in allowed) for c in text)


def _check_tls_files(name: str, upstream: UpstreamConfig, src: Src) -> Iterator[str]:
    for key in ("tls_ca_file", "tls_certfile", "tls_keyfile"):
        path = getattr(upstream, key)
        if path and not os.path.isfile(path):
            label = f"upstreams.{name}.{key}"
            yield problem(src(label), label, f"no such file: {path}")
    if upstream.tls_keyfile and not upstream.tls_certfile:
        label = f"upstreams.{name}.tls_keyfile"
        yield problem(src(label), label, "a key needs its certificate: set tls_certfile too")


# an Upgrade protocol name: a token, optionally "/version" (RFC 9110 7.8)
_PROTOCOL = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(/[!#$%&'*+\-.^_`|~0-9A-Za-z]+)?")


def check_proxy_route(config: Config, index: int, src: Src) -> Iterator[str]:
    route = config.routes[index]
    proxy = route.proxy
    if proxy is None:
        return
    label = route_label(index, "proxy", "upstream")
    if proxy.upstream not in config.upstreams:
        names = ", ".join(config.upstreams) or "none are defined"
        yield problem(
            src(label),
            label,
            f"no upstream named {toml_value(proxy.upstream)} (the upstreams: {names}); "
            "define it in an [upstreams.NAME] table",
        )
    if proxy.host:
        try:
            ok = valid_header_value(proxy.host.encode("latin-1"))
        except UnicodeEncodeError:
            ok = False
        if not ok or proxy.host.strip() != proxy.host:
            host_label = route_label(index, "proxy", "host")
            yield problem(src(host_label), host_label, "expected a host name for the Host header")
    if proxy.strip_prefix and route.match != "prefix":
        flag_label = route_label(index, "proxy", "strip_prefix")
        yield problem(src(flag_label), flag_label, 'needs a prefix route (match = "prefix")')
    for name in proxy.upgrades:
        if not _PROTOCOL.fullmatch(name):
            up_label = route_label(index, "proxy", "upgrades")
            yield problem(
                src(up_label),
                up_label,
                f"expected protocol names as Upgrade carries them (websocket), got "
                f"{toml_value(name)}",
            )
