"""Checks on ``[admin]``: an address that parses, loopback unless allowed, one token
source at most."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator

from bastion.config.binds import BindError, parse_bind
from bastion.config.errors import Source, problem
from bastion.config.schema import Config
from bastion.config.toml_write import toml_value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_admin(config: Config, src: Callable[[str], Source]) -> Iterator[str]:
    admin = config.admin
    if not admin.bind:
        return
    try:
        spec = parse_bind(admin.bind)
    except BindError as exc:
        yield problem(src("admin.bind"), "admin.bind", str(exc))
        return
    if spec.kind != "tcp":
        yield problem(
            src("admin.bind"),
            "admin.bind",
            f"expected HOST:PORT or [IPV6]:PORT, got {toml_value(admin.bind)}",
        )
        return
    if not _loopback(spec.host) and not admin.allow_public:
        yield problem(
            src("admin.bind"),
            "admin.bind",
            f"{toml_value(admin.bind)} is not a loopback address: the admin listener shows "
            "metrics and the dashboard to whoever reaches it; set admin.allow_public = true "
            "(and admin.token) to listen there anyway",
        )
    if admin.token and admin.token_file:
        yield problem(
            src("admin.token_file"),
            "admin.token_file",
            "set admin.token or admin.token_file, not both",
        )
