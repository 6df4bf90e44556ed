"""What the static handler knows about each file it has served, kept per route per worker.

An :class:`Entry` is one request path's file: its validators, its precompressed siblings
(``.br``, ``.zst``, ``.gz``) and, for each of these variants, the response headers built
once. A variant no larger than ``memory_max_file`` also keeps its bytes, so answering it
is a dict lookup and one write; a larger one is sent with ``sendfile`` from disk.

An entry is trusted for one second (like nginx's ``open_file_cache_valid``); after that
the next request stats the file and its siblings again, and any change of size,
modification time or inode rebuilds the entry from disk. :class:`StaticCache` bounds the
bytes held (``memory_max_total``) and the number of entries, evicting the least recently
revalidated first.
Only file contents count against ``memory_max_total``; what is known about a file (a few
hundred bytes) is bounded by the number of entries instead.
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from typing import Final

from bastion.edge.conditional import http_date, make_etag
from bastion.edge.negotiate import EncodingChooser

__all__ = ["CODINGS", "Entry", "EntryBuilder", "StaticCache", "Variant", "signature"]

# precompressed sibling suffix for each content coding
CODINGS: Final = (("br", ".br"), ("zstd", ".zst"), ("gzip", ".gz"))

# how long a stat stays good; nginx open_file_cache_valid is 60s, we re-check sooner
TRUST_SECONDS = 1.0
MAX_ENTRIES: Final = 10_000  # metadata for this many paths per route, whatever their size

_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

Sig = tuple[tuple[int, int, int] | None, ...]


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _one(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return _stat_key(st) if stat.S_ISREG(st.st_mode) else None


def signature(path: str, siblings: bool) -> Sig | None:
    """Size, mtime and inode of ``path`` and of each sibling (None where absent)."""
    main = _one(path)
    if main is None:
        return None
    if not siblings:
        return (main,)
    return (main, *(_one(path + suffix) for _, suffix in CODINGS))


class Variant:
    """One representation of a file: the file itself or a precompressed sibling."""

    __slots__ = (
        "body",
        "coding",
        "content_type",
        "etag",
        "extra",
        "ino",
        "last_modified",
        "mtime",
        "mtime_ns",
        "not_modified_headers",
        "ok_headers",
        "path",
        "size",
        "sized_headers",
    )

    def __init__(
        self,
        path: str,
        coding: str,
        st: os.stat_result,
        body: bytes | None,
        content_type: bytes,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        self.path = path
        self.coding = coding  # "" for the file itself
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.mtime = st.st_mtime_ns // 1_000_000_000  # whole seconds, as HTTP dates are
        self.ino = st.st_ino
        self.body = body  # None: too large for memory, send from disk
        self.content_type = content_type
        self.etag = make_etag(st.st_size, st.st_mtime_ns, st.st_ino, coding)
        self.last_modified = http_date(self.mtime)
        # headers every response about this variant carries (cache-control, vary, encoding)
        self.extra = extra
        common = [(b"etag", self.etag), (b"last-modified", self.last_modified), *extra]
        # 200 for a GET answered from memory: the exchange counts the body's length itself
        self.ok_headers = [(b"content-type", content_type), (b"accept-ranges", b"bytes"), *common]
        # 200 for HEAD or from disk: the length must be declared
        self.sized_headers = [*self.ok_headers, (b"content-length", b"%d" % self.size)]
        self.not_modified_headers = [h for h in common if h[0] != b"content-encoding"]

    def same_file(self, st: os.stat_result) -> bool:
        return (st.st_size, st.st_mtime_ns, st.st_ino) == (self.size, self.mtime_ns, self.ino)


class Entry:
    """A request path's file, its variants, and when it was last checked on disk."""

    __slots__ = ("checked", "chooser", "codings", "identity", "memory", "path", "sig")

    def __init__(
        self,
        path: str,
        sig: Sig,
        identity: Variant,
        codings: dict[str, Variant],
        chooser: EncodingChooser | None,
        checked: float,
    ) -> None:
        self.path = path
        self.sig = sig
        self.identity = identity
        self.codings = codings  # content coding -> precompressed variant
        self.chooser = chooser  # None when there are no siblings
        self.checked = checked
        size = 0  # file bytes held; metadata is bounded by the number of entries instead
        for v in (identity, *codings.values()):
            if v.body is not None:
                size += len(v.body)
        self.memory = size


