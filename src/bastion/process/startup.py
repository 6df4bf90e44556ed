"""The supervisor's start-up, before its first fork, and the line it logs once ready.

In order: the certificates (a bad one stops everything before any socket is opened),
the listening sockets (inherited from the bastion being upgraded, or bound), the admin
socket, the pidfile, bastion's own serving modules imported once to be shared with the
workers, the switch to ``server.user``/``server.group``, and with ``workers.preload``
the app. Any failure is reported (in the log, and on stderr when the log goes
elsewhere) and ends the start-up: :mod:`~bastion.process.supervisor` then returns 1.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from bastion import __version__
from bastion.config.errors import ConfigError
from bastion.config.schema import Config
from bastion.observe.logging import error_stream, logger
from bastion.process.admin import AdminSide
from bastion.process.listeners import (
    Listener,
    ListenerError,
    close_listeners,
    mark_tls,
    open_listeners,
    open_redirect_listeners,
)
from bastion.process.systemd import (
    PidfileError,
    PrivilegeError,
    drop_privileges,
    remove_pidfile,
    write_pidfile,
)
from bastion.process.tls import ServerTLS, load_tls
from bastion.process.upgrade import (
    Upgrade,
    close_unused,
    take_inherited,
    take_inherited_admin,
    take_ready_fd,
    upgrading_from,
)


def report_fatal(message: str) -> None:
    """Log why bastion cannot go on; also on stderr when the log goes elsewhere."""
    logger.error("%s", message)
    if error_stream() is not sys.stderr:
        print(message, file=sys.stderr, flush=True)


def open_before_fork(
    config: Config, upgrade: Upgrade, admin: AdminSide | None
) -> tuple[ServerTLS | None, list[Listener]] | None:
    """Load the certificates, open the listeners (and ``admin``'s socket), write the
    pidfile, import the serving modules and drop privileges; return the certificates
    and the listeners, or None (reported, everything opened closed again).

    Sets ``upgrade.old`` when this bastion is another one's upgrade (which then writes
    the pidfile only once it is ready).
    """
    try:
        # before any socket or worker: a bad certificate stops the start-up here
        tls = load_tls(config.tls)
    except ConfigError as exc:
        report_fatal(str(exc))
        return None
    inherited = take_inherited()
    inherited_admin = take_inherited_admin(config.admin.bind)  # (None if unbound)
    upgrade.old = upgrading_from()
    upgrade.ready_write = take_ready_fd()
    listeners: list[Listener] = []
    try:
        listeners = open_listeners(config.server, inherited)
        if tls is not None:
            mark_tls(listeners)
            listeners.extend(
                open_redirect_listeners(config.tls.redirect_bind, config.server, inherited)
            )
        if admin is not None:
            admin.open(inherited_admin)
    except (ListenerError, ConfigError) as exc:
        close_listeners(listeners)
        report_fatal(str(exc))
        return None
    finally:
        close_unused(inherited)  # binds the new configuration dropped
    pidfile = config.server.pidfile
    try:
        if pidfile and not upgrade.old:  # (an upgrade writes it when ready)
            write_pidfile(pidfile)
        # (as the user bastion started as: it can read them)
        _import_serving_modules(config)
        server = config.server
        if server.user or server.group:
            who = drop_privileges(server.user, server.group)
            logger.info("running as %s", who)
    except (OSError, PrivilegeError, PidfileError) as exc:
        close_listeners(listeners)
        if pidfile:
            remove_pidfile(pidfile)
        report_fatal(str(exc))
        return None
    return tls, listeners


def _import_serving_modules(config: Config) -> None:
    """Import what every worker imports to serve (uvloop, the protocol, the gateways,
    the response filters) once, here, so that the workers share those pages instead of
    each loading its own copy. This is bastion's code only: the app is imported here
    only with preload.

    A module a worker imports after the fork costs that worker far more than the
    module's size: the import allocates into the free blocks of memory pages it shares
    with the supervisor, and each page it writes to becomes a private copy (measured in
    docs/process.md: the response filters' four modules cost each worker 1 MiB).
    """
    import uvloop  # noqa: F401

    import bastion.edge.assemble
    import bastion.edge.compress  # (built by every worker, compression on or off)
    import bastion.edge.headers
    import bastion.gateway.asgi
    import bastion.gateway.wsgi
    import bastion.observe.accesslog
    import bastion.observe.board
    import bastion.protocol.handshake  # (the worker's listeners import it, TLS or not)
    import bastion.protocol.http1
    import bastion.protocol.proxy
    import bastion.protocol.state
    from bastion.edge.encoders import codec_available

    # what a worker adds to its listeners when the configuration asks for it
    if config.log.slow_request_ms:
        import bastion.observe.slowlog
    if config.admin.bind:
        import bastion.observe.recorder
    if config.tls.redirect_bind:
        import bastion.edge.https_redirect
    if config.workers.immortalize:
        import bastion.process.immortal  # noqa: F401  (used after preload)

    # the compression packages the configuration uses (brotli, zstandard: extension
    # modules), when installed; a missing one is reported by the worker that needs it
    sections = [config.compress, *(r.compress for r in config.routes if r.compress)]
    for name in {a for c in sections if c.enabled for a in c.algorithms}:
        codec_available(name)


def share_with_workers() -> None:
    """Python 3.12 and 3.13: make what the supervisor holds now immortal, before any
    worker is forked (``workers.immortalize``; process/immortal.py)."""
    from bastion.process.immortal import immortalize

    try:
        count, seconds = immortalize()
    except Exception as exc:  # a saving of memory, never a reason not to serve
        logger.warning("workers.immortalize: left off (%s: %s)", type(exc).__name__, exc)
        return
    if count:
        logger.debug("made %d objects immortal in %.2f s, shared with the workers", count, seconds)


def uses_default_app(config: Config) -> bool:
    """Whether the workers run ``[app]`` (always without routes; with routes, only
    when one names it: a site of static files has nothing to preload)."""
    from bastion.config.tables import DEFAULT_APP
    from bastion.edge.assemble import app_names

    return not config.routes or DEFAULT_APP in app_names(config)


def preload(config: Config) -> tuple[bool, Any]:
    """``workers.preload``: import the app here, before the fork. (True, the app), or
    (False, None) when it cannot be loaded (reported)."""
    from bastion.gateway.loader import AppLoadError, load_app

    try:
        return True, load_app(config.app)
    except AppLoadError as exc:
        report_fatal(str(exc))
    except Exception as exc:
        report_fatal(f"cannot load {config.app.target}: {exc!r}")
    return False, None


def banner(config: Config, listeners: list[Listener], count: int, interface: str) -> None:
    """Log the listeners and that bastion is ready with ``count`` workers, whose
    gateway is ``interface`` (``asgi``/``wsgi``)."""
    for lst in listeners:
        logger.info("listening on %s", lst.describe())
    if uses_default_app(config):
        what = f"{config.app.target} ({(interface or '?').upper()})"
    else:  # (the routes' apps, if any, may be of either kind)
        what = f"{len(config.routes)} route{'s'[: len(config.routes) != 1]}"
    logger.info(
        "bastion %s ready: serving %s with %d worker%s, pid %d",
        __version__,
        what,
        count,
        "" if count == 1 else "s",
        os.getpid(),
    )
