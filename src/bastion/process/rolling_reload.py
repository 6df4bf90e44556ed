"""SIGHUP: the rolling reload, as the supervisor decides it (docs/signals.md).

The supervisor re-reads the configuration (when it was given a way to), then replaces
its workers one by one: a new worker of the next generation starts beside the oldest
outdated one, and only once it is ready is the old one retired. A new configuration
that is invalid, or certificates that do not load, leave everything as it is; a change
that only a restart can apply is logged and otherwise ignored.

:func:`start_reload` begins it (SIGHUP); :func:`advance_reload`, called again each time
a replacement is ready, takes the next step; :func:`reload_failed` ends it when a
replacement cannot start. They act on the supervisor's records of its workers and
start the replacements with its own fork.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from bastion.config.errors import ConfigError
from bastion.config.schema import Config
from bastion.observe.logging import logger
from bastion.process.children import Child, State
from bastion.process.tls import ServerTLS, load_tls

if TYPE_CHECKING:
    from bastion.process.supervisor import Supervisor


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
        ("server.backlog", old.server.backlog != new.server.backlog),
        ("server.unix_socket_mode", old.server.unix_socket_mode != new.server.unix_socket_mode),
        ("admin.bind", old.admin.bind != new.admin.bind),
        ("admin.allow_public", old.admin.allow_public != new.admin.allow_public),
        ("workers.preload", old.workers.preload != new.workers.preload),
        ("workers.immortalize", old.workers.immortalize != new.workers.immortalize),
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


def start_reload(sup: Supervisor) -> None:
    """SIGHUP: the configuration read again, then the workers replaced one by one
    (ignored unless the supervisor is running)."""
    if sup.awaiting_change and sup.phase == "starting":
        if sup.reload_config is not None:
            new = read_new_config(sup.reload_config)
            if new is None:
                return
            sup._apply_config(new[0])
            sup.tls = tls_after_reload(new[1], sup.tls)
        sup.retry_after_change()
        return
    if sup.phase == "starting" and sup.watcher.proc is not None:
        # --reload: a change while the workers start; if this start fails, the next one
        # begins at once, on the new code
        sup.change_pending = True
        logger.info("--reload: code changed while starting")
        return
    if sup.phase != "running":
        logger.info("SIGHUP received while %s: ignored", sup.phase)
        return
    if sup.reload_config is not None:
        new = read_new_config(sup.reload_config)
        if new is None:
            return
        config, tls = new
        if sup.before_reload is None:  # (a reload during a reload: the first one's)
            sup.before_reload = (sup.config, sup.tls)
        sup._apply_config(config)
        sup.tls = tls_after_reload(tls, sup.tls)
    sup.generation += 1
    sup.reloading = True
    sup.notify.reloading()
    old = sum(1 for c in sup.children.values() if c.state is State.READY)
    logger.info("SIGHUP received: reloading %d worker%s one by one", old, "s"[: old - 1])
    advance_reload(sup)


def advance_reload(sup: Supervisor) -> None:
    """Start the next outdated worker's replacement, once the last one is ready."""
    if not sup.reloading or replacing(sup.children.values()):
        return
    child = next_outdated(sup.children.values(), sup.generation)
    if child is not None:
        if sup._try_spawn(child, for_reload=True) is None:
            reload_failed(sup)
        return
    sup.reloading = False
    sup.before_reload = None
    count = len(sup._serving())
    logger.info("reload complete: %d worker%s serving", count, "s"[: count - 1])
    sup.notify.ready(f"serving with {count} worker{'s'[: count - 1]}")


def reload_failed(sup: Supervisor) -> None:
    """A replacement could not start: the reload ends, the running workers serve on.
    When none of them was replaced yet (the usual case: the new code does not import),
    the configuration they were started with stays in force too: a ``workers.count``
    raised with the broken code would otherwise keep the supervisor starting workers
    that cannot start."""
    sup.reloading = False
    previous, sup.before_reload = sup.before_reload, None
    replaced = any(
        c.generation == sup.generation and c.state is State.READY for c in sup.children.values()
    )
    if previous is not None and not replaced:
        # (the generation stays: a worker of the failed one still starting is outdated
        # at the next reload, as the running ones are)
        config, tls = previous
        sup._apply_config(config, restoring=True)
        sup.tls = tls
        logger.error("reload failed: keeping the running workers and their configuration")
    else:
        logger.error("reload failed: keeping the running workers")
    sup.notify.ready("reload failed: serving with the running workers")