def _read(path: str, max_file: int) -> tuple[os.stat_result, bytes | None] | None:
    """Open ``path``, check it is a regular file, and read it if small enough."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if st.st_size > max_file:
            return st, None
        chunks = []
        left = st.st_size
        while left > 0:
            data = os.read(fd, left)
            if not data:
                break
            chunks.append(data)
            left -= len(data)
        body = b"".join(chunks)
        if len(body) != st.st_size:
            return None  # changed while we read: the next request tries again
        return st, body
    except OSError:
        return None
    finally:
        os.close(fd)


class EntryBuilder:
    """Reads a file (and its siblings) into an :class:`Entry`, with a route's settings."""

    __slots__ = ("_cache_control", "_choosers", "max_file", "precompressed")

    def __init__(self, *, max_file: int, precompressed: bool, cache_control: bytes) -> None:
        self.max_file = max_file
        self.precompressed = precompressed
        self._cache_control = cache_control
        self._choosers: dict[tuple[str, ...], EncodingChooser] = {}

    def build(self, path: str, content_type: bytes, now: float) -> Entry | None:
        got = _read(path, self.max_file)
        if got is None:
            return None
        st, body = got
        base_extra: list[tuple[bytes, bytes]] = []
        if self._cache_control:
            base_extra.append((b"cache-control", self._cache_control))
        found: list[tuple[str, str, os.stat_result, bytes | None]] = []
        sig: list[tuple[int, int, int] | None] = [_stat_key(st)]
        if self.precompressed:
            for coding, suffix in CODINGS:
                sgot = _read(path + suffix, self.max_file)
                if sgot is None:
                    sig.append(_one(path + suffix))
                    continue
                sst, sbody = sgot
                sig.append(_stat_key(sst))
                if sst.st_mtime_ns < st.st_mtime_ns:
                    continue  # older than the file: stale, never served
                found.append((coding, path + suffix, sst, sbody))
        extra = base_extra
        if found:
            extra = [*base_extra, (b"vary", b"accept-encoding")]
        identity = Variant(path, "", st, body, content_type, extra)
        codings: dict[str, Variant] = {}
        for coding, spath, sst, sbody in found:
            cextra = [*extra, (b"content-encoding", coding.encode("ascii"))]
            codings[coding] = Variant(spath, coding, sst, sbody, content_type, cextra)
        chooser = None
        if codings:
            # on equal weights the smallest file wins
            order = tuple(sorted(codings, key=lambda c: codings[c].size))
            chooser = self._choosers.get(order)
            if chooser is None:
                chooser = self._choosers[order] = EncodingChooser(order)
        return Entry(path, tuple(sig), identity, codings, chooser, now)


class StaticCache:
    """Request path -> :class:`Entry`, bounded in bytes held and in entries."""

    __slots__ = ("entries", "max_entries", "max_total", "total")

    def __init__(self, max_total: int, max_entries: int = MAX_ENTRIES) -> None:
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.max_total = max_total
        self.max_entries = max_entries
        self.total = 0

    def put(self, key: str, entry: Entry) -> None:
        self.drop(key)
        if entry.memory > self.max_total:
            # its bodies alone exceed the budget: keep only what is known about the file
            entry.identity.body = None
            for v in entry.codings.values():
                v.body = None
            entry.memory = 0
        self.entries[key] = entry
        self.total += entry.memory
        while self.total > self.max_total or len(self.entries) > self.max_entries:
            _, old = self.entries.popitem(last=False)
            self.total -= old.memory

    def drop(self, key: str) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.total -= old.memory

    def touch(self, key: str) -> None:
        """Mark ``key`` recently used (done on revalidation, not on every hit)."""
        try:
            self.entries.move_to_end(key)
        except KeyError:
            pass

    def clear(self) -> None:
        self.entries.clear()
        self.total = 0
