"""Gateways: run the user's ASGI 3 or WSGI application behind the protocol.

``build_gateway(config)`` imports the app named by ``config.app`` and returns a
:class:`Gateway`: its ``handler`` is what the protocol calls for each request;
``startup()`` and ``shutdown()`` run the ASGI lifespan (or, for WSGI, start and stop the
thread pool) and are awaited by the worker around serving.
"""

from __future__ import annotations

from typing import Literal, Protocol

from bastion.config.schema import Config
from bastion.gateway.loader import AppLoadError, LoadedApp, load_app
from bastion.protocol.types import Exchange
from bastion.tasks import WorkerTasks

__all__ = ["AppLoadError", "Gateway", "LoadedApp", "build_gateway", "load_app"]


class Gateway(Protocol):
    """What the worker gets from :func:`build_gateway`."""

    @property
    def interface(self) -> Literal["asgi", "wsgi"]: ...

    def handler(self, exchange: Exchange) -> None:
        """The protocol's :data:`~bastion.protocol.types.Handler` for each request."""

    async def startup(self) -> None:
        """Before serving: ASGI lifespan start-up (raises LifespanFailure on failure)."""

    async def shutdown(self, grace: float | None = None) -> None:
        """After serving: ASGI lifespan shut-down, or stopping the WSGI thread pool.

        ``grace``: how long app work still running (ASGI tasks) may take before it is
        cancelled; the gateway picks a default when None.
        """


def build_gateway(
    config: Config, loaded: LoadedApp | None = None, tasks: WorkerTasks | None = None
) -> Gateway:
    """The gateway for ``config.app`` (imported now unless ``loaded`` is given); its
    request tasks run in ``tasks`` (the worker's).

    Raises :class:`AppLoadError` when the app cannot be imported or classified.
    """
    if loaded is None:
        loaded = load_app(config.app)
    if loaded.interface == "asgi":
        from bastion.gateway.asgi import ASGIGateway

        return ASGIGateway(loaded.app, config, tasks)
    from bastion.gateway.wsgi import WSGIGateway

    return WSGIGateway(loaded.app, config, tasks)
