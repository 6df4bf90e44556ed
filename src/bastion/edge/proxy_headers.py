"""How the reverse proxy rewrites the heads it passes on: the request head sent
upstream and the response head sent back (:class:`HeaderRewrite`, one per proxy
route), and the rules behind them.

Hop-by-hop headers (those of RFC 9110 7.6.1 and every name the ``Connection`` header
lists) are removed both ways; ``X-Forwarded-For``, ``-Proto``, ``-Host`` and
``Forwarded`` are set from the request head, whose client, scheme and host were already
resolved through the trusted proxies (:mod:`bastion.protocol.forwarded`), so incoming
ones are never passed on as the client wrote them (from a trusted proxy its
``X-Forwarded-For`` and ``Forwarded`` chains are kept, with its address appended);
``Via`` is added; ``X-Request-ID`` is the request id
(:mod:`bastion.observe.requestid`); ``Host`` is passed on or replaced; with
``strip_prefix`` the route's prefix leaves the path and is put back on a ``Location``
that starts with ``/``. Trailer fields pass minus those that must not be trailers.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

from bastion.observe.requestid import request_id as make_request_id
from bastion.protocol.fields import NOT_TRAILERS, accepts_trailers
from bastion.protocol.head import RequestHead, decode_path
from bastion.protocol.types import Exchange

__all__ = [
    "HOP_BY_HOP",
    "HeaderRewrite",
    "connection_names",
    "last_chunk",
    "passable_request_trailers",
    "passable_trailers",
    "with_request_id",
]

#: RFC 9110 7.6.1, plus the old Keep-Alive and Proxy-Connection
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
    }
)
#: request headers bastion sets itself
_SET_BY_PROXY: Final = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"host",
        b"expect",  # bastion answers 100 Continue itself and sends the body anyway
    }
)
_VIA: Final = b"1.1 bastion"
# what a path keeps unescaped when it is written again from its decoded text (a "%" is
# written "%25": the upstream decodes what it gets once, as bastion did)
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~"
_ENCODED_SLASH: Final = re.compile(rb"%2[fF]")
_SLASHES: Final = re.compile(rb"//+")
_REAL_IP: Final = frozenset({b"x-real-ip", b"x-forwarded-port"})
_NOTHING: Final[frozenset[bytes]] = frozenset()

#: request headers handled apart (dropped, replaced, or looked at)
_SPECIAL: Final = HOP_BY_HOP | _SET_BY_PROXY | _REAL_IP | {b"content-length", b"x-request-id"}

# client address -> (its X-Forwarded-For value, Forwarded's for= part), bounded
_FORWARDED_FOR: Final[dict[str, tuple[bytes, bytes]]] = {}


def _forwarded_for(address: str) -> tuple[bytes, bytes]:
    raw = address.encode("latin-1")
    quoted = b'for="[' + raw + b']"' if ":" in address else b"for=" + raw
    found = (raw, quoted)
    if len(_FORWARDED_FOR) >= 4096:
        _FORWARDED_FOR.clear()
    _FORWARDED_FOR[address] = found
    return found


def passable_trailers(
    fields: list[tuple[bytes, bytes]], dropped: frozenset[bytes] = _NOTHING
) -> list[tuple[bytes, bytes]]:
    """``fields`` without those that must not be trailers."""
    return [(n, v) for n, v in fields if n not in NOT_TRAILERS and n not in dropped]


def passable_request_trailers(
    fields: list[tuple[bytes, bytes]], head: RequestHead
) -> list[tuple[bytes, bytes]]:
    """A client's request trailer ``fields`` that may go to the upstream: not those that
    must not be trailers, nor any the request's head has (among them the identity header
    authentication added) or the proxy sets, in any spelling of "-" as "_". An upstream
    that merges trailers into the headers would otherwise take a trailer
    ``X-Remote-User: admin`` as the identity."""
    names = {n.replace(b"_", b"-") for n, _ in head.headers} | _SPECIAL | _REAL_IP
    return [
        (n, v) for n, v in fields if n not in NOT_TRAILERS and n.replace(b"_", b"-") not in names
    ]


def with_request_id(
    headers: list[tuple[bytes, bytes]], head: RequestHead
) -> list[tuple[bytes, bytes]]:
    """``headers`` with the request's id as the one ``X-Request-ID``."""
    out = [(n, v) for n, v in headers if n != b"x-request-id"]
    out.append((b"x-request-id", make_request_id(head).encode("ascii")))
    return out


