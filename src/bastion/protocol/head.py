"""The request head: what a request is, read once and shared by everything after it.

A connection protocol builds one :class:`RequestHead` per request when its head has been
parsed; the exchange carries it, and the edge (router, filters, static files), the
gateways, the access log and the test fakes all read the request from it. It is never
changed: a layer that must present a different request (a prefix stripped, the real
client address behind a trusted proxy) makes a new head with :meth:`RequestHead.replace`.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote_to_bytes

from bastion.protocol.tls import TLSInfo

__all__ = ["RequestHead", "decode_path", "has_dot_segment", "normalize_path", "path_refusal"]

_ENCODED_SLASH: Final = re.compile(rb"%2[fF]")
_CONTROL: Final = re.compile(rb"[\x00-\x1f\x7f]")
_SLASHES: Final = re.compile(r"//+")


def decode_path(raw_path: bytes) -> str:
    """The percent-decoded path as text (UTF-8; undecodable bytes kept as surrogates)."""
    if raw_path.find(b"%") >= 0:
        return unquote_to_bytes(raw_path).decode("utf-8", "surrogateescape")
    if raw_path.isascii():
        return raw_path.decode()  # the common case, on the decoder's fast path
    return raw_path.decode("utf-8", "surrogateescape")


# raw paths with nothing to normalise, to their decoded text (bounded): a site's usual
# paths are looked up once instead of searched three times per request
_PLAIN: Final[dict[bytes, str]] = {}

_DOTS: Final = (b".", b"..")


def path_refusal(raw_path: bytes, semicolons: bool = False) -> str:
    """Why a request with this path is refused (400), or "" when it is not: a
    dot-segment (:func:`has_dot_segment`), a control character once decoded (``%0A``,
    ``%00``...), or a ``;`` (also ``%3B``) unless ``semicolons``. Each would have the
    path matched as one and read as another: ``/admin%0A`` is under no ``/admin``
    rule, while a framework whose route pattern ends in ``$`` (Starlette, FastAPI)
    routes ``/admin\\n`` to ``/admin``; ``/admin;x/secret`` is under no ``/admin``
    rule either, while Java servers (Tomcat, Jetty) drop ``;...`` from each segment and
    serve ``/admin/secret`` (Spring Security refuses ``;`` by default for this). (A raw
    control character never gets this far: the parser refuses it.)"""
    if not semicolons and raw_path.find(b";") >= 0:
        return "';' in the path (server.allow_path_semicolons)"
    if raw_path in _PLAIN:
        return ""
    text = raw_path
    if raw_path.find(b"%") >= 0:
        text = unquote_to_bytes(raw_path)  # (once, for every check below)
        if _CONTROL.search(text) is not None:
            return "control character in the path"
        if not semicolons and text.find(b";") >= 0:
            return "';' in the path (server.allow_path_semicolons)"
    if _dotted(text):
        return "dot-segment in the path"
    return ""


def has_dot_segment(raw_path: bytes) -> bool:
    """Whether the path has a ``.`` or ``..`` segment, in any spelling (``/../``,
    ``/%2e%2E/``, ``/..%2F``). Clients resolve them before sending (RFC 3986 5.2.4;
    browsers, curl, httpx and urllib3 all do), and such a path would be routed as one
    path and read by the app as another: the router resolves ``/admin/../x`` to ``/x``,
    while a framework routes the text ``/admin/../x`` to its ``/admin/<path>`` handler,
    past the access rules of ``/admin``. bastion refuses them (400), also with path
    parameters (``/..;x/``, ``/.;/``), which Java servers (Tomcat, Jetty) strip from a
    segment before resolving it: ``/public/..;/admin`` is ``/admin`` to them. Only a
    path with ``/.`` or ``%`` costs anything (one seen before, a lookup)."""
    if raw_path in _PLAIN:
        return False  # a path seen before with nothing to normalise (the usual case)
    if raw_path.find(b"%") < 0:
        return _dotted(raw_path)
    return _dotted(unquote_to_bytes(raw_path))


def _dotted(text: bytes) -> bool:
    """Whether the decoded path ``text`` has a dot-segment (with or without
    parameters)."""
    if text.find(b"/.") < 0:
        return False
    return any(
        part in _DOTS or (part.find(b";") > 0 and part.partition(b";")[0] in _DOTS)
        for part in text.split(b"/")
    )


def normalize_path(raw_path: bytes, path: str) -> str:
    """The path routes and static files are matched against: ``path`` (the decoded
    ``raw_path``) with repeated slashes merged and dot-segments removed (RFC 3986 5.2.4),
    so that ``//admin``, ``/./admin``, ``/%61dmin`` and ``/x/../admin`` are all
    ``/admin``. An encoded slash stays ``%2F``: it is not a separator. Only a path with
    ``%``, ``//`` or ``/.`` costs anything; any other is returned as it is."""
    if raw_path.find(b"%") < 0 and raw_path.find(b"//") < 0 and raw_path.find(b"/.") < 0:
        return path
    if raw_path[:1] != b"/":
        return path  # "*"
    if _ENCODED_SLASH.search(raw_path) is not None:
        text = "%2F".join([decode_path(p) for p in _ENCODED_SLASH.split(raw_path)])
    else:
        text = path
    if text.find("//") >= 0:
        text = _SLASHES.sub("/", text)
    if text.find("/.") >= 0:
        parts = text.split("/")
        out: list[str] = []
        for part in parts[1:]:
            if part == "..":
                if out:
                    out.pop()
            elif part != ".":
                out.append(part)
        last = parts[-1]
        if last == "." or last == "..":
            out.append("")  # "/a/b/.." is the directory "/a/"
        text = "/" + "/".join(out)
    return text


