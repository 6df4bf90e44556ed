"""Checks on the whole configuration, after every value has its type.

Types and ranges are checked key by key as the sources are read; what is left here is
what only makes sense once the tree is built: listen addresses that do not parse or
repeat, an app target that cannot be imported as written, and settings that cannot work
together. Each check returns messages; none raises.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Set

from bastion.config.admin_checks import check_admin
from bastion.config.binds import BIND_FORMS, BindError, parse_bind
from bastion.config.errors import DEFAULT, Source, problem
from bastion.config.ratelimit_checks import check_rate_limit
from bastion.config.route_checks import check_headers, check_routes
from bastion.config.schema import AppConfig, Config
from bastion.config.toml_write import toml_value
from bastion.config.upstream_checks import check_proxy_route, check_upstreams
from bastion.protocol.forwarded import ForwardedError, TrustedProxies

NO_APP = "no app given: pass MODULE:ATTR or set [app] target in the config file"

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_NAME}(?:\.{_NAME})*"
_TARGET_RE = re.compile(rf"(?:{_DOTTED}|.+\.py):{_DOTTED}")


def check_config(
    config: Config,
    sources: Mapping[str, Source],
    *,
    require_app: bool = False,
    skip_routes: Set[int] = frozenset(),
) -> list[str]:
    """Every problem with ``config`` as a whole, as messages.

    ``require_app``: the default app must have a target (when routes are configured,
    only if one of them uses it). ``skip_routes``: routes already reported as broken.
    """

    def src(path: str) -> Source:
        return sources.get(path, DEFAULT)

    def at(path: str) -> tuple[Source, str]:
        return src(path), path

    out: list[str] = []
    out.extend(_check_binds(config.server.bind, src("server.bind")))
    out.extend(_check_proxies(config, src))
    out.extend(_check_app(config.app, "app", src, require_app and not config.routes))
    for name, app in config.apps.items():
        out.extend(_check_app(app, f"apps.{name}", src, True))
    out.extend(check_routes(config, src, require_app=require_app, skip=skip_routes))
    out.extend(check_upstreams(config, src))
    for i in range(len(config.routes)):
        if i not in skip_routes:
            out.extend(check_proxy_route(config, i, src))
    out.extend(check_headers(config.headers, lambda key: at(f"headers.{key}")))
    if config.workers.max_requests_jitter and not config.workers.max_requests:
        out.append(
            problem(
                src("workers.max_requests_jitter"),
                "workers.max_requests_jitter",
                "has no effect while workers.max_requests is 0 (recycling is off); "
                "set workers.max_requests too, or leave the jitter at 0",
            )
        )
    if config.workers.reload and config.workers.preload:
        out.append(
            problem(
                src("workers.reload"),
                "workers.reload",
                "cannot load new code while workers.preload is on (the workers are forked "
                "from the supervisor's copy of the app); turn one of them off",
            )
        )
    out.extend(_check_tls(config, src))
    out.extend(check_rate_limit(config, src))
    out.extend(check_admin(config, src))
    workers = config.workers
    if workers.heartbeat_interval >= workers.timeout:
        out.append(
            problem(
                src("workers.heartbeat_interval"),
                "workers.heartbeat_interval",
                f"must be shorter than workers.timeout ({workers.timeout:g}s), or every worker "
                f"would be killed as blocked; got {workers.heartbeat_interval:g}",
            )
        )
    header = config.server.server_header
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in header) or not header.isascii():
        out.append(
            problem(
                src("server.server_header"),
                "server.server_header",
                f"expected printable ASCII text (it is sent as a header), got {toml_value(header)}",
            )
        )
    return out


def _check_binds(binds: tuple[str, ...], source: Source) -> Iterator[str]:
    if not binds:
        yield problem(source, "server.bind", f"expected at least one address ({BIND_FORMS})")
        return
    seen: dict[tuple[object, ...], int] = {}
    for i, text in enumerate(binds):
        key = f"server.bind[{i}]"
        try:
            spec = parse_bind(text)
        except BindError as e:
            detail = str(e) if BIND_FORMS in str(e) else f"{e} (accepted forms: {BIND_FORMS})"
            yield problem(source, key, detail)
            continue
        if spec.kind == "tcp" and spec.port == 0:
            continue  # each port-0 bind gets its own free port
        ident = (spec.kind, spec.host, spec.port, spec.path, spec.fd)
        if ident in seen:
            first = seen[ident]
            yield problem(
                source,
                key,
                f"{toml_value(text)} repeats server.bind[{first}] {toml_value(binds[first])}",
            )
        else:
            seen[ident] = i


def _check_proxies(config: Config, src: Callable[[str], Source]) -> Iterator[str]:
    server = config.server
    for i, entry in enumerate(server.forwarded_allow_ips):
        try:
            TrustedProxies([entry])
        except ForwardedError as e:
            yield problem(
                src("server.forwarded_allow_ips"), f"server.forwarded_allow_ips[{i}]", str(e)
            )
    binds = {b.strip() for b in server.bind}
    redirects = {b.strip() for b in config.tls.redirect_bind}
    for i, entry in enumerate(server.proxy_protocol):
        if entry.strip() != "*" and entry.strip() not in binds | redirects:
            also = (
                f" or tls.redirect_bind {toml_value(list(config.tls.redirect_bind))}"
                if redirects
                else ""
            )
            yield problem(
                src("server.proxy_protocol"),
                f"server.proxy_protocol[{i}]",
                f'expected one of server.bind {toml_value(list(server.bind))}{also} or "*", '
                f"got {toml_value(entry)}",
            )


def _check_app(
    app: AppConfig, label: str, src: Callable[[str], Source], require_app: bool
) -> Iterator[str]:
    if not app.target:
        if require_app and label == "app":
            yield NO_APP
        elif require_app:
            yield problem(src(label), f"{label}.target", "expected MODULE:ATTR, got nothing")
    elif not _TARGET_RE.fullmatch(app.target):
        yield problem(
            src(f"{label}.target"),
            f"{label}.target",
            "expected MODULE:ATTR (like myproject.asgi:application) or path/to/app.py:ATTR, "
            f"got {toml_value(app.target)}",
        )
    if app.root_path and (not app.root_path.startswith("/") or app.root_path.endswith("/")):
        yield problem(
            src(f"{label}.root_path"),
            f"{label}.root_path",
            'expected a path that starts with "/" and does not end with one (like "/api"), '
            f"got {toml_value(app.root_path)}",
        )
    if not os.path.isdir(app.app_dir):
        yield problem(
            src(f"{label}.app_dir"),
            f"{label}.app_dir",
            f"no such directory: {toml_value(app.app_dir)}",
        )


def _check_tls(config: Config, src: Callable[[str], Source]) -> Iterator[str]:
    """Settings of [tls] that cannot work together (the files are read at start-up, by
    :mod:`bastion.process.tls`)."""
    tls = config.tls
    on = bool(tls.certfile or tls.certificates)
    for key, value in (
        ("keyfile", tls.keyfile),
        ("keyfile_password_file", tls.keyfile_password_file),
        ("ca_certs", tls.ca_certs),
        ("redirect_bind", tls.redirect_bind),
    ):
        if value and not on:
            yield problem(
                src(f"tls.{key}"),
                f"tls.{key}",
                "has no effect without a certificate: set tls.certfile (--certfile) too",
            )
    if tls.client_auth != "none" and not tls.ca_certs:
        yield problem(
            src("tls.client_auth"),
            "tls.client_auth",
            f"{toml_value(tls.client_auth)} needs tls.ca_certs (--ca-certs), the CAs "
            "client certificates are checked against",
        )
    if tls.ca_certs and tls.client_auth == "none" and on:
        yield problem(
            src("tls.ca_certs"),
            "tls.ca_certs",
            'is only used to check client certificates: set tls.client_auth to "optional" '
            'or "required" (--client-auth), or leave tls.ca_certs empty',
        )
    for index, cert in enumerate(tls.certificates):
        label = f"tls.certificates[{index}]"
        if not cert.certfile:
            yield problem(src("tls.certificates"), f"{label}.certfile", "expected a file path")
    for text in tls.redirect_bind:
        try:
            spec = parse_bind(text)
        except BindError as exc:
            yield problem(src("tls.redirect_bind"), "tls.redirect_bind", f"{text!r}: {exc}")
            continue
        if spec.kind != "tcp":
            yield problem(
                src("tls.redirect_bind"),
                "tls.redirect_bind",
                f"expected HOST:PORT addresses (a redirect needs a TCP port), got {text!r}",
            )
        elif spec.port and text in config.server.bind:
            yield problem(
                src("tls.redirect_bind"),
                "tls.redirect_bind",
                f"{text!r} is also in server.bind: one port cannot speak both HTTP and HTTPS",
            )
