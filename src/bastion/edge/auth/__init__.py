"""Authentication at the edge: request filters that establish who a request is for.

One factory, :func:`auth_filter`, makes a route's filter from its ``auth_basic``,
``auth_api_key``, ``auth_jwt`` or ``auth_forward`` table (see
:mod:`bastion.config.auth_schema` and docs/authentication.md); what the methods share
is in :mod:`.identity`. Methods that need a package of the ``auth`` extra import it only
when a route uses them.
"""

from __future__ import annotations

from bastion.config.schema import Config, RouteConfig
from bastion.edge.types import RequestFilter
from bastion.tasks import WorkerTasks

__all__ = ["MissingExtraError", "auth_filter"]


class MissingExtraError(RuntimeError):
    """A route uses a method whose packages (the ``auth`` extra) are not installed."""


def _need(what: str, exc: ImportError) -> MissingExtraError:
    return MissingExtraError(
        f"{what} needs the auth extra ({exc.name} is missing): pip install 'bastion[auth]'"
    )


def auth_filter(
    config: Config, route: RouteConfig | None, tasks: WorkerTasks
) -> RequestFilter | None:
    """The route's authentication filter, or None when it has none."""
    if route is None:
        return None
    if route.auth_api_key is not None:
        from bastion.edge.auth.api_key import ApiKeyFilter

        return ApiKeyFilter(route.auth_api_key)
    if route.auth_basic is not None:
        try:
            from bastion.edge.auth.basic import BasicFilter
        except ImportError as exc:
            raise _need("auth_basic", exc) from exc
        return BasicFilter(route.auth_basic, config.limits.client_ipv6_prefix)
    if route.auth_jwt is not None:
        try:
            from bastion.edge.auth.jwt import JwtFilter
        except ImportError as exc:
            raise _need("auth_jwt", exc) from exc
        return JwtFilter(route.auth_jwt)
    if route.auth_forward is not None:
        try:
            from bastion.edge.auth.forward import ForwardFilter
        except ImportError as exc:
            raise _need("auth_forward", exc) from exc
        return ForwardFilter(route.auth_forward)
    return None