class RequestHead:
    """One request's method, target, headers and the two ends of its connection.

    Header names are lower-cased ASCII bytes; values are exactly as received, in order.
    ``client`` and ``scheme`` are the ones the connection saw (later layers that know
    better, such as trusted proxies or TLS, make a new head).
    """

    __slots__ = (
        "client",
        "context",
        "headers",
        "http_version",
        "method",
        "normalized_path",
        "path",
        "query_string",
        "raw_path",
        "request_id",
        "route",
        "scheme",
        "server",
        "tls",
        "upstream",
        "user",
    )

    def __init__(
        self,
        method: str,
        raw_path: bytes,
        query_string: bytes,
        http_version: str,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        scheme: str = "http",
        path: str | None = None,
        normalized_path: str | None = None,
        tls: TLSInfo | None = None,
        user: str | None = None,
        context: dict[str, object] | None = None,
    ) -> None:
        self.method: Final = method
        #: the path part of the request target, still percent-encoded
        self.raw_path: Final = raw_path
        if path is None:
            # a usual path of the site, seen before with nothing to normalise: one lookup
            path = _PLAIN.get(raw_path)
            if path is not None:
                if normalized_path is None:
                    normalized_path = path
            else:
                path = decode_path(raw_path)
                if normalized_path is None:
                    normalized_path = normalize_path(raw_path, path)
                    if normalized_path is path and len(_PLAIN) < 1024:
                        _PLAIN[raw_path] = path
        #: the percent-decoded path (UTF-8, undecodable bytes kept as surrogates)
        self.path: Final = path
        #: the path routes and static files see: decoded, repeated slashes merged,
        #: dot-segments removed, encoded slashes kept as "%2F" (see normalize_path); the
        #: same object as ``path`` when there was nothing to normalise
        self.normalized_path: Final = (
            normalize_path(raw_path, path) if normalized_path is None else normalized_path
        )
        #: the query, without the "?"
        self.query_string: Final = query_string
        #: "1.0", "1.1" (later "2")
        self.http_version: Final = http_version
        #: (lower-cased name, value) pairs; only ever read
        self.headers: Final = headers
        self.client: Final = client
        #: (host, port), or (unix socket path, None)
        self.server: Final = server
        #: "http" or "https"
        self.scheme: Final = scheme
        #: the TLS facts of the connection (protocol, cipher, client certificate), or None
        self.tls: Final = tls
        #: the user a layer before the app established (CGI's REMOTE_USER), or None
        self.user: Final = user
        #: what layers before the app learned about the request, for the app, by
        #: namespaced key (e.g. "bastion.auth"), or None: each key goes into a WSGI
        #: environ and into an ASGI scope's "extensions"
        self.context: Final = context
        #: the index of the route that answers the request (the router sets it), or -1
        #: when none did (no routes, no match, or a request refused before routing)
        self.route = -1
        #: the request's id for the logs and upstreams (see observe/requestid.py), "" until
        #: something asks for it
        self.request_id = ""
        #: the upstream server that answered ("host:port"), "" when not proxied
        self.upstream = ""

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def replace(
        self,
        *,
        raw_path: bytes | None = None,
        path: str | None = None,
        query_string: bytes | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        client: tuple[str, int] | None = None,
        scheme: str | None = None,
        user: str | None = None,
        context: dict[str, object] | None = None,
    ) -> RequestHead:
        """A copy with the given fields changed (``path`` follows ``raw_path`` unless
        given)."""
        if raw_path is not None and path is None:
            path = decode_path(raw_path)
        normalized = None
        if raw_path is None and path is None:
            normalized = self.normalized_path
        head = RequestHead(
            self.method,
            self.raw_path if raw_path is None else raw_path,
            self.query_string if query_string is None else query_string,
            self.http_version,
            self.headers if headers is None else headers,
            self.client if client is None else client,
            self.server,
            self.scheme if scheme is None else scheme,
            self.path if path is None else path,
            normalized,
            self.tls,
            self.user if user is None else user,
            self.context if context is None else context,
        )
        head.route = self.route
        head.request_id = self.request_id
        head.upstream = self.upstream
        return head

    def __repr__(self) -> str:
        target = self.raw_path + (b"?" + self.query_string if self.query_string else b"")
        return f"<RequestHead {self.method} {target.decode('latin-1')} HTTP/{self.http_version}>"
