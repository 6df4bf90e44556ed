"""Checks on rate limiting: each route's ``[[routes.rate_limit]]`` tables (a rate that
parses, a header for ``key = "header"``, authentication for ``key = "user"`` and
``"api_key"``) and the top-level ``[rate_limit]`` (a Redis URL and the ``redis`` extra
when the backend is Redis and some route has a limit)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator

from bastion.config.errors import Source, problem
from bastion.config.schema import Config, RouteConfig
from bastion.config.tables import AUTH_TABLES
from bastion.config.toml_write import toml_value
from bastion.edge.ratelimit import RateError, parse_rate
from bastion.protocol.fields import valid_header_name

At = Callable[..., tuple[Source, str]]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_EXTRA_HINT = "pip install 'bastion[redis]'"


def check_route_limits(route: RouteConfig, at: At) -> Iterator[str]:
    for j, limit in enumerate(route.rate_limit):

        def here(name: str = "", j: int = j) -> tuple[Source, str]:
            """The key's place, or its table's when the key is not written."""
            table = f"rate_limit[{j}]"
            source, label = at(table, name) if name else at(table)
            if source.kind == "default":
                source = at(table)[0]
            return source, label

        try:
            parse_rate(limit.rate)
        except RateError as exc:
            yield problem(*here("rate"), str(exc))
        if limit.key == "header":
            if not limit.header:
                yield problem(
                    *here("header"), 'key = "header" needs the header\'s name, like "X-Tenant"'
                )
            elif not valid_header_name(limit.header.encode("latin-1", "replace")):
                yield problem(
                    *here("header"), f"expected a header name, got {toml_value(limit.header)}"
                )
        elif limit.header:
            yield problem(
                *here("header"),
                f'is used with key = "header" only (this limit has key = "{limit.key}")',
            )
        authenticated = any(getattr(route, t) is not None for t in AUTH_TABLES)
        if limit.key == "user" and not authenticated:
            yield problem(
                *here("key"),
                'key = "user" needs authentication on the route (auth_basic, auth_api_key, '
                "auth_jwt or auth_forward)",
            )
        if limit.key == "api_key" and route.auth_api_key is None:
            yield problem(*here("key"), 'key = "api_key" needs auth_api_key on the route')
        name = limit.name
        if name and not (name.isascii() and name.isprintable()):
            yield problem(
                *here("name"),
                f"expected printable ASCII (it goes in a header), got {toml_value(name)}",
            )


def check_rate_limit(config: Config, src: Callable[[str], Source]) -> Iterator[str]:
    """The top-level ``[rate_limit]``, once the routes are known."""
    if not any(route.rate_limit for route in config.routes):
        return
    cfg = config.rate_limit
    if cfg.backend != "redis":
        return
    if not cfg.redis_url:
        yield problem(
            src("rate_limit.backend"),
            "rate_limit.redis_url",
            'backend = "redis" needs a URL: expected "redis://HOST:PORT/DB", '
            '"rediss://..." or "unix:///PATH"',
        )
    elif not cfg.redis_url.startswith(REDIS_SCHEMES):
        yield problem(
            src("rate_limit.redis_url"),
            "rate_limit.redis_url",
            'expected a URL starting with "redis://", "rediss://" or "unix://", '
            f"got {toml_value(cfg.redis_url)}",
        )
    missing = [m for m in ("redis",) if importlib.util.find_spec(m) is None]
    if missing:
        yield problem(
            src("rate_limit.backend"),
            "rate_limit.backend",
            f"needs the redis extra, which is not installed ({', '.join(missing)} missing): "
            f"{_EXTRA_HINT}",
        )
