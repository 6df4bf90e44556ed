"""Putting the site together in a worker: apps, route handlers, filters, the router.

:func:`build_site` returns what the worker serves: an object with the interface of an
app gateway (``handler``, ``startup()``, ``shutdown()``, ``interface``).

* Without routes it *is* the default app's gateway: requests go straight to the app,
  exactly as if the edge did not exist; only when ``[compress]`` or ``[headers]`` has
  something to do, the app's handler is wrapped in those filters.
* With routes it is a :class:`Site`: one gateway per app some route uses (the default
  app only if a route names it), each route's handler wrapped in its filters, and the
  :class:`~bastion.edge.router.Router` as the protocol handler.

An app mounted by a prefix route gets that prefix as its ``root_path`` (ASGI
``root_path``, WSGI ``SCRIPT_NAME``) unless its own configuration sets one; when several
prefix routes mount the same app, the first one gives the prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import msgspec

from bastion.config.schema import AppConfig, CompressConfig, Config, HeadersConfig, RouteConfig
from bastion.config.tables import DEFAULT_APP
from bastion.edge.redirect import redirect_handler
from bastion.edge.respond import NOT_FOUND, method_not_allowed, return_handler
from bastion.edge.router import Router
from bastion.edge.types import ExchangeFilter, RouteHandler, RouteMatch
from bastion.observe.logging import logger
from bastion.protocol.types import Exchange
from bastion.tasks import WorkerTasks

if TYPE_CHECKING:
    from bastion.gateway import Gateway, LoadedApp


def app_names(config: Config) -> list[str]:
    """The apps the routes use, in order of first use."""
    names: list[str] = []
    for route in config.routes:
        if route.app and route.app not in names:
            names.append(route.app)
    return names


def app_config(config: Config, name: str) -> AppConfig:
    """The configuration of app ``name``, with the ``root_path`` its mount gives it."""
    app = config.app if name == DEFAULT_APP else config.apps[name]
    if app.root_path:
        return app
    for route in config.routes:
        if route.app == name and route.match == "prefix":
            root = route.path.rstrip("/")
            return msgspec.structs.replace(app, root_path=root) if root else app
    return app


def build_site(
    config: Config, loaded: LoadedApp | None = None, tasks: WorkerTasks | None = None
) -> Gateway:
    """What the worker serves for ``config``; ``loaded`` is the preloaded default app,
    ``tasks`` the worker's background tasks (every app and handler spawns there).

    Imports every app the routes use (raising :class:`~bastion.gateway.AppLoadError`
    naming the app that failed) and builds every route handler.
    """
    from bastion.gateway import AppLoadError, build_gateway

    if tasks is None:
        tasks = WorkerTasks()
    if not config.routes:
        gateway = build_gateway(config, loaded, tasks)
        filters = _Filters(config.compress, config.headers).top
        return _FilteredApp(gateway, filters) if filters else gateway
    gateways: dict[str, Gateway] = {}
    for name in app_names(config):
        app_cfg = app_config(config, name)
        try:
            gateways[name] = build_gateway(
                msgspec.structs.replace(config, app=app_cfg),
                loaded if name == DEFAULT_APP else None,
                tasks,
            )
        except AppLoadError as exc:
            if name == DEFAULT_APP:
                raise
            raise AppLoadError(f"apps.{name}: {exc}") from exc
    return Site(config, gateways, tasks)


class Site:
    """Several apps and other handlers behind one router (a gateway to the worker)."""

    def __init__(self, config: Config, gateways: dict[str, Gateway], tasks: WorkerTasks) -> None:
        self.gateways = gateways
        self.tasks = tasks
        self.grace = min(config.workers.graceful_timeout, 2.0)
        self.closers: list[Callable[[], None]] = []
        filters = _Filters(config.compress, config.headers)
        handlers = [self._route_handler(route, filters) for route in config.routes]
        self.router = Router(config.routes, handlers, _with(filters.top, self._not_found))
        self.handler: Callable[[Exchange], None] = self.router
        self.started: list[Gateway] = []

    @property
    def interface(self) -> Literal["asgi", "wsgi"]:
        first = next(iter(self.gateways.values()), None)
        return first.interface if first is not None else "asgi"

    def _route_handler(self, route: RouteConfig, filters: _Filters) -> RouteHandler:
        handler: RouteHandler
        if route.app:
            app_handler = self.gateways[route.app].handler

            def handler(exchange: Exchange, match: RouteMatch) -> None:
                app_handler(exchange)

        elif route.static is not None:
            from bastion.edge.static import StaticHandler

            static = StaticHandler(route.static, self.tasks)
            self.closers.append(static.close)
            handler = static
        elif route.redirect is not None:
            handler = redirect_handler(route.redirect)
        else:
            assert route.respond is not None  # the config checks allow nothing else
            handler = return_handler(route.respond)
        return _with(filters.for_route(route), handler)

    def _not_found(self, exchange: Exchange, match: RouteMatch) -> None:
        allowed = self.router.allowed(
            self.router.host_of(exchange), exchange.head.path, exchange.head.headers
        )
        if allowed:
            method_not_allowed(allowed)(exchange, match)
        else:
            NOT_FOUND(exchange, match)

    async def startup(self) -> None:
        """Start each app in turn; if one fails, stop those already started."""
        for name, gateway in self.gateways.items():
            try:
                await gateway.startup()
            except Exception:
                if name != DEFAULT_APP:
                    logger.error("app %s (apps.%s) failed to start", name, name)
                for started in reversed(self.started):
                    await started.shutdown()
                self.started.clear()
                raise
            self.started.append(gateway)

    async def shutdown(self, grace: float | None = None) -> None:
        # requests still at work (apps, file sends) end first, within the grace period
        await self.tasks.finish(self.grace if grace is None else grace)
        for close in self.closers:
            close()
        for gateway in reversed(self.started):
            try:
                await gateway.shutdown(grace)
            except Exception:
                logger.exception("error while stopping an app")
        self.started.clear()


class _FilteredApp:
    """The default app alone, its responses going through ``[compress]``/``[headers]``."""

    def __init__(self, gateway: Gateway, filters: list[ExchangeFilter]) -> None:
        self.gateway = gateway
        app_handler = gateway.handler
        if len(filters) == 1:
            (only,) = filters

            def handler(exchange: Exchange) -> None:
                app_handler(only(exchange))

        else:
            outer, inner = filters

            def handler(exchange: Exchange) -> None:
                app_handler(outer(inner(exchange)))

        self.handler: Callable[[Exchange], None] = handler

    @property
    def interface(self) -> Literal["asgi", "wsgi"]:
        return self.gateway.interface

    async def startup(self) -> None:
        await self.gateway.startup()

    async def shutdown(self, grace: float | None = None) -> None:
        await self.gateway.shutdown(grace)


class _Filters:
    """The response filters, built once per distinct configuration."""

    def __init__(self, compress: CompressConfig, headers: HeadersConfig) -> None:
        self._cache: dict[bytes, ExchangeFilter | None] = {}
        self.compress = compress
        self.headers = headers
        self.top = self.chain(compress, headers)

    def for_route(self, route: RouteConfig) -> list[ExchangeFilter]:
        if route.compress is None and route.headers is None:
            return self.top
        return self.chain(route.compress or self.compress, route.headers or self.headers)

    def chain(self, compress: CompressConfig, headers: HeadersConfig) -> list[ExchangeFilter]:
        # the handler writes to the compression wrapper, which writes to the headers
        # wrapper: the header rules have the last word on every response
        out = [self._get(compress), self._get(headers)]
        return [f for f in out if f is not None]

    def _get(self, cfg: CompressConfig | HeadersConfig) -> ExchangeFilter | None:
        key = type(cfg).__name__.encode() + msgspec.json.encode(cfg)
        if key not in self._cache:
            if isinstance(cfg, CompressConfig):
                from bastion.edge.compress import compress_filter

                self._cache[key] = compress_filter(cfg)
            else:
                from bastion.edge.headers import headers_filter

                self._cache[key] = headers_filter(cfg)
        return self._cache[key]


def _with(filters: list[ExchangeFilter], handler: RouteHandler) -> RouteHandler:
    """``handler`` answering through ``filters`` (outermost first)."""
    if not filters:
        return handler
    if len(filters) == 1:
        (only,) = filters

        def one(exchange: Exchange, match: RouteMatch) -> None:
            handler(only(exchange), match)

        return one
    outer, inner = filters

    def two(exchange: Exchange, match: RouteMatch) -> None:
        handler(outer(inner(exchange)), match)

    return two
