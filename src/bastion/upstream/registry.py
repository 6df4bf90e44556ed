"""The upstream groups of one worker: one :class:`~bastion.upstream.group.Upstream` per
``[upstreams.NAME]`` table that some route proxies to, shared by every route that names
it (as an nginx ``upstream`` block or an Envoy cluster is).

Two routes to the same group so share its balancer state, connection pool, retry
budget, passive ejections, health checks and name re-resolution; what is per route
(``strip_prefix``, ``host``, ``buffer_request``, ``tunnel_idle_timeout``) stays with the
route's :class:`~bastion.edge.proxy.ProxyHandler`.

The site builds one :class:`Upstreams` while it is assembled and lists it before the
routes' parts: it starts each group once, before any route, and stops each once, after
every route (and the requests they were serving) has ended.
"""

from __future__ import annotations

from collections.abc import Mapping

from bastion.config.schema import UpstreamConfig
from bastion.tasks import WorkerTasks
from bastion.upstream.group import Upstream

__all__ = ["Upstreams"]


class Upstreams:
    """The worker's upstream groups, made on first use (a
    :class:`~bastion.edge.types.Lifecycle`)."""

    def __init__(self, configs: Mapping[str, UpstreamConfig], tasks: WorkerTasks) -> None:
        self.configs = configs
        self.tasks = tasks
        #: name -> group, in order of first use
        self.groups: dict[str, Upstream] = {}
        self.started: list[Upstream] = []

    def get(self, name: str) -> Upstream:
        """The group ``name`` (``KeyError`` for a name no ``[upstreams]`` table has)."""
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = Upstream(name, self.configs[name])
        return group

    async def startup(self) -> None:
        for group in self.groups.values():
            group.start(self.tasks)
            self.started.append(group)

    async def shutdown(self) -> None:
        while self.started:
            self.started.pop().stop()

    def __repr__(self) -> str:
        return f"<upstream groups {', '.join(self.groups)}>"
