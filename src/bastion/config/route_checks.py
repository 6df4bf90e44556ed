"""Checks on ``[apps.NAME]``, ``[[routes]]`` and the response header rules.

Each route needs exactly one handler; the app it names must exist; its path must be a
path (or a regex that compiles); its host a host name or ``*.domain``; its methods
upper-case tokens; a static root a directory; a redirect's placeholders known; and every
header name and value something that can go on the wire. Like :mod:`.checks`, each
function yields messages and raises nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Set

from bastion.config.auth_checks import check_auth
from bastion.config.errors import Source, problem
from bastion.config.ratelimit_checks import check_route_limits
from bastion.config.schema import Config, HeadersConfig, RouteConfig
from bastion.config.tables import DEFAULT_APP, HANDLER_TABLES, route_label
from bastion.config.toml_write import toml_value
from bastion.edge.access import AccessRuleError, parse_rule
from bastion.protocol.fields import valid_header_name, valid_header_value

Src = Callable[[str], Source]

TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
METHOD_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Z]+")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_RE = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*\.?")
PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
REDIRECT_NAMES = frozenset({"path", "query"})


def bad_header_value(value: str) -> bool:
    """Whether ``value`` cannot be sent as a header value (control characters, non-Latin-1),
    by the rule every response head is checked by (:mod:`bastion.protocol.fields`)."""
    try:
        return not valid_header_value(value.encode("latin-1"))
    except UnicodeEncodeError:
        return True


def bad_header_name(name: str) -> bool:
    """Whether ``name`` is not a header name (a token), by the wire's rule."""
    return not valid_header_name(name.encode("latin-1", "replace"))


def check_routes(config: Config, src: Src, *, require_app: bool, skip: Set[int]) -> Iterator[str]:
    for i, route in enumerate(config.routes):
        if i in skip:
            continue
        yield from _check_route(config, i, route, src, require_app)


def _check_route(
    config: Config, i: int, route: RouteConfig, src: Src, require_app: bool
) -> Iterator[str]:
    def at(*names: str) -> tuple[Source, str]:
        label = route_label(i, *names)
        return src(label), label

    # the handler: exactly one
    given = [name for name in HANDLER_TABLES if _handler(route, name) is not None]
    if route.app:
        given.insert(0, "app")
    if len(given) != 1:
        source, label = at()
        what = "none" if not given else " and ".join(given)
        yield problem(
            source,
            label,
            f"expected exactly one handler (app, static, redirect, return or proxy), got {what}",
        )
    if route.app:
        yield from _check_route_app(config, route.app, *at("app"), require_app)

    # what it matches
    source, label = at("path")
    if route.match == "regex":
        try:
            pattern = re.compile(route.path)
        except re.error as e:
            yield problem(source, label, f"invalid regex {toml_value(route.path)}: {e}")
            pattern = None
    else:
        pattern = None
        if not route.path.startswith("/"):
            yield problem(
                source,
                label,
                'expected a path starting with "/" (like "/static/"), '
                f"got {toml_value(route.path)}",
            )
    if route.host and not HOST_RE.fullmatch(route.host):
        yield problem(
            *at("host"),
            'expected a host name ("example.com"), "*.example.com" for any subdomain, '
            f'or "" for any host, got {toml_value(route.host)}',
        )
    for j, method in enumerate(route.methods):
        if not METHOD_RE.fullmatch(method):
            source, label = at("methods")
            hint = (
                f" (did you mean {toml_value(method.upper())}?)"
                if TOKEN_RE.fullmatch(method)
                else ""
            )
            yield problem(
                source,
                f"{label}[{j}]",
                f"expected an upper-case HTTP method like GET, got {toml_value(method)}{hint}",
            )
    for name, value in route.match_headers.items():
        yield from _check_header(*at("match_headers"), name, value)
    for j, rule in enumerate(route.access):
        try:
            parse_rule(rule)
        except AccessRuleError as e:
            source, label = at("access")
            yield problem(source, f"{label}[{j}]", str(e))

    # the handlers' own settings
    if route.static is not None:
        root = route.static.root
        source, label = at("static", "root")
        if not os.path.isdir(root):
            what = "not a directory" if os.path.exists(root) else "no such directory"
            yield problem(source, label, f"{what}: {toml_value(root)}")
        for j, name in enumerate(route.static.index):
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                source, label = at("static", "index")
                yield problem(
                    source, f"{label}[{j}]", f"expected a file name, got {toml_value(name)}"
                )
        for ext, _type in route.static.mime_types.items():
            if not ext.startswith("."):
                yield problem(
                    *at("static", "mime_types"),
                    'expected extensions starting with "." (like ".webmanifest"), '
                    f"got {toml_value(ext)}",
                )
        if bad_header_value(route.static.cache_control):
            yield problem(
                *at("static", "cache_control"), "holds characters that cannot go in a header"
            )
    if route.redirect is not None:
        source, label = at("redirect", "to")
        to = route.redirect.to
        if not to or bad_header_value(to):
            yield problem(
                source, label, f"expected a URL or a path to redirect to, got {toml_value(to)}"
            )
        known = set(REDIRECT_NAMES)
        if pattern is not None:
            known |= set(pattern.groupindex)
        broken = route.match == "regex" and pattern is None  # already reported
        for m in () if broken else PLACEHOLDER_RE.finditer(to):
            if m.group(1) not in known:
                names = ", ".join("{" + n + "}" for n in sorted(known))
                yield problem(
                    source,
                    label,
                    f"unknown placeholder {{{m.group(1)}}} (this route offers {names})",
                )
    if route.respond is not None:
        for name, value in route.respond.headers.items():
            yield from _check_header(*at("return", "headers"), name, value)
        if bad_header_value(route.respond.content_type):
            yield problem(
                *at("return", "content_type"), "holds characters that cannot go in a header"
            )
    if route.headers is not None:
        yield from check_headers(route.headers, lambda key: at("headers", key))
    yield from check_auth(route, at)
    yield from check_route_limits(route, at)


def check_headers(cfg: HeadersConfig, at: Callable[[str], tuple[Source, str]]) -> Iterator[str]:
    """The ``[headers]`` rules (top level or a route's): names and values fit for the wire."""
    for name, value in cfg.add.items():
        yield from _check_header(*at("add"), name, value)
    for j, name in enumerate(cfg.remove):
        if bad_header_name(name):
            source, label = at("remove")
            yield problem(
                source, f"{label}[{j}]", f"expected a header name, got {toml_value(name)}"
            )
    if bad_header_value(cfg.content_security_policy):
        yield problem(*at("content_security_policy"), "holds characters that cannot go in a header")


def _check_header(source: Source, label: str, name: str, value: str) -> Iterator[str]:
    if bad_header_name(name):
        yield problem(source, label, f"expected header names, got {toml_value(name)}")
    elif bad_header_value(value):
        yield problem(
            source,
            f"{label}.{name}",
            f"holds characters that cannot go in a header: {toml_value(value)}",
        )


def _check_route_app(
    config: Config, name: str, source: Source, label: str, require_app: bool
) -> Iterator[str]:
    if name == DEFAULT_APP:
        if require_app and not config.app.target:
            yield problem(
                source,
                label,
                f'"{DEFAULT_APP}" is the top-level [app], which has no target: '
                "pass MODULE:ATTR or set [app] target",
            )
        return
    if name not in config.apps:
        names = ", ".join([DEFAULT_APP, *config.apps])
        yield problem(source, label, f"no app named {toml_value(name)} (the apps are {names})")


def _handler(route: RouteConfig, name: str) -> object:
    return route.respond if name == "return" else getattr(route, name)
