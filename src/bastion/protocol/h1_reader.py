"""Reading HTTP/1.x request heads: bytes in, checked request heads out.

:class:`H1Reader` is the half of an HTTP/1.1 connection that talks to httptools
(llhttp): it receives the parser's callbacks, bounds the request line, the header block
and the number of headers, applies the framing rules of
:mod:`bastion.protocol.h1_framing`, splits the request target, and hands each complete
head to :meth:`H1Reader.head_parsed`. A request that cannot be accepted goes to
:meth:`H1Reader.refuse` with its status instead; a request that asks to switch protocols
goes to :meth:`H1Reader.switch_asked` with the bytes that followed it.

The connection (:class:`~bastion.protocol.http1.HTTP1Protocol`) subclasses it and
implements those three, plus the body callbacks ``on_body`` and ``on_message_complete``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import httptools

from bastion.protocol.flow import Flow
from bastion.protocol.h1_exchange import H1Link
from bastion.protocol.h1_framing import (
    CHUNK_FRAMING_ALLOWANCE,
    FRAMING_HEADERS,
    MAX_CHUNK_EXTENSIONS,
    FramingHeaders,
    Reject,
    absolute_target,
    authority_form_ok,
    doubled_space,
    host_ok,
    parser_error_status,
)
from bastion.protocol.head import path_refusal
from bastion.protocol.settings import ProtocolSettings
from bastion.protocol.state import ConnectionTracker

__all__ = ["H1Reader"]

# method names as text, made once (llhttp knows only its fixed set of methods)
_METHODS: Final[dict[bytes, str]] = {}

# what the header list is between heads (on_message_begin makes a new one for each head)
_NONE: Final[list[tuple[bytes, bytes]]] = []


def _no_parser(data: bytes) -> None:
    raise RuntimeError("no parser yet")


class H1Reader(H1Link):
    """Request-head parsing for one connection (a base of the connection class)."""

    __slots__ = (
        "_chunk_excess",
        "_chunked",
        "_chunks",
        "_connection",
        "_feed",
        "_feed_at",
        "_feed_parser",
        "_framing",
        "_head_bytes",
        "_head_limit",
        "_headers",
        "_hosts",
        "_hsize",
        "_in_head",
        "_max_hcount",
        "_max_hsize",
        "_max_url",
        "_messages",
        "_parser",
        "_pending_reject",
        "_replay_head",
        "_replaying",
        "_semicolons",
        "_trailers",
        "_url",
    )

    def __init__(self, settings: ProtocolSettings, tracker: ConnectionTracker, flow: Flow) -> None:
        super().__init__(settings, tracker, flow)
        self._parser: httptools.HttpRequestParser | None = None  # made at the first byte
        self._feed_parser: Callable[[bytes], None] = _no_parser
        self._pending_reject: Reject | None = None
        self._url = b""
        self._headers = _NONE
        #: the trailer fields of the chunked body being read (None: none yet)
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._hsize = 0
        self._framing: FramingHeaders | None = None  # only once a framing header appears
        self._hosts = 0  # Host headers in the head being read
        self._connection = False  # a Connection header in the head being read
        self._in_head = False  # between the first byte of a head and its end
        self._head_bytes = 0
        self._max_url = settings.max_request_line
        self._semicolons = settings.allow_path_semicolons
        self._max_hsize = settings.max_header_size
        self._max_hcount = settings.max_header_count
        # a head may be the request line plus the header block, with line endings
        self._head_limit = (
            settings.max_request_line
            + settings.max_header_size
            + 4 * settings.max_header_count
            + 64
        )
        self._replay_head = b""  # framing of a body sent with a request that asked to switch
        self._replaying = False
        self._feed = b""  # the bytes being fed (for the request-line check), else empty
        self._feed_at = 0  # where in them the last request target was found
        self._messages = 0  # heads begun on this connection
        self._chunked = False  # a chunked body is being read
        self._chunks = 0  # chunks begun in it
        self._chunk_excess = 0  # its framing bytes beyond the allowance (see parse)

    # -- what the connection implements ----------------------------------------------------
    def head_parsed(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        body_expected: bool,
        expect_continue: bool,
    ) -> None:
        """A complete, acceptable request head."""
        raise NotImplementedError

    def refuse(self, status: int, reason: str) -> None:
        """The request being read cannot be accepted: answer ``status`` and close."""
        raise NotImplementedError

    def switch_asked(self, rest: bytes) -> None:
        """The request parsed last asked to switch protocols and has no body; ``rest``
        followed its head."""
        raise NotImplementedError

    def body_received(self) -> int:
        """Bytes of the request body being read that have reached ``on_body``, or -1
        when no body is being read."""
        return -1

    # -- feeding -----------------------------------------------------------------------------
    def parse(self, data: bytes) -> None:
        """Feed bytes from the client to the parser."""
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpRequestParser(self)
            self._feed_parser = parser.feed_data  # bound once: no lookup per read
        chunked = self._chunked
        if chunked:
            messages = self._messages
            before = self.body_received()
            chunks = self._chunks
        self._feed = data
        self._feed_at = 0
        try:
            self._feed_parser(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[exc.args[0] :])
        except httptools.HttpParserError as exc:
            cause = self._pending_reject
            if cause is not None:
                self.refuse(cause.status, str(cause))
            else:
                te = self._framing.te if self._framing is not None else None
                self.refuse(parser_error_status(str(exc), te), str(exc))
            return
        finally:
            self._feed = b""
        if chunked and self._chunked and self._messages == messages:
            # The whole of these bytes belonged to one chunked body still in progress:
            # what on_body did not get is framing (size lines, extensions, line ends).
            # Counted at each read (a read that begins or ends the body is not).
            after = self.body_received()
            if after >= 0:
                excess = (
                    self._chunk_excess
                    + len(data)
                    - (after - before)
                    - CHUNK_FRAMING_ALLOWANCE * (self._chunks - chunks)
                )
                self._chunk_excess = excess if excess > 0 else 0
                if excess > MAX_CHUNK_EXTENSIONS:
                    self.refuse(413, "chunk extensions too large")
                    return
        if self._in_head:
            # httptools buffers a header line until it ends: bound that too
            self._head_bytes += len(data)
            if self._head_bytes > self._head_limit:
                self.refuse(431, "request head too large")
            elif self._url and data[-1:] == b"\n" and parser.get_http_version() != "1.1":
                # A line has ended in this head and no HTTP/1.x version was read: an
                # HTTP/0.9 request line ("GET /"), which waits for no header. Answer now
                # rather than at the header timeout.
                version = parser.get_http_version()
                if version != "1.0":
                    self.refuse(505, "HTTP/0.9 not supported")

    def _upgrade(self, rest: bytes) -> None:
        framing = self._replay_head
        if not framing:
            self.switch_asked(rest)
            return
        # The request declared a body: that body is HTTP, so the request is served as
        # plain HTTP (RFC 9110 7.8 lets a server ignore Upgrade). llhttp stopped at the
        # body, so parse on with a fresh parser primed with the body's framing.
        self._replay_head = b""
        parser = self._parser = httptools.HttpRequestParser(self)
        self._feed_parser = parser.feed_data
        self._replaying = True
        try:
            parser.feed_data(b"POST / HTTP/1.1\r\n" + framing + b"\r\n\r\n")
        finally:
            self._replaying = False
        if rest:
            self.parse(rest)

    def shed_parser(self) -> None:
        """Drop the parser between requests (about 1 KB with its bound callbacks): an
        idle keep-alive connection makes a new one when its next request starts, as
        nginx frees an idle connection's buffers."""
        if not self._in_head and not self._replay_head:
            self.drop_parser()

    def drop_parser(self) -> None:
        """Let go of the parser (and of its bound ``feed_data``, which would keep it):
        between requests, or for good when the connection is gone, since its callbacks
        are this connection's bound methods (a reference cycle that would keep both, and
        the connection's last request, until the garbage collector runs)."""
        self._parser = None
        self._feed_parser = _no_parser

    @property
    def body_of_switch(self) -> bool:
        """The request just parsed asked to switch and declared a body that follows."""
        return bool(self._replay_head)

    # -- parser callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._replaying:
            return
        self._url = b""
        self._headers = []
        self._hsize = 0
        self._framing = None
        self._hosts = 0
        self._connection = False
        self._in_head = True
        self._head_bytes = 0
        self._messages += 1
        self._chunked = False

    def on_url(self, url: bytes) -> None:
        if self._replaying:
            return
        if self._url:
            url = self._url + url
        else:
            feed = self._feed
            start = self._feed_at
            # RFC 9112 3: exactly one SP around the target (llhttp accepts more). Each
            # search starts where the last one ended, so a read holding many pipelined
            # requests is scanned once, not once per request.
            if start < len(feed):
                i = feed.find(url, start)
                end = i + len(url)
                if (
                    i > 1
                    and feed[i - 1] == 0x20
                    and feed[i - 2] != 0x20
                    and (end + 1 >= len(feed) or feed[end] != 0x20 or feed[end + 1] != 0x20)
                ):
                    # the usual request line: one search, the neighbours read by index
                    self._feed_at = end
                elif i >= 0:
                    # only up to the end of the line that holds the target: a body after
                    # it is never searched (it cost a 10 KiB POST 7 us)
                    stop = feed.find(b"\n", i)
                    if stop < 0:
                        stop = len(feed)
                    if feed.find(b"  ", start, stop) < 0:
                        self._feed_at = stop  # no doubled space up to the end of this line
                    else:
                        at = doubled_space(feed, url, start)
                        if at < 0:
                            raise self._remember(Reject(400, "malformed request line"))
                        self._feed_at = at
        self._url = url
        if len(url) > self._max_url:
            raise self._remember(Reject(414, "request target too long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._replaying:
            return
        if not self._in_head:
            # a trailer field of a chunked body: bounded with the head, kept for the
            # exchange (``request_trailers``)
            self._hsize += len(name) + len(value)
            if self._hsize > self._max_hsize:
                raise self._remember(Reject(431, "trailer fields too large"))
            trailers = self._trailers
            if trailers is None:
                trailers = self._trailers = []
            elif len(trailers) >= self._max_hcount:
                raise self._remember(Reject(431, "too many trailer fields"))
            trailers.append((name.lower(), value))
            return
        lname = name.lower()
        headers = self._headers
        headers.append((lname, value))
        if len(headers) > self._max_hcount:
            raise self._remember(Reject(431, "too many header fields"))
        self._hsize += len(name) + len(value)
        if lname == b"host":
            self._hosts += 1
            if self._hosts > 1:
                # routing and the app could each pick a different one (RFC 9112 3.2: 400)
                raise self._remember(Reject(400, "more than one host"))
            if not host_ok(value):
                raise self._remember(Reject(400, "malformed host"))
        elif lname == b"connection":
            self._connection = True
        elif lname in FRAMING_HEADERS:
            framing = self._framing
            if framing is None:
                framing = self._framing = FramingHeaders()
            try:
                framing.add(lname, value, self.settings.max_body_size)
            except Reject as exc:
                raise self._remember(exc) from None
        if self._hsize > self._max_hsize:
            raise self._remember(Reject(431, "header block too large"))

    def _remember(self, exc: Reject) -> Reject:
        # httptools wraps exceptions raised in callbacks; keep ours to read the status back
        self._pending_reject = exc
        return exc

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_headers_complete(self) -> None:
        if self._replaying:
            return
        self._in_head = False
        parser = self._parser
        assert parser is not None  # it is calling us
        keep_alive = parser.should_keep_alive()
        # kept alive with no Connection header: HTTP/1.1 (llhttp keeps a 1.0 request
        # alive only when it asks to), without get_http_version(), which formats a new
        # string each time (a quarter of a microsecond)
        version = "1.1" if not self._connection and keep_alive else parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise self._remember(Reject(505, f"HTTP version {version} not supported"))
        if version == "1.1" and not self._hosts:
            raise self._remember(Reject(400, "no host"))  # RFC 9112 3.2
        body_expected = False
        expect_continue = False
        framing = self._framing
        if framing is not None:
            try:
                body_expected, expect_continue = framing.check(version)
            except Reject as exc:
                raise self._remember(exc) from None
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = raw_method.decode("ascii")
            if len(_METHODS) < 64:
                _METHODS[raw_method] = method
        headers = self._headers
        # RFC 9112 3.2: origin-form ("/p?q"), absolute-form (any method), authority-form
        # (CONNECT only), asterisk-form (OPTIONS only); no fragment in any of them
        url = self._url
        if url.find(b"#") >= 0:
            raise self._remember(Reject(400, "fragment in request target"))
        if url[:1] == b"/" and method != "CONNECT":
            q = url.find(b"?")
            if q < 0:
                raw_path, query = url, b""  # (no tuple, no copies)
            else:
                raw_path, query = url[:q], url[q + 1 :]
        elif url == b"*":
            if method != "OPTIONS":
                raise self._remember(Reject(400, "asterisk-form target is for OPTIONS only"))
            raw_path, query = url, b""
        elif method == "CONNECT":
            if not authority_form_ok(url):
                raise self._remember(Reject(400, "CONNECT needs an authority-form target"))
            raise self._remember(Reject(501, "CONNECT not supported"))
        else:
            try:
                authority, raw_path, query = absolute_target(url)
            except Reject as exc:
                raise self._remember(exc) from None
            # RFC 9112 3.2.2: the target's authority replaces Host, for everything after
            for i in range(len(headers)):
                if headers[i][0] == b"host":
                    headers[i] = (b"host", authority)
                    break
            else:
                headers.append((b"host", authority))  # HTTP/1.0 may send none
        # (origin and absolute forms; "*" has none)
        refusal = path_refusal(raw_path, self._semicolons)
        if refusal:
            raise self._remember(Reject(400, refusal))
        if body_expected and framing is not None:
            if parser.should_upgrade():
                self._replay_head = (
                    b"transfer-encoding: chunked"
                    if framing.te is not None
                    else b"content-length: %d" % framing.cl
                )
            elif framing.te is not None:
                self._chunked = True
                self._chunks = 0
                self._chunk_excess = 0
        # the head owns them now: an idle connection keeps nothing of its last request
        self._headers = _NONE
        self._url = b""
        self.head_parsed(
            method,
            raw_path,
            query,
            version,
            headers,
            keep_alive,
            body_expected,
            expect_continue,
        )
