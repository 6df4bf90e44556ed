"""Putting the site together in a worker: apps, route pipelines, the router.

:func:`build_site` returns what the worker serves: an object with the interface of an
app gateway (``handler``, ``startup()``, ``shutdown()``, ``interface``).

* Without routes it *is* the default app's gateway: requests go straight to the app,
  exactly as if the edge did not exist; only when ``[compress]`` or ``[headers]`` (or a
  request filter) has something to do, the app's handler becomes a
  :class:`~bastion.edge.pipeline.Pipeline` with those filters.
* With routes it is a :class:`Site`: one gateway per app some route uses (the default
  app only if a route names it), one :class:`~bastion.edge.pipeline.Pipeline` per route
  (its request filters, its handler, its response filters, composed once), and the
  :class:`~bastion.edge.router.Router` as the protocol handler. A request no route
  matches gets 404 or 405 through the top-level response filters.

Where the parts come from: the handler from the route's handler table (``app``,
``static``, ``redirect``, ``return``), the response filters from ``[compress]`` and
``[headers]`` (or the route's own), the request filters from the factories in
:data:`REQUEST_FILTERS`, in that order. A new request filter adds its module and its
factory to that tuple, where the order in which filters run is decided.

Start-up starts the apps, then the upstream groups proxy routes share
(:class:`~bastion.upstream.registry.Upstreams`: one per group, whatever the number of
routes naming it), then every part with a lifecycle
(:class:`~bastion.edge.types.Lifecycle`), route by route; shutdown lets the worker's
request tasks end, stops those parts in reverse order (the groups last), then the apps.

An app mounted by prefix routes gets, as its ``root_path`` (ASGI ``root_path``, WSGI
``SCRIPT_NAME``), the path prefix every one of its prefix and exact routes shares, unless
its own configuration sets one (see :func:`mount_point`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import msgspec

from bastion.config.schema import (
    AppConfig,
    CompressConfig,
    Config,
    HeadersConfig,
    RouteConfig,
)
from bastion.config.tables import DEFAULT_APP
from bastion.edge.access import access_filter
from bastion.edge.auth import auth_filter
from bastion.edge.pipeline import AppHandler, Lifecycles, Pipeline
from bastion.edge.ratelimit import rate_limit_before_auth, rate_limit_filter
from bastion.edge.redirect import redirect_handler
from bastion.edge.respond import NOT_FOUND, method_not_allowed, return_handler
from bastion.edge.router import Router, routing_path
from bastion.edge.types import ExchangeFilter, RequestFilter, RouteHandler, RouteMatch
from bastion.observe.logging import logger
from bastion.protocol.types import Exchange
from bastion.tasks import WorkerTasks

if TYPE_CHECKING:
    from bastion.gateway import Gateway, LoadedApp
    from bastion.upstream.registry import Upstreams

RequestFilterFactory = Callable[[Config, RouteConfig | None, WorkerTasks], RequestFilter | None]
"""Makes one kind of request filter for one route at start-up: called with the whole
configuration, the route (None for the default app when there are no routes) and the
worker's tasks; returns the route's filter, or None when its configuration asks for
nothing (then the route pays nothing for it)."""

#: The request filters a route may get, in the order they run (the real client address
#: before anything that looks at it): access control, the rate limits keyed by address
#: or header (so that failed logins count), authentication, the rate limits keyed by
#: the authenticated user or API key.
REQUEST_FILTERS: tuple[RequestFilterFactory, ...] = (
    access_filter,
    rate_limit_before_auth,
    auth_filter,
    rate_limit_filter,
)


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
    root = mount_point(config, name)
    return msgspec.structs.replace(app, root_path=root) if root else app


def mount_point(config: Config, name: str) -> str:
    """Where app ``name`` is mounted: the longest path prefix (whole segments) that the
    paths of all its prefix routes share, and under which its exact routes lie too; ""
    for none. One route at ``/legacy`` mounts the app at ``/legacy``; routes at
    ``/api/`` and ``/api/admin`` (the second for its access rules) at ``/api``; an app
    also routed at ``/`` (or at ``/a`` and ``/b``) is mounted at the root. (A regex
    route's paths cannot be known: it does not count.)"""
    prefixes = [r.path.rstrip("/") for r in config.routes if r.app == name and r.match == "prefix"]
    if not prefixes:
        return ""
    segments = prefixes[0].split("/")
    for path in prefixes[1:]:
        other = path.split("/")
        n = 0
        while n < len(segments) and n < len(other) and segments[n] == other[n]:
            n += 1
        segments = segments[:n]
    root = "/".join(segments)
    for r in config.routes:
        if (
            r.app == name
            and r.match == "exact"
            and not (r.path == root or r.path.startswith(root + "/"))
        ):
            return ""
    return root


def build_site(
    config: Config,
    loaded: LoadedApp | None = None,
    tasks: WorkerTasks | None = None,
    *,
    request_filters: Sequence[RequestFilterFactory] | None = None,
) -> Gateway:
    """What the worker serves for ``config``; ``loaded`` is the preloaded default app,
    ``tasks`` the worker's background tasks (every app, handler and filter spawns there),
    ``request_filters`` the factories of request filters (:data:`REQUEST_FILTERS`
    unless given).

    Imports every app the routes use (raising :class:`~bastion.gateway.AppLoadError`
    naming the app that failed) and builds every route's pipeline.
    """
    from bastion.gateway import AppLoadError, build_gateway

    if tasks is None:
        tasks = WorkerTasks()
    factories = REQUEST_FILTERS if request_filters is None else tuple(request_filters)
    if not config.routes:
        gateway = build_gateway(config, loaded, tasks)
        response = _Filters(config.compress, config.headers).top
        request = _request_filters(factories, config, None, tasks)
        if not response and not request:
            return gateway
        pipeline = Pipeline(
            AppHandler(gateway.handler),
            request_filters=request,
            response_filters=response,
            tasks=tasks,
        )
        return _FilteredApp(config, gateway, pipeline, tasks)
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
    return Site(config, gateways, tasks, factories)


def _request_filters(
    factories: Sequence[RequestFilterFactory],
    config: Config,
    route: RouteConfig | None,
    tasks: WorkerTasks,
) -> list[RequestFilter]:
    made = (factory(config, route, tasks) for factory in factories)
    return [f for f in made if f is not None]


class _Served:
    """Apps and the edge's parts with a lifecycle, started and stopped in order (what
    :class:`Site` and :class:`_FilteredApp` share)."""

    def __init__(
        self,
        config: Config,
        gateways: dict[str, Gateway],
        tasks: WorkerTasks,
        pipelines: Sequence[Pipeline],
        shared: Sequence[object] = (),
    ) -> None:
        self.gateways = gateways
        self.tasks = tasks
        self.grace = min(config.workers.graceful_timeout, 2.0)
        #: the parts several routes share (started first, stopped last), then the
        #: filters and handlers with a lifecycle, in start order
        self.parts = Lifecycles(
            [*shared, *(part for pipeline in pipelines for part in pipeline.parts)]
        )
        self.started: list[Gateway] = []

    @property
    def interface(self) -> Literal["asgi", "wsgi"]:
        first = next(iter(self.gateways.values()), None)
        return first.interface if first is not None else "asgi"

    async def startup(self) -> None:
        """Start each app in turn, then the edge's parts; if one fails, stop those
        already started (in reverse order) and raise."""
        for name, gateway in self.gateways.items():
            try:
                await gateway.startup()
            except Exception:
                if name != DEFAULT_APP:
                    logger.error("app %s (apps.%s) failed to start", name, name)
                await self._stop_apps(None)
                raise
            self.started.append(gateway)
        try:
            await self.parts.startup()
        except Exception:
            await self._stop_apps(None)
            raise

    async def shutdown(self, grace: float | None = None) -> None:
        # requests still at work (apps, file sends, filters) end first, within the grace
        # period; then the parts they used, then the apps
        await self.tasks.finish(self.grace if grace is None else grace)
        await self.parts.shutdown()
        await self._stop_apps(grace)

    async def _stop_apps(self, grace: float | None) -> None:
        while self.started:
            gateway = self.started.pop()
            try:
                await gateway.shutdown(grace)
            except Exception:
                logger.exception("error while stopping an app")


class Site(_Served):
    """Several apps and other handlers behind one router (a gateway to the worker)."""

    def __init__(
        self,
        config: Config,
        gateways: dict[str, Gateway],
        tasks: WorkerTasks,
        request_filters: Sequence[RequestFilterFactory] = (),
    ) -> None:
        filters = _Filters(config.compress, config.headers)
        #: the upstream groups, one per group some proxy route names, shared by them
        self.upstreams: Upstreams | None = None
        if any(route.proxy is not None for route in config.routes):
            from bastion.upstream.registry import Upstreams

            self.upstreams = Upstreams(config.upstreams, tasks)
        pipelines = [
            Pipeline(
                self._route_handler(
                    route, gateways, tasks, self.upstreams, config.server.forwarded_header
                ),
                request_filters=_request_filters(request_filters, config, route, tasks),
                response_filters=filters.for_route(route),
                tasks=tasks,
            )
            for route in config.routes
        ]
        not_found = Pipeline(self._not_found, response_filters=filters.top, tasks=tasks)
        shared = [self.upstreams] if self.upstreams is not None else []
        super().__init__(config, gateways, tasks, [*pipelines, not_found], shared)
        self.pipelines = pipelines
        self.router = Router(
            config.routes, [p.route_handler for p in pipelines], not_found.route_handler
        )
        self.handler: Callable[[Exchange], None] = self.router

    @staticmethod
    def _route_handler(
        route: RouteConfig,
        gateways: dict[str, Gateway],
        tasks: WorkerTasks,
        upstreams: Upstreams | None,
        forwarded_header: str = "x-forwarded",
    ) -> RouteHandler:
        if route.app:
            return AppHandler(gateways[route.app].handler)
        if route.static is not None:
            from bastion.edge.static import StaticHandler

            return StaticHandler(route.static, tasks)
        if route.redirect is not None:
            return redirect_handler(route.redirect)
        if route.proxy is not None:
            from bastion.edge.proxy import ProxyHandler

            assert upstreams is not None
            group = upstreams.get(route.proxy.upstream)
            prefix = route.path if route.match == "prefix" else ""
            return ProxyHandler(route.proxy, group.cfg, tasks, prefix, group, forwarded_header)
        assert route.respond is not None  # the config checks allow nothing else
        return return_handler(route.respond)

    def _not_found(self, exchange: Exchange, match: RouteMatch) -> None:
        allowed = self.router.allowed(
            self.router.host_of(exchange),
            routing_path(exchange.head.normalized_path),
            exchange.head.headers,
        )
        if allowed:
            method_not_allowed(allowed)(exchange, match)
        else:
            NOT_FOUND(exchange, match)


class _FilteredApp(_Served):
    """The default app alone, as one pipeline: its responses through ``[compress]`` and
    ``[headers]``, its requests through the request filters."""

    def __init__(
        self, config: Config, gateway: Gateway, pipeline: Pipeline, tasks: WorkerTasks
    ) -> None:
        super().__init__(config, {DEFAULT_APP: gateway}, tasks, [pipeline])
        self.gateway = gateway
        self.handler: Callable[[Exchange], None] = pipeline.protocol_handler()


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
        """Outermost first: the handler writes to the compression wrapper, which writes
        to the headers wrapper, so the header rules have the last word on every
        response."""
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
