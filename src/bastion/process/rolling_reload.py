"""SIGHUP: the rolling reload, as the supervisor decides it (docs/signals.md).

The supervisor re-reads the configuration (when it was given a way to), then replaces
its workers one by one: a new worker of the next generation starts beside the oldest
outdated one, and only once it is ready is the old one retired. A new configuration
that is invalid, or certificates that do not load, leave everything as it is; a change
that only a restart can apply is logged and otherwise ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from bastion.config.errors import ConfigError
from bastion.config.schema import Config
from bastion.observe.logging import logger
from bastion.process.children import Child, State
from bastion.process.tls import ServerTLS, load_tls


def read_new_config(read: Callable[[], Config]) -> tuple[Config, ServerTLS | None] | None:
    """The configuration and certificates to reload with; None (logged) if either is
    invalid, in which case the running ones stay."""
    try:
        config = read()
    except Exception as exc:
        logger.error("SIGHUP: the new configuration is invalid, keeping the current one:\n%s", exc)
        return None
    try:
        tls = load_tls(config.tls)
    except ConfigError as exc:
        logger.error(
            "SIGHUP: cannot load the TLS certificates, keeping the current ones "
            "(no worker reloaded):\n%s",
            exc,
        )
        return None
    return config, tls


def warn_restart_only(old: Config, new: Config) -> None:
    """Log each change from ``old`` to ``new`` that a reload cannot apply."""
    for name, needs in (
        ("server.bind", old.server.bind != new.server.bind),
        ("server.reuse_port", old.server.reuse_port != new.server.reuse_port),
        ("workers.preload", old.workers.preload != new.workers.preload),
        ("tls.redirect_bind", old.tls.redirect_bind != new.tls.redirect_bind),
        ("[[process]]", old.process != new.process),
    ):
        if needs:
            logger.warning("SIGHUP: a change of %s takes effect only after a restart", name)


def tls_after_reload(new: ServerTLS | None, running: ServerTLS | None) -> ServerTLS | None:
    """The certificates the reloaded workers serve with: the new ones, unless TLS was
    turned on or off (which takes a restart: logged)."""
    if new is not None and running is None:
        logger.warning("SIGHUP: turning TLS on takes effect only after a restart")
        return running
    if new is None and running is not None:
        logger.warning("SIGHUP: turning TLS off takes effect only after a restart")
        return running
    return new


def replacing(children: Iterable[Child]) -> bool:
    """Whether a worker the reload started is still starting (it goes one at a time)."""
    return any(c.for_reload and c.state is State.STARTING for c in children)


def next_outdated(children: Iterable[Child], generation: int) -> Child | None:
    """The oldest ready worker older than ``generation`` and not being replaced yet;
    None once every one is up to date."""
    for child in sorted(children, key=lambda c: c.started):
        if child.generation < generation and child.state is State.READY and child.successor is None:
            return child
    return None