def last_chunk(trailers: list[tuple[bytes, bytes]]) -> bytes:
    out = [b"0\r\n"]
    for name, value in trailers:
        out += (name, b": ", value, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


#: the usual methods' request-line spelling
_METHODS: Final = {
    m: m.encode("ascii") for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
}

#: the usual ``Connection`` values, already split: most heads carry one of these
_USUAL_CONNECTION: Final = {
    spelling: frozenset([spelling.lower()])
    for spelling in (b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade")
}


def connection_names(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The lowercased names every ``Connection`` header of ``headers`` lists."""
    values = [value for name, value in headers if name == b"connection"]
    if len(values) == 1:
        usual = _USUAL_CONNECTION.get(values[0])
        if usual is not None:
            return usual
    names: list[bytes] = []
    for value in values:
        names.extend(t.strip().lower() for t in value.split(b","))
    return frozenset(names)


def normal_escaped(raw_path: bytes) -> bytes:
    """``raw_path`` decoded, then escaped again the one way: repeated slashes merged, an
    encoded slash kept as ``%2F``, a ``%`` that was encoded written ``%25`` (so
    ``%2561`` stays the text ``%61`` for an upstream that decodes once, and never
    becomes ``a``), anything not safe in a path escaped. (Dot-segments never get
    here: bastion refuses them.)"""
    escaped = b"%2F".join(
        [
            quote(decode_path(piece), safe=_PATH_SAFE, errors="surrogateescape").encode("ascii")
            for piece in _ENCODED_SLASH.split(raw_path)
        ]
    )
    return _SLASHES.sub(b"/", escaped) if escaped.find(b"//") >= 0 else escaped


class HeaderRewrite:
    """The request and response heads a proxy route passes on: with ``prefix``
    (``strip_prefix``) taken off the path and put back on ``Location``, and ``host``
    (``host``) in place of the client's ``Host`` when set."""

    def __init__(self, prefix: bytes, host: bytes, rfc7239: bool = False) -> None:
        self.prefix = prefix
        self.host = host
        #: the trusted proxies set ``Forwarded`` (``server.forwarded_header``), not the
        #: ``X-Forwarded-*`` family
        self.rfc7239 = rfc7239

    def request_head(
        self, exchange: Exchange, framing: bytes, upgrade: bytes = b"", server: bytes = b""
    ) -> bytes:
        """The head of the request sent upstream (``server``: the upstream server's
        authority, the ``Host`` of a request that came without one: HTTP/1.0 may)."""
        head = exchange.head
        path = head.raw_path
        prefix = self.prefix
        if prefix and not path.startswith(prefix):
            # routed by its normalized spelling (``//api/x``, ``/%61pi/x``): strip the
            # prefix from that, as nginx does, not pass the whole path on
            normal = normal_escaped(path)
            if normal.startswith(prefix):
                path = normal
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :] or b"/"
            if path[:1] != b"/":
                path = b"/" + path
        query = head.query_string
        method = _METHODS.get(head.method)
        if method is None:
            method = head.method.encode("ascii")
        out = [method, b" ", path]
        if query:
            out += (b"?", query)
        out.append(b" HTTP/1.1\r\n")
        first = len(out)  # where the header lines start
        host = b""
        dropped: frozenset[bytes] | None = None
        te = False
        for name, value in head.headers:
            if name in _SPECIAL:
                if name == b"host":
                    host = value
                elif name == b"connection" and dropped is None:
                    dropped = connection_names(head.headers)
                elif name == b"te" and not te:
                    te = accepts_trailers(head.headers)
                elif (
                    name == b"x-forwarded-port"
                    and not self.rfc7239
                    and exchange.forwarded_by is not None
                ):
                    # a trusted proxy of the X-Forwarded-* family sets it (AWS's, GCP's)
                    out.append(name + b": " + value + b"\r\n")
                continue
            if dropped is not None and name in dropped:
                continue
            if name.find(b"_") >= 0 and name.replace(b"_", b"-") in _SPECIAL:
                # ``X_Forwarded_For``: a WSGI server upstream makes it the environ key of
                # the header bastion sets (HTTP_X_FORWARDED_FOR), and may put it first
                continue
            out.append(name + b": " + value + b"\r\n")
        if dropped:
            # a header the Connection header names may have come before it
            lines = [ln for ln in out[first:] if ln.split(b":", 1)[0] not in dropped]
            del out[first:]
            out += lines
        if self.host:
            out.append(b"host: " + self.host + b"\r\n")
        elif host:
            out.append(b"host: " + host + b"\r\n")
        elif server:
            out.append(b"host: " + server + b"\r\n")  # (HTTP/1.1 upstream needs one)
        client = head.client
        address = client[0] if client is not None else "unix"
        forwarded = _FORWARDED_FOR.get(address)
        if forwarded is None:
            forwarded = _forwarded_for(address)
        scheme = b"https" if head.scheme == "https" else b"http"
        by = exchange.forwarded_by
        if by is not None:  # a trusted proxy: its chain is kept and the peer appended
            self.forwarded_chain(head, by, forwarded, scheme, host, out, self.rfc7239)
        else:
            out.append(b"x-forwarded-for: " + forwarded[0] + b"\r\nx-forwarded-proto: " + scheme)
            if host:
                out.append(b"\r\nx-forwarded-host: " + host)
                out.append(b"\r\nforwarded: " + forwarded[1] + b";proto=" + scheme)
                out.append(b';host="' + host.replace(b'"', b"") + b'"\r\n')
            else:
                out.append(b"\r\nforwarded: " + forwarded[1] + b";proto=" + scheme + b"\r\n")
        # the client's address as bastion resolved it (what Traefik sets, and nginx's
        # usual proxy_set_header X-Real-IP $remote_addr): never the client's own
        out.append(b"x-real-ip: " + forwarded[0] + b"\r\nvia: 1.1 bastion\r\n")
        if te:  # the client takes trailers: the upstream may send them
            out.append(b"te: trailers\r\n")
        if upgrade:
            out.append(b"connection: upgrade\r\nupgrade: " + upgrade + b"\r\n")
        # the client's when usable, else a new one: the id the access log shows too
        out.append(b"x-request-id: " + make_request_id(head).encode("ascii") + b"\r\n")
        out.append(framing)
        out.append(b"\r\n")
        return b"".join(out)

    @staticmethod
    def forwarded_chain(
        head: RequestHead,
        by: str,
        client: tuple[bytes, bytes],
        scheme: bytes,
        host: bytes,
        out: list[bytes],
        rfc7239: bool = False,
    ) -> None:
        """The forwarding headers of a request from the trusted proxy ``by``: the chain
        of the family it sets (``X-Forwarded-For``, or ``Forwarded`` when ``rfc7239``),
        with its own address appended (nginx's ``$proxy_add_x_forwarded_for``); the
        other family made anew from the client bastion resolved (the proxy passed the
        client's own on untouched: an upstream reading it would get the client's
        claims); ``X-Forwarded-Proto`` and ``-Host`` are the client's, as bastion
        resolved them."""
        fors: list[bytes] = []
        elements: list[bytes] = []
        for name, value in head.headers:
            if name == b"x-forwarded-for" and not rfc7239:
                fors.extend(v.strip() for v in value.split(b",") if v.strip())
            elif name == b"forwarded" and rfc7239:
                elements.extend(v.strip() for v in value.split(b",") if v.strip())
        peer = _FORWARDED_FOR.get(by)
        if peer is None:
            peer = _forwarded_for(by)
        if not fors and client[0] != peer[0]:
            fors.append(client[0])  # vouched for some other way (Forwarded)
        fors.append(peer[0])
        out.append(b"x-forwarded-for: " + b", ".join(fors) + b"\r\nx-forwarded-proto: " + scheme)
        if host:
            out.append(b"\r\nx-forwarded-host: " + host)
        incoming = bool(elements)
        if not incoming:  # the client's element, as for any request, then the proxy's
            element = client[1] + b";proto=" + scheme
            if host:
                element += b';host="' + host.replace(b'"', b"") + b'"'
            elements.append(element)
        if incoming or client[0] != peer[0]:
            elements.append(peer[1])
        out.append(b"\r\nforwarded: " + b", ".join(elements) + b"\r\n")

    def response_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        dropped = _NOTHING
        for name, _ in headers:
            if name == b"connection":
                dropped = connection_names(headers)
                break
        out: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            if name in HOP_BY_HOP or name in dropped:
                continue
            if name == b"location" and self.prefix and value[:1] == b"/" and value[:2] != b"//":
                value = self.prefix + value
            out.append((name, value))
        out.append((b"via", _VIA))
        return out
