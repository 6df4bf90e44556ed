"""On-the-fly compression of responses (``[compress]`` and a route's ``compress``).

:func:`compress_filter` turns a :class:`~bastion.config.schema.CompressConfig` into an
:data:`~bastion.edge.types.ExchangeFilter`, once per route at start-up. The wrapper it
puts around each exchange looks at the response head and decides:

- the response is *eligible* when its ``Content-Type`` matches ``types`` and it carries
  no ``Content-Encoding`` and no ``Cache-Control: no-transform``. An eligible response
  gets ``Vary: Accept-Encoding`` whether or not this client's one is compressed, so
  caches keep the variants apart (so does a 304 without ``Content-Type``, which stands
  for a response whose type it does not repeat);
- it is *compressed* when, on top of that, it is not a 204, 206 or 304 response, has
  no ``Content-Range``, is at least ``min_size`` bytes (when its size is known), and
  the client's ``Accept-Encoding`` accepts one of the configured algorithms.

A compressed response gets ``Content-Encoding``, a weak ``ETag`` (the bytes differ from
the identity variant's) and no ``Accept-Ranges``. The head is held back until the first
body call: when the whole body comes in one ``finish()`` it is compressed at once and
sent with its new ``Content-Length`` (kept in a small cache when the response has an
``ETag``, so a static file is compressed once, not per request); otherwise every
``write()`` is compressed and flushed as it comes, with chunked framing, so streaming
responses stay streaming.

A HEAD response gets the head a GET would get (RFC 9110 §9.3.2). When the handler
gives it the body anyway (most frameworks do), the body is compressed, for its length,
and dropped by the exchange. When it comes without a body (static files, a handler that
knows HEAD), it is marked compressed only if its ``Content-Length`` says it is at least
``min_size``, as a GET would be, and is sent without a ``Content-Length``: its
compressed length is unknown without the body, and RFC 9110 §8.6 lets a HEAD response
leave the length out, never state a wrong one. Without a declared length it goes out
as it is, since a GET's decision would depend on the body.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

from bastion.config.schema import CompressConfig
from bastion.edge.encoders import Codec, StreamEncoder, build_codecs
from bastion.edge.negotiate import EncodingChooser
from bastion.edge.types import ExchangeFilter
from bastion.edge.wrap import ExchangeWrapper
from bastion.protocol.fields import as_bytes
from bastion.protocol.types import Exchange, InvalidResponse

__all__ = ["CompressSettings", "CompressedCache", "CompressingExchange", "compress_filter"]

# what the wrapper is doing with the response
_IDLE = 0  # start_response not called yet
_PASS = 1  # passed through untouched (or with Vary only)
_HELD = 2  # will be compressed; the head waits for the first body call
_STREAM = 3  # compressing piece by piece

_READ_BLOCK = 64 * 1024  # sendfile() through the compressor reads this much at a time
_VARY_VALUE = b"Accept-Encoding"
_NO_BODY = frozenset({204, 304})

_CE_HEADERS = {name: (b"content-encoding", name.encode("ascii")) for name in ("zstd", "br", "gzip")}

# response headers the decision looks at; everything else is passed along untouched
_CT, _CL, _CE, _CR, _CC, _ETAG, _VARY, _AR = range(8)
_INTEREST = {
    b"content-type": _CT,
    b"content-length": _CL,
    b"content-encoding": _CE,
    b"content-range": _CR,
    b"cache-control": _CC,
    b"etag": _ETAG,
    b"vary": _VARY,
    b"accept-ranges": _AR,
}


class CompressedCache:
    """Compressed bodies of responses that carry an ``ETag``, to skip compressing again.

    A static file served from memory, or an app response with a validator, is the same
    bytes request after request; compressing it once per algorithm is enough. An entry
    is used only when the body handed to ``finish()`` is byte for byte the one it was
    made from, so an ETag that lies (or two routes' tags that collide) costs a
    comparison, never a wrong body. Bounded in total size; the oldest entries go first.
    """

    __slots__ = ("_entries", "_size", "max_item", "max_total")

    def __init__(self, max_total: int = 8 * 1024 * 1024, max_item: int = 512 * 1024) -> None:
        self._entries: dict[tuple[bytes, str], tuple[bytes, bytes]] = {}
        self._size = 0
        self.max_total = max_total
        self.max_item = max_item

    def get(self, etag: bytes, coding: str, data: bytes) -> bytes | None:
        entry = self._entries.get((etag, coding))
        if entry is None:
            return None
        plain, packed = entry
        return packed if plain is data or plain == data else None

    def put(self, etag: bytes, coding: str, data: bytes, packed: bytes) -> None:
        cost = len(data) + len(packed)
        if cost > self.max_item:
            return
        entries = self._entries
        old = entries.pop((etag, coding), None)
        if old is not None:
            self._size -= len(old[0]) + len(old[1])
        while entries and self._size + cost > self.max_total:
            oldest = next(iter(entries))
            plain, packed_old = entries.pop(oldest)
            self._size -= len(plain) + len(packed_old)
        entries[(etag, coding)] = (data, packed)
        self._size += cost

    def __len__(self) -> int:
        return len(self._entries)


class CompressSettings:
    """Everything one route's compression needs, built once from its config."""

    __slots__ = (
        "_type_cache",
        "cache",
        "choose",
        "codecs",
        "min_size",
        "prefixes",
        "type_any",
        "types",
    )

    MAX_CACHED_TYPES: ClassVar[int] = 512

    def __init__(self, cfg: CompressConfig, codecs: Sequence[Codec]) -> None:
        self.codecs: dict[str, Codec] = {c.name: c for c in codecs}
        self.choose = EncodingChooser([c.name for c in codecs])
        self.min_size = cfg.min_size
        self.cache = CompressedCache()
        exact: set[bytes] = set()
        prefixes: list[bytes] = []
        self.type_any = False
        for pattern in cfg.types:
            p = pattern.strip().lower().encode("latin-1")
            if p in (b"*", b"*/*"):
                self.type_any = True
            elif p.endswith(b"/*"):
                prefixes.append(p[:-1])  # "text/*" -> "text/"
            else:
                exact.add(p)
        self.types = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self._type_cache: dict[bytes, bool] = {}

    def compressible(self, content_type: bytes) -> bool:
        """Whether a ``Content-Type`` value matches ``types`` (parameters ignored)."""
        cached = self._type_cache.get(content_type)
        if cached is not None:
            return cached
        media = content_type.partition(b";")[0].strip().lower()
        ok = bool(media) and (
            self.type_any or media in self.types or media.startswith(self.prefixes)
        )
        if len(self._type_cache) < self.MAX_CACHED_TYPES:
            self._type_cache[content_type] = ok
        return ok


def compress_filter(cfg: CompressConfig) -> ExchangeFilter | None:
    """The compression filter for a route, or ``None`` when compression is off.

    Also ``None`` when none of ``cfg.algorithms`` is available (brotli and zstd need
    their packages; a missing one is logged once and skipped).
    """
    if not cfg.enabled or not cfg.algorithms:
        return None
    codecs = build_codecs(
        cfg.algorithms,
        gzip_level=cfg.gzip_level,
        brotli_quality=cfg.brotli_quality,
        zstd_level=cfg.zstd_level,
    )
    if not codecs:
        return None
    settings = CompressSettings(cfg, codecs)

    def wrap(exchange: Exchange) -> Exchange:
        return CompressingExchange(exchange, settings)

    return wrap


def _has_token(value: bytes, token: bytes) -> bool:
    """Whether the comma-separated header ``value`` lists ``token`` (lower case)."""
    return any(part.strip().lower() == token for part in value.split(b","))


def _with_vary(headers: list[tuple[bytes, bytes]], vary_at: int) -> list[tuple[bytes, bytes]]:
    """``headers`` with Accept-Encoding added to Vary (a new list; the app's is kept)."""
    if vary_at < 0:
        return [*headers, (b"vary", _VARY_VALUE)]
    name, value = headers[vary_at]
    if _has_token(value, b"accept-encoding") or _has_token(value, b"*"):
        return headers
    out = list(headers)
    out[vary_at] = (name, value + b", " + _VARY_VALUE if value.strip() else _VARY_VALUE)
    return out


class CompressingExchange(ExchangeWrapper):
    """An exchange whose response is compressed when the rules allow (see the module)."""

    __slots__ = (
        "_coding",
        "_encoder",
        "_etag",
        "_head",
        "_is_head",
        "_length",
        "_mode",
        "_settings",
        "_status",
    )

    def __init__(self, inner: Exchange, settings: CompressSettings) -> None:
        super().__init__(inner)
        self._settings = settings
        self._mode = _IDLE
        self._status = 0
        self._head: list[tuple[bytes, bytes]] = []
        self._coding = ""
        self._encoder: StreamEncoder | None = None
        self._etag = b""
        self._is_head = False  # a HEAD request: the body, if any, is only measured
        self._length = -1  # the Content-Length the handler declared (-1: none)

    @property
    def response_started(self) -> bool:
        return self._mode != _IDLE

    @property
    def coding(self) -> str:
        """The content coding chosen for the response ("" when it goes out as it is)."""
        return self._coding

    def _accept_encoding(self) -> bytes:
        found = b""
        for name, value in self.head.headers:
            if name == b"accept-encoding":
                found = value if not found else found + b", " + value
        return found

    def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self._mode != _IDLE:
            raise InvalidResponse("response already started")
        settings = self._settings
        content_type = b""
        length = -1
        vary_at = -1
        skip = False  # already encoded, or the origin forbids transforming it
        ranged = False
        etag = b""
        try:
            for i, (name, value) in enumerate(headers):
                kind = _INTEREST.get(name) if name.islower() else _INTEREST.get(name.lower())
                if kind is None:
                    continue
                if kind == _CT:
                    content_type = value
                elif kind == _CL:
                    length = int(value) if value.strip().isdigit() else -1
                elif kind == _CE:
                    skip = True
                elif kind == _CR:
                    ranged = True
                elif kind == _CC:
                    if value.lower().find(b"no-transform") >= 0:
                        skip = True
                elif kind == _VARY:
                    vary_at = i
                elif kind == _ETAG:
                    etag = value
        except (AttributeError, TypeError, ValueError):
            # not a list of (bytes, bytes) pairs: let the exchange refuse it as it would
            self._pass(status, headers)
            return
        if skip:
            self._pass(status, headers)
            return
        if not content_type:
            # a 304 need not repeat Content-Type, but must repeat the Vary of the 200 it
            # stands for: without the type to go by, say it may vary
            self._pass(status, _with_vary(headers, vary_at) if status == 304 else headers)
            return
        if not settings.compressible(content_type):
            self._pass(status, headers)
            return
        headers = _with_vary(headers, vary_at)
        if ranged or status == 206 or status in _NO_BODY or 0 <= length < settings.min_size:
            self._pass(status, headers)
            return
        coding = settings.choose(self._accept_encoding())
        if coding is None:
            self._pass(status, headers)
            return
        # compress: hold the head until we know whether the body comes all at once
        self._coding = coding
        self._etag = etag
        self._status = status
        self._head = headers
        self._length = length
        self._is_head = self.head.method == "HEAD"
        self._mode = _HELD

    def _pass(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._inner.start_response(status, headers)
        self._mode = _PASS

    def _encoded_head(self, length: int) -> list[tuple[bytes, bytes]]:
        """The held head for the compressed body (``length`` -1 when streamed)."""
        out: list[tuple[bytes, bytes]] = []
        for name, value in self._head:
            kind = _INTEREST.get(name) if name.islower() else _INTEREST.get(name.lower())
            if kind in (_CL, _AR):
                continue
            if kind == _ETAG and not value.startswith(b"W/"):
                value = b"W/" + value
            out.append((name, value))
        out.append(_CE_HEADERS[self._coding])
        if length >= 0:
            out.append((b"content-length", b"%d" % length))
        return out

    def _start_stream(self) -> StreamEncoder | None:
        self._inner.start_response(self._status, self._encoded_head(-1))
        # HEAD: the exchange sends no body, so there is nothing to compress
        encoder = None if self._is_head else self._settings.codecs[self._coding].stream()
        self._encoder = encoder
        self._mode = _STREAM
        self._head = []
        return encoder

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        mode = self._mode
        if mode in (_PASS, _IDLE):
            self._inner.write(chunk)
            return
        data = as_bytes(chunk)
        if mode == _STREAM:
            encoder = self._encoder
        elif mode == _HELD:
            encoder = self._start_stream()
            if not data or encoder is None:
                self._inner.write(b"")  # an empty first write sends the head now
                return
        else:
            self._inner.write(data)
            return
        if encoder is not None and data:
            out = encoder.compress(data)
            if out:
                self._inner.write(out)

    def finish(
        self,
        chunk: bytes | bytearray | memoryview = b"",
        trailers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        # trailers pass only on a body left as it was (one about the compressed body
        # would describe bytes the client never gets)
        mode = self._mode
        if mode in (_PASS, _IDLE):
            self._inner.finish(chunk, trailers)
            return
        data = as_bytes(chunk)
        if mode == _HELD:
            self._mode = _PASS
            head = self._head
            self._head = []
            if not data and self._is_head and self._length >= 0:
                # a HEAD answered without its body, of a size a GET would compress:
                # GET's head, without the compressed length nobody knows
                self._head = head
                encoded = self._encoded_head(-1)
                self._head = []
                self._inner.start_response(self._status, encoded)
                self._inner.finish()
                return
            if not data or len(data) < self._settings.min_size:
                # small after all (its size was not declared): not worth compressing
                self._coding = ""
                self._inner.start_response(self._status, head)
                self._inner.finish(data)
                return
            self._head = head
            settings = self._settings
            etag = self._etag
            body = settings.cache.get(etag, self._coding, data) if etag else None
            if body is None:
                body = settings.codecs[self._coding].compress(data)
                if etag:
                    settings.cache.put(etag, self._coding, data, body)
            encoded = self._encoded_head(len(body))
            self._head = []
            self._inner.start_response(self._status, encoded)
            self._inner.finish(body)
            return
        if mode == _STREAM:
            encoder = self._encoder
            self._encoder = None
            self._mode = _PASS
            self._inner.finish(encoder.finish(data) if encoder is not None else data)
            return
        self._inner.finish(data)

    async def sendfile(self, fd: int, offset: int, count: int) -> None:
        mode = self._mode
        if mode != _HELD and mode != _STREAM:
            await self._inner.sendfile(fd, offset, count)
            return
        inner = self._inner
        if self._is_head:  # nothing is sent: the head of a streamed GET is enough
            if mode == _HELD:
                self._start_stream()
            return
        # no zero-copy through a compressor: read blocks and compress them
        end = offset + count
        while offset < end:
            if inner.disconnected:
                return
            block = os.pread(fd, min(_READ_BLOCK, end - offset), offset)
            if not block:
                break
            offset += len(block)
            self.write(block)
            if inner.writing_paused:
                await inner.drain()
