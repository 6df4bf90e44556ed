"""The keys of the repeated tables: ``[apps.NAME]`` and ``[[routes]]``.

Unlike the plain sections, these are written in the config file only (``--static`` on
the command line adds routes too). An ``[apps.NAME]`` table has the keys of ``[app]``.
A ``[[routes]]`` table has a few plain keys (``path``, ``host``...) and sub-tables for its
handler (``static``, ``redirect``, ``return``) and its filters (``compress``,
``headers``), each with the keys of its own type.

Keys are named in messages by where they sit: ``apps.api.target``,
``routes[2].static.root``. The reference (docs/configuration.md) names them by their
shape: ``routes.static.root``.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from bastion.config.auth_schema import (
    ApiKeyAuthConfig,
    BasicAuthConfig,
    ForwardAuthConfig,
    JwtAuthConfig,
)
from bastion.config.keys import SECTIONS, Key, table_keys
from bastion.config.ratelimit_schema import RouteRateLimitConfig
from bastion.config.schema import (
    CompressConfig,
    HeadersConfig,
    ProxyConfig,
    RedirectConfig,
    ReturnConfig,
    RouteConfig,
    StaticConfig,
    UpstreamConfig,
)

#: the keys of one [apps.NAME] table: those of [app]
APP_KEYS: Mapping[str, Key] = SECTIONS["app"]

#: the keys of one [upstreams.NAME] table
UPSTREAM_KEYS: Mapping[str, Key] = table_keys(UpstreamConfig, "upstreams.<name>")

#: the name the top-level [app] goes by in routes
DEFAULT_APP = "default"

#: route key -> the type of its sub-table
ROUTE_TABLE_TYPES: Mapping[str, type[msgspec.Struct]] = {
    "static": StaticConfig,
    "redirect": RedirectConfig,
    "return": ReturnConfig,
    "proxy": ProxyConfig,
    "compress": CompressConfig,
    "headers": HeadersConfig,
    "auth_basic": BasicAuthConfig,
    "auth_api_key": ApiKeyAuthConfig,
    "auth_jwt": JwtAuthConfig,
    "auth_forward": ForwardAuthConfig,
}

#: route key -> the type of each table of its list (``[[routes.rate_limit]]``: a route
#: may have several; one ``[routes.rate_limit]`` table is a list of one)
ROUTE_TABLE_LIST_TYPES: Mapping[str, type[msgspec.Struct]] = {
    "rate_limit": RouteRateLimitConfig,
}

#: the authentication sub-tables (a route has at most one)
AUTH_TABLES = ("auth_basic", "auth_api_key", "auth_jwt", "auth_forward")

#: the handler sub-tables (a route has exactly one handler: these or ``app``)
HANDLER_TABLES = ("static", "redirect", "return", "proxy")

#: plain keys of a [[routes]] table
ROUTE_KEYS: Mapping[str, Key] = {
    name: key
    for name, key in table_keys(RouteConfig, "routes").items()
    if name not in ROUTE_TABLE_TYPES and name not in ROUTE_TABLE_LIST_TYPES
}

#: sub-table name -> its keys
ROUTE_TABLES: Mapping[str, Mapping[str, Key]] = {
    name: table_keys(cls, f"routes.{name}") for name, cls in ROUTE_TABLE_TYPES.items()
}

#: list name -> the keys of each of its tables
ROUTE_TABLE_LISTS: Mapping[str, Mapping[str, Key]] = {
    name: table_keys(cls, f"routes.{name}") for name, cls in ROUTE_TABLE_LIST_TYPES.items()
}

#: "routes.static.root" -> Key: every route key by its reference name
ROUTE_REFERENCE: Mapping[str, Key] = {
    **{k.path: k for k in ROUTE_KEYS.values()},
    **{k.path: k for keys in ROUTE_TABLES.values() for k in keys.values()},
    **{k.path: k for keys in ROUTE_TABLE_LISTS.values() for k in keys.values()},
}


def required(keys: Mapping[str, Key]) -> list[str]:
    """Names of the keys that have no default (``static.root``, ``redirect.to``)."""
    return [name for name, key in keys.items() if key.default is msgspec.NODEFAULT]


def route_label(index: int, *names: str) -> str:
    """``routes[2].static.root`` for ``(2, "static", "root")``."""
    return ".".join((f"routes[{index}]", *names))
