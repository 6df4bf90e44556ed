"""Forward authentication: ask an auth service about each request (Traefik
ForwardAuth, nginx ``auth_request``).

The sub-request goes to ``url`` with ``method``; it carries ``X-Forwarded-Method``,
``X-Forwarded-Proto``, ``X-Forwarded-Host``, ``X-Forwarded-Uri`` (path and query as
received) and ``X-Forwarded-For`` (the client address), plus the request headers named
in ``request_headers``. No body is sent.

* A 2xx answer lets the request through: the headers named in ``response_headers`` are
  copied from it into the request (any copy the client sent is removed first), and the
  ``user_header`` of the answer, when set, names the identity.
* Any other answer goes back to the client as it is: status, body and headers
  (``WWW-Authenticate``, ``Location``, ``Set-Cookie``...), except the hop-by-hop ones.
* No answer within ``timeout``: ``timeout_status`` (503). An unreachable service or an
  answer that cannot be read: 502. Both are logged.

The sub-request runs as the route's awaiting filter, a task of the worker: it never
blocks the event loop, and a client that leaves cancels it.
"""

from __future__ import annotations

import asyncio

from bastion.clients.forward import ForwardClient, ForwardTimeout, ForwardUnreachable
from bastion.config.auth_schema import ForwardAuthConfig
from bastion.edge.auth.identity import Gate, client_text, logged_path, refuse, usable_name
from bastion.edge.types import FilterResult, RouteMatch
from bastion.observe.logging import logger
from bastion.protocol.types import Exchange

__all__ = ["ForwardFilter"]

# not passed back to the client from the auth service's answer (RFC 9110 7.6.1, and the
# framing, which bastion sets for the body it sends)
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"content-length",
        b"content-encoding",  # httpx hands over the body decoded
        b"server",
        b"date",
    }
)


class ForwardFilter:
    """A route's ``auth_forward`` filter; a :class:`~bastion.edge.types.Lifecycle` (its
    connection pool)."""

    def __init__(self, cfg: ForwardAuthConfig) -> None:
        self.cfg = cfg
        self.client = ForwardClient(cfg.url, cfg.method, cfg.timeout, cfg.max_connections)
        self.send = frozenset(n.lower().encode("latin-1") for n in cfg.request_headers)
        self.copy = tuple(n.lower().encode("latin-1") for n in cfg.response_headers)
        self.user_header = cfg.user_header.lower().encode("latin-1")
        self.gate = Gate("forward", cfg.identity_header, cfg.response_headers)

    async def startup(self) -> None:
        await self.client.start()

    async def shutdown(self) -> None:
        await self.client.close()

    def __call__(self, exchange: Exchange, match: RouteMatch) -> FilterResult:
        return self._ask(exchange)

    def _sub_request_headers(self, exchange: Exchange) -> list[tuple[bytes, bytes]]:
        head = exchange.head
        uri = head.raw_path + (b"?" + head.query_string if head.query_string else b"")
        out = [
            (b"x-forwarded-method", head.method.encode("ascii")),
            (b"x-forwarded-proto", head.scheme.encode("ascii")),
            (b"x-forwarded-uri", uri),
        ]
        host = head.header(b"host")
        if host is not None:
            out.append((b"x-forwarded-host", host))
        if head.client is not None:
            out.append((b"x-forwarded-for", head.client[0].encode("ascii")))
        send = self.send
        out.extend((k, v) for k, v in head.headers if k in send)
        return out

    async def _ask(self, exchange: Exchange) -> Exchange | None:
        cfg = self.cfg
        try:
            async with asyncio.timeout(cfg.timeout):
                answer = await self.client.ask(self._sub_request_headers(exchange))
        except (TimeoutError, ForwardTimeout):
            self._fail(
                exchange, cfg.timeout_status, f"no answer from {cfg.url} in {cfg.timeout:g} s"
            )
            return None
        except ForwardUnreachable as exc:
            self._fail(exchange, 502, f"{cfg.url}: {exc}")
            return None
        if 200 <= answer.status < 300:
            found = answer.headers
            add = [(k, v) for k, v in found if k in self.copy]
            user: str | None = None
            if self.user_header:
                for k, v in found:
                    if k == self.user_header:
                        user = v.decode("utf-8", "replace")
                        break
            if user and not usable_name(user):
                # it would go into REMOTE_USER, the access log and a request header
                refuse(
                    exchange, "forward", "the auth service's user is not a usable name", status=403
                )
                return None
            return self.gate.admit(exchange, user or None, add_headers=add)
        head = exchange.head
        logger.warning(
            "auth forward refused %s %s from %s: the auth service answered %d",
            head.method,
            logged_path(head),
            client_text(exchange),
            answer.status,
        )
        headers = [(k, v) for k, v in answer.headers if k not in _HOP]
        body = b"" if head.method == "HEAD" or answer.status in (204, 304) else answer.body
        if answer.status not in (204, 304):
            headers.append((b"content-length", str(len(answer.body)).encode("ascii")))
        exchange.start_response(answer.status, headers)
        exchange.finish(body)
        return None

    def _fail(self, exchange: Exchange, status: int, reason: str) -> None:
        head = exchange.head
        logger.error(
            "auth forward: %s %s from %s: %s (%d)",
            head.method,
            logged_path(head),
            client_text(exchange),
            reason,
            status,
        )
        body = b"Authentication service unavailable\n"
        exchange.start_response(
            status,
            [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        )
        exchange.finish(b"" if head.method == "HEAD" else body)
