"""What every authentication method shares: handing the identity on, and refusing.

An accepted request goes on as an :class:`~bastion.edge.wrap.ExchangeWithHead` whose
head carries the identity: ``head.user`` (WSGI ``REMOTE_USER``) and
``head.context["bastion.auth"]`` (WSGI ``environ["bastion.auth"]``, ASGI
``scope["extensions"]["bastion.auth"]``), a dict::

    {"user": "alice", "method": "basic" | "api_key" | "jwt" | "forward", ...}

(``"claims"`` for JWT: the token's verified claims). The identity header, when
configured, is set to the user name; whatever copy of it the client sent is removed on
every request of the route, accepted or not, so the app never sees a forged one.

A refused request gets 401 with ``WWW-Authenticate`` (no or wrong credentials) or 403
(credentials fine, identity refused), and one log line at warning level with the client
address, the method, the path and the reason, never the credentials themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bastion.edge.wrap import ExchangeWithHead
from bastion.observe.logging import logger
from bastion.protocol.head import RequestHead
from bastion.protocol.types import Exchange

__all__ = ["CONTEXT_KEY", "Admitted", "Gate", "logged_path", "refuse", "usable_name"]

#: the key of the identity in ``head.context``: environ / scope["extensions"] key
CONTEXT_KEY = "bastion.auth"

_REASONS = {401: b"Unauthorized\n", 403: b"Forbidden\n", 429: b"Too Many Requests\n"}


class Gate:
    """Hands an accepted request on with its identity; strips forged identity headers."""

    __slots__ = ("header", "method", "strip")

    def __init__(self, method: str, identity_header: str, strip: Iterable[str] = ()) -> None:
        self.method = method
        self.header = identity_header.lower().encode("latin-1") if identity_header else b""
        names = {n.lower().encode("latin-1").replace(b"_", b"-") for n in strip}
        if self.header:
            names.add(self.header.replace(b"_", b"-"))
        #: request headers a client may not set on this route (the identity header, the
        #: headers forward auth copies in), in any spelling of "-" as "_": CGI-style
        #: servers and frameworks read ``X_Remote_User`` as ``X-Remote-User``
        #: (both become HTTP_X_REMOTE_USER)
        self.strip = frozenset(names)

    def admit(
        self,
        exchange: Exchange,
        user: str | None,
        details: Mapping[str, object] | None = None,
        *,
        add_headers: Iterable[tuple[bytes, bytes]] = (),
        query_string: bytes | None = None,
    ) -> Exchange:
        """``exchange`` as the request of ``user`` (None: an anonymous pass), with
        ``add_headers`` (lower-case names) added and the query replaced when
        ``query_string`` is given."""
        head = exchange.head
        strip = self.strip
        headers = (
            [(k, v) for k, v in head.headers if k.replace(b"_", b"-") not in strip]
            if strip
            else head.headers.copy()
        )
        if strip:
            # a client that names a header in Connection has a proxy drop it (hop by
            # hop): it must not get the identity header bastion adds dropped that way
            for i, (k, v) in enumerate(headers):
                if k == b"connection":
                    tokens = [t.strip() for t in v.split(b",")]
                    kept = [t for t in tokens if t.lower().replace(b"_", b"-") not in strip]
                    if len(kept) != len(tokens):
                        headers[i] = (k, b", ".join(kept))
        headers.extend(add_headers)
        if user is not None and not usable_name(user):
            raise ValueError("an identity with a control character")  # (callers check)
        if self.header and user is not None:
            headers.append((self.header, user.encode("utf-8")))
        info: dict[str, object] = {"user": user, "method": self.method}
        if details:
            info.update(details)
        context = dict(head.context) if head.context else {}
        context[CONTEXT_KEY] = info
        new = head.replace(headers=headers, user=user, context=context, query_string=query_string)
        return Admitted(exchange, new, strip) if strip else ExchangeWithHead(exchange, new)


class Admitted(ExchangeWithHead):
    """An accepted request whose request trailers cannot carry the headers its route
    strips: on an anonymous pass the head has no identity header for the proxy to hold a
    trailer ``X-Remote-User: admin`` against, and an upstream that merges trailers into
    the headers would take it as the identity."""

    __slots__ = ("_strip",)

    def __init__(self, inner: Exchange, head: RequestHead, strip: frozenset[bytes]) -> None:
        super().__init__(inner, head)
        self._strip = strip

    @property
    def request_trailers(self) -> list[tuple[bytes, bytes]]:
        fields = self._inner.request_trailers
        if not fields:
            return fields
        strip = self._strip
        return [(n, v) for n, v in fields if n.replace(b"_", b"-") not in strip]


def usable_name(user: str) -> bool:
    """Whether ``user`` can be passed on as an identity: at most 1,024 characters and no
    control character (a CR or LF in a request header would end it there)."""
    return len(user) <= 1024 and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in user)


def logged_path(head: RequestHead) -> str:
    """The path for a log line: as the client sent it (still percent-encoded, as nginx
    logs it), so that no decoded line break or other control character can start a log
    line of the client's choosing; without the query, which may hold an API key."""
    return head.raw_path.decode("latin-1")


def client_text(exchange: Exchange) -> str:
    client = exchange.head.client
    if client is None:
        return "-"
    host, port = client
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def refuse(
    exchange: Exchange,
    method: str,
    reason: str,
    *,
    status: int = 401,
    challenge: str = "",
) -> None:
    """Answer ``status`` (401 with ``challenge`` as ``WWW-Authenticate``, 403, or 429 with
    ``Retry-After: 1``) and log one line. ``reason`` must never hold a credential."""
    head = exchange.head
    logger.warning(
        "auth %s refused %s %s from %s: %s (%d)",
        method,
        head.method,
        logged_path(head),
        client_text(exchange),
        reason,
        status,
    )
    body = _REASONS.get(status, b"Refused\n")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
    ]
    if status == 401 and challenge:
        headers.append((b"www-authenticate", challenge.encode("latin-1")))
    elif status == 429:
        headers.append((b"retry-after", b"1"))
    exchange.start_response(status, headers)
    exchange.finish(b"" if head.method == "HEAD" else body)
