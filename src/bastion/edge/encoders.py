"""gzip, brotli and zstd behind one small interface.

A :class:`Codec` is built once per algorithm and level at start-up. It compresses a
whole body at once (:meth:`Codec.compress`) or opens a :class:`StreamEncoder` for a body
that arrives in pieces. A stream encoder flushes after every piece, so everything given
to it so far can be decoded by the client at once: a streamed response (server-sent
events, a long report written row by row) stays streamed when compressed.

gzip comes with Python (``zlib``). brotli and zstd need the ``brotli`` and
``zstandard`` packages, which are dependencies of bastion; should one not import (a
platform without a wheel for it), :func:`build_codecs` skips that algorithm and logs
that once.
"""

from __future__ import annotations

import importlib
import logging
import zlib
from collections.abc import Iterable
from typing import Any, Protocol

log = logging.getLogger("bastion.error")

__all__ = ["Codec", "StreamEncoder", "build_codecs", "codec_available"]

# gzip framing for zlib: 16 + the largest window (RFC 1952 header and trailer).
_GZIP_WBITS = 16 + zlib.MAX_WBITS

_warned: set[str] = set()


class StreamEncoder(Protocol):
    """Compresses one body that arrives in pieces."""

    def compress(self, data: bytes) -> bytes:
        """Compress ``data`` and flush: the output so far decodes to all input so far."""
        ...

    def finish(self, data: bytes = b"") -> bytes:
        """Compress the last piece and end the stream."""
        ...


class Codec(Protocol):
    """One algorithm at one level; ``name`` is its ``Content-Encoding`` token."""

    @property
    def name(self) -> str: ...

    def compress(self, data: bytes) -> bytes:
        """The whole body, compressed in one go."""
        ...

    def stream(self) -> StreamEncoder:
        """A new encoder for a body that comes in pieces."""
        ...


# -- gzip ------------------------------------------------------------------------------
class _GzipStream:
    __slots__ = ("_z",)

    def __init__(self, level: int) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)

    def compress(self, data: bytes) -> bytes:
        if not data:
            return b""
        z = self._z
        return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self, data: bytes = b"") -> bytes:
        z = self._z
        return (z.compress(data) + z.flush()) if data else z.flush()


class GzipCodec:
    """gzip (RFC 1952) through zlib."""

    __slots__ = ("level",)

    name = "gzip"

    def __init__(self, level: int) -> None:
        self.level = level

    def compress(self, data: bytes) -> bytes:
        return zlib.compress(data, self.level, _GZIP_WBITS)

    def stream(self) -> StreamEncoder:
        return _GzipStream(self.level)


# -- brotli ----------------------------------------------------------------------------
class _BrotliStream:
    __slots__ = ("_c",)

    def __init__(self, module: Any, quality: int) -> None:
        self._c = module.Compressor(quality=quality)

    def compress(self, data: bytes) -> bytes:
        if not data:
            return b""
        c = self._c
        out: bytes = c.process(data) + c.flush()
        return out

    def finish(self, data: bytes = b"") -> bytes:
        c = self._c
        out: bytes = (c.process(data) + c.finish()) if data else c.finish()
        return out


class BrotliCodec:
    """brotli (RFC 7932) through the ``brotli`` package."""

    __slots__ = ("_module", "quality")

    name = "br"

    def __init__(self, quality: int) -> None:
        # imported by name: the package ships no type information
        self._module: Any = importlib.import_module("brotli")
        self.quality = quality

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._module.compress(data, quality=self.quality)
        return out

    def stream(self) -> StreamEncoder:
        return _BrotliStream(self._module, self.quality)


# -- zstd ------------------------------------------------------------------------------
class _ZstdStream:
    __slots__ = ("_cctx", "_codec", "_obj")

    def __init__(self, codec: ZstdCodec, cctx: Any) -> None:
        self._codec = codec
        self._cctx = cctx
        self._obj = cctx.compressobj()

    def compress(self, data: bytes) -> bytes:
        if not data:
            return b""
        obj = self._obj
        out: bytes = obj.compress(data) + obj.flush(self._codec.flush_block)
        return out

    def finish(self, data: bytes = b"") -> bytes:
        obj = self._obj
        out: bytes = (obj.compress(data) + obj.flush()) if data else obj.flush()
        self._codec.release(self._cctx)
        return out


class ZstdCodec:
    """zstd (RFC 8878) through the ``zstandard`` package.

    A zstd compression context serves one stream at a time, so streams borrow one from
    a small pool and give it back when they end (an abandoned stream's context is simply
    dropped). Whole bodies use a context of their own.
    """

    __slots__ = ("_make", "_one_shot", "_pool", "flush_block", "level")

    name = "zstd"
    POOL_SIZE = 16

    def __init__(self, level: int) -> None:
        import zstandard

        self.level = level
        self.flush_block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
        self._make = zstandard.ZstdCompressor
        self._one_shot = zstandard.ZstdCompressor(level=level)
        self._pool: list[Any] = []

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._one_shot.compress(data)
        return out

    def stream(self) -> StreamEncoder:
        cctx = self._pool.pop() if self._pool else self._make(level=self.level)
        return _ZstdStream(self, cctx)

    def release(self, cctx: Any) -> None:
        if len(self._pool) < self.POOL_SIZE:
            self._pool.append(cctx)


# -- building ----------------------------------------------------------------------------
_PACKAGES = {"br": "brotli", "zstd": "zstandard"}


def codec_available(name: str) -> bool:
    """Whether the package ``name`` needs is installed (gzip always is)."""
    package = _PACKAGES.get(name)
    if package is None:
        return name == "gzip"
    try:
        __import__(package)
    except ImportError:
        return False
    return True


def build_codecs(
    algorithms: Iterable[str], *, gzip_level: int, brotli_quality: int, zstd_level: int
) -> list[Codec]:
    """One codec per algorithm, in the given order, skipping those not installed."""
    out: list[Codec] = []
    for name in algorithms:
        if not codec_available(name):
            if name not in _warned:
                _warned.add(name)
                log.warning(
                    "compression: %s is skipped because the %s package cannot be imported "
                    "(pip install %s)",
                    name,
                    _PACKAGES.get(name, name),
                    _PACKAGES.get(name, name),
                )
            continue
        if name == "gzip":
            out.append(GzipCodec(gzip_level))
        elif name == "br":
            out.append(BrotliCodec(brotli_quality))
        elif name == "zstd":
            out.append(ZstdCodec(zstd_level))
        else:
            raise ValueError(f"unknown compression algorithm {name!r}")
    return out
