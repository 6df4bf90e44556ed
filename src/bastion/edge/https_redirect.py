"""The handler of ``tls.redirect_bind`` listeners: every plain-HTTP request gets a 308 to
the same URL over https.

The host is the request's ``Host`` (its port dropped), the port that of the first TLS
listener unless it is 443, path and query exactly as sent. 308 keeps the method and body
(RFC 9110 15.4.9), so a POST is repeated over https rather than turned into a GET. A
request without a usable ``Host`` gets a 400: there is no name to send it to.
"""

from __future__ import annotations

import re

from bastion.protocol.types import Exchange

# a DNS name or IPv4 address, or an IPv6 literal in brackets, then an optional port
_HOST = re.compile(rb"([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_BAD = b"A plain HTTP request needs a Host header to be redirected to https.\n"


class HttpsRedirect:
    """A protocol :data:`~bastion.protocol.types.Handler` answering 308 to https."""

    __slots__ = ("suffix",)

    def __init__(self, https_port: int) -> None:
        self.suffix = b"" if https_port == 443 else b":%d" % https_port

    def __call__(self, exchange: Exchange) -> None:
        head = exchange.head
        host = head.header(b"host") or b""
        m = _HOST.fullmatch(host)
        if m is None:
            exchange.start_response(
                400,
                [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"%d" % len(_BAD)),
                ],
            )
            exchange.finish(b"" if head.method == "HEAD" else _BAD)
            return
        target = head.raw_path + (b"?" + head.query_string if head.query_string else b"")
        location = b"https://" + m.group(1).lower() + self.suffix + target
        body = b"Moved to " + location + b"\n"
        exchange.start_response(
            308,
            [
                (b"location", location),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
            ],
        )
        exchange.finish(b"" if head.method == "HEAD" else body)
