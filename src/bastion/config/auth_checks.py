"""Checks on a route's authentication tables (``auth_basic``, ``auth_api_key``,
``auth_jwt``, ``auth_forward``): at most one per route, the ``auth`` extra installed,
files that exist, keys that fit their algorithms, header names fit for the wire."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Iterator

from bastion.config.errors import Source, problem
from bastion.config.schema import RouteConfig
from bastion.config.tables import AUTH_TABLES
from bastion.config.toml_write import toml_value
from bastion.protocol.fields import valid_header_name

At = Callable[..., tuple[Source, str]]

#: the modules of the ``auth`` extra each method needs
NEEDS: dict[str, tuple[str, ...]] = {
    "auth_basic": ("argon2",),
    "auth_api_key": (),
    "auth_jwt": ("jwt", "cryptography", "httpx"),
    "auth_forward": ("httpx",),
}
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_EXTRA_HINT = "pip install 'bastion[auth]'"


def missing_modules(table: str) -> list[str]:
    """The modules of the ``auth`` extra that ``table`` needs and cannot import."""
    return [m for m in NEEDS[table] if importlib.util.find_spec(m) is None]


def check_auth(route: RouteConfig, at: At) -> Iterator[str]:
    given = [name for name in AUTH_TABLES if getattr(route, name) is not None]
    if len(given) > 1:
        yield problem(
            *at(given[1]),
            f"a route authenticates one way: {' and '.join(given)} are both set "
            "(use two routes, or one method)",
        )
    for table in given:
        missing = missing_modules(table)
        if missing:
            yield problem(
                *at(table),
                f"needs the auth extra, which is not installed ({', '.join(missing)} missing):"
                f" {_EXTRA_HINT}",
            )
        cfg = getattr(route, table)
        name = cfg.identity_header
        if name and not valid_header_name(name.encode("latin-1", "replace")):
            yield problem(
                *at(table, "identity_header"), f"expected a header name, got {toml_value(name)}"
            )
    if route.auth_basic is not None:
        path = route.auth_basic.users_file
        if not os.path.isfile(path):
            yield problem(*at("auth_basic", "users_file"), f"no such file: {toml_value(path)}")
        if '"' in route.auth_basic.realm or "\\" in route.auth_basic.realm:
            yield problem(*at("auth_basic", "realm"), 'must not hold " or \\')
    if route.auth_api_key is not None:
        keys = route.auth_api_key
        if not keys.header and not keys.query_param:
            yield problem(*at("auth_api_key"), "set header, query_param or both")
        for key_name, digest in keys.keys.items():
            if not _SHA256_HEX.fullmatch(digest):
                yield problem(
                    *at("auth_api_key", "keys"),
                    f"{key_name}: expected the SHA-256 of the key in hex (64 digits; "
                    f"`bastion apikey` prints one), got {toml_value(digest)}",
                )
        if not keys.keys:
            yield problem(*at("auth_api_key", "keys"), "no keys: no request could pass")
    if route.auth_jwt is not None:
        yield from _check_jwt(route, at)
    if route.auth_forward is not None:
        fwd = route.auth_forward
        if not fwd.url.startswith(("http://", "https://")):
            yield problem(
                *at("auth_forward", "url"), f"expected an http(s) URL, got {toml_value(fwd.url)}"
            )
        for key in ("request_headers", "response_headers"):
            for j, name in enumerate(getattr(fwd, key)):
                if not valid_header_name(name.encode("latin-1", "replace")):
                    source, label = at("auth_forward", key)
                    yield problem(
                        source, f"{label}[{j}]", f"expected a header name, got {toml_value(name)}"
                    )


def _check_jwt(route: RouteConfig, at: At) -> Iterator[str]:
    jwt = route.auth_jwt
    assert jwt is not None
    if not jwt.algorithms:
        yield problem(*at("auth_jwt", "algorithms"), "list the algorithms tokens may use")
    sources = [
        k for k in ("secret_file", "public_key_file", "jwks_file", "jwks_url") if getattr(jwt, k)
    ]
    if len(sources) != 1:
        yield problem(
            *at("auth_jwt"),
            "expected exactly one key source (secret_file, public_key_file, jwks_file or "
            f"jwks_url), got {' and '.join(sources) or 'none'}",
        )
        return
    hmac = [a for a in jwt.algorithms if a.startswith("HS")]
    if jwt.secret_file and len(hmac) != len(jwt.algorithms):
        yield problem(
            *at("auth_jwt", "algorithms"),
            "a shared secret (secret_file) verifies HS* algorithms only",
        )
    if not jwt.secret_file and hmac:
        yield problem(
            *at("auth_jwt", "algorithms"),
            "HS* algorithms need secret_file; with public keys they would let anyone who "
            "knows the public key sign tokens",
        )
    for key in ("secret_file", "public_key_file", "jwks_file"):
        path = getattr(jwt, key)
        if path and not os.path.isfile(path):
            yield problem(*at("auth_jwt", key), f"no such file: {toml_value(path)}")
    if jwt.jwks_url and not jwt.jwks_url.startswith(("http://", "https://")):
        yield problem(
            *at("auth_jwt", "jwks_url"), f"expected an http(s) URL, got {toml_value(jwt.jwks_url)}"
        )
