"""The ``static`` route handler: files from a directory, from memory or with sendfile.

For each request the handler looks the path up in its :class:`StaticCache`. A hit whose
file was checked on disk less than a second ago, with no conditional or range header,
is answered with headers and body built when the file was loaded: one dict lookup and
one write. Everything else (the first request for a path, a re-check, ``If-*``,
``Range``, directories, errors) takes the slower path below it.

Large files (over ``memory_max_file``) are opened per request and sent with
``Exchange.sendfile`` (zero-copy) from a task, so the event loop never waits on a read.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Final

from bastion.config.schema import StaticConfig
from bastion.edge.conditional import NOT_MODIFIED, PRECONDITION_FAILED, evaluate, if_range_matches
from bastion.edge.listing import render_listing
from bastion.edge.mime import MimeTable
from bastion.edge.ranges import content_range, multipart_layout, parse_range
from bastion.edge.safepath import SafeRoot, raw_path_refused
from bastion.edge.static_cache import TRUST_SECONDS, Entry, EntryBuilder, StaticCache, Variant
from bastion.edge.static_cache import signature as file_signature
from bastion.edge.types import RouteMatch
from bastion.protocol.types import ClientDisconnected, Exchange
from bastion.tasks import WorkerTasks

__all__ = ["StaticHandler"]

_OPEN_FLAGS: Final = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_now: Final[Callable[[], float]] = time.monotonic

# request headers that take the slower path
_SLOW: Final = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"range"}
)
# request headers that may be repeated as lists (combined before use)
_LISTS: Final = frozenset({b"if-none-match", b"if-match", b"accept-encoding"})

_TEXT: Final = b"text/plain; charset=utf-8"
_HTML: Final = b"text/html; charset=utf-8"
_ALLOW: Final = [(b"allow", b"GET, HEAD")]
_NOT_FOUND_KEY: Final = "\x00not_found"


def _plain(exchange: Exchange, status: int, text: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    exchange.start_response(
        status, [(b"content-type", _TEXT), (b"content-length", b"%d" % len(text)), *extra]
    )
    exchange.finish(b"" if exchange.head.method == "HEAD" else text)


def _request_headers(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    h = dict(headers)
    if len(h) != len(headers):  # a repeated header: join list-valued ones as RFC 9110 §5.3
        h = {}
        for name, value in headers:
            if name in h and name in _LISTS:
                h[name] = h[name] + b", " + value
            else:
                h.setdefault(name, value)
    return h


class StaticHandler:
    """Serves files under ``cfg.root`` (a :data:`~bastion.edge.types.RouteHandler`)."""

    __slots__ = (
        "_builder",
        "_cache",
        "_index",
        "_listing",
        "_mime",
        "_not_found",
        "_precompressed",
        "_safe",
        "_tasks",
    )

    def __init__(self, cfg: StaticConfig, tasks: WorkerTasks | None = None) -> None:
        self._safe = SafeRoot(cfg.root, dotfiles=cfg.dotfiles, follow_symlinks=cfg.follow_symlinks)
        if not os.path.isdir(self._safe.root):
            raise ValueError(f"static root {cfg.root!r} is not a directory")
        for name in cfg.index:
            if not name or "/" in name or name in (".", ".."):
                raise ValueError(f"static index {name!r} must be a plain file name")
        self._index = cfg.index
        self._listing = cfg.listing
        self._mime = MimeTable(cfg.mime_types)
        self._precompressed = cfg.precompressed
        self._cache = StaticCache(cfg.memory_max_total)
        self._builder = EntryBuilder(
            max_file=cfg.memory_max_file,
            precompressed=cfg.precompressed,
            cache_control=cfg.cache_control.encode("latin-1"),
        )
        nf = cfg.not_found.strip("/")
        self._not_found = "/" + nf if nf else ""
        #: where file sends run (the worker's tasks: they end with its grace period)
        self._tasks = tasks if tasks is not None else WorkerTasks()

    # -- lifecycle (see bastion.edge.types.Lifecycle) ----------------------------------
    async def startup(self) -> None:
        """Nothing to open: files are looked up as requests ask for them."""

    async def shutdown(self) -> None:
        """Forget cached files."""
        self._cache.clear()

    # -- the request path ------------------------------------------------------------
    def __call__(self, exchange: Exchange, match: RouteMatch) -> None:
        try:
            self._serve(exchange, match.rest, retry=True)
        except Exception as exc:
            exchange.fail(exc)

    def _serve(self, exchange: Exchange, key: str, *, retry: bool) -> None:
        method = exchange.head.method
        if method != "GET" and method != "HEAD":
            _plain(exchange, 405, b"Method Not Allowed\n", _ALLOW)
            return
        raw = exchange.head.raw_path
        if (raw.find(b"%") >= 0 or raw.find(b"\\") >= 0) and raw_path_refused(raw):
            self._answer_404(exchange)
            return
        entry = self._cache.entries.get(key)
        if entry is None or _now() - entry.checked >= TRUST_SECONDS:
            entry = self._refresh(exchange, key, entry)
            if entry is None:
                return  # answered already (404, redirect, listing)
        headers = exchange.head.headers
        h = _request_headers(headers) if headers else {}
        variant = entry.identity
        if not _SLOW.isdisjoint(h):
            self._conditional(exchange, key, entry, h, retry)
            return
        if entry.chooser is not None:
            ae = h.get(b"accept-encoding")
            if ae:
                coding = entry.chooser(ae)
                if coding is not None:
                    variant = entry.codings[coding]
        self._send_whole(exchange, key, variant, method, retry)

    def _refresh(self, exchange: Exchange, key: str, entry: Entry | None) -> Entry | None:
        """Re-check a stale entry on disk, or load the path; None once answered."""
        now = _now()
        if entry is not None:
            if file_signature(entry.path, self._precompressed) == entry.sig:
                entry.checked = now
                self._cache.touch(key)
                return entry
            self._cache.drop(key)
        found = self._safe.lookup(key)
        if found is None:
            self._answer_404(exchange)
            return None
        path = found.path
        if found.is_dir:
            if not key.endswith("/"):
                self._redirect_to_directory(exchange)
                return None
            for name in self._index:
                index = self._safe.check(path + "/" + name)
                if index is not None and not index.is_dir:
                    path = index.path
                    break
            else:
                if self._listing:
                    self._answer_listing(exchange, path, key)
                else:
                    self._answer_404(exchange)
                return None
        elif key.endswith("/"):
            self._answer_404(exchange)  # a file is not a directory
            return None
        entry = self._builder.build(path, self._mime(path), now)
        if entry is None:
            self._answer_404(exchange)
            return None
        self._cache.put(key, entry)
        return entry

    def _conditional(
        self, exchange: Exchange, key: str, entry: Entry, h: dict[bytes, bytes], retry: bool
    ) -> None:
        """Preconditions and ranges (RFC 9110 §13.2.2, §14)."""
        method = exchange.head.method
        rng = h.get(b"range") if method == "GET" else None
        variant = entry.identity
        if rng is None and entry.chooser is not None:
            ae = h.get(b"accept-encoding")
            coding = entry.chooser(ae) if ae else None
            if coding is not None:
                variant = entry.codings[coding]
        # a Range request is always answered from the file itself, never a sibling
        outcome = evaluate(
            method,
            variant.etag,
            variant.mtime,
            h.get(b"if-match"),
            h.get(b"if-unmodified-since"),
            h.get(b"if-none-match"),
            h.get(b"if-modified-since"),
        )
        if outcome == NOT_MODIFIED:
            exchange.start_response(304, variant.not_modified_headers)
            exchange.finish()
            return
        if outcome == PRECONDITION_FAILED:
            _plain(exchange, 412, b"Precondition Failed\n", self._plain_extra(variant))
            return
        if rng is not None:
            if_range = h.get(b"if-range")
            if if_range is None or if_range_matches(if_range, variant.etag, variant.last_modified):
                ranges = parse_range(rng, variant.size)
                if ranges is not None:
                    self._partial(exchange, key, variant, ranges, retry)
                    return
        self._send_whole(exchange, key, variant, method, retry)

    def _send_whole(
        self, exchange: Exchange, key: str, variant: Variant, method: str, retry: bool
    ) -> None:
        """200 with the whole file: from memory when cached, else from disk.

        The prebuilt header lists are passed as they are: an exchange only reads them.
        """
        body = variant.body
        if body is not None:
            if method == "GET":
                exchange.start_response(200, variant.ok_headers)
                exchange.finish(body)
            else:
                exchange.start_response(200, variant.sized_headers)
                exchange.finish()
            return
        self._from_disk(exchange, key, variant, 200, variant.sized_headers, None, retry)

    @staticmethod
    def _plain_extra(variant: Variant) -> list[tuple[bytes, bytes]]:
        return [h for h in variant.extra if h[0] != b"content-encoding"]

    def _partial(
        self,
        exchange: Exchange,
        key: str,
        variant: Variant,
        ranges: list[tuple[int, int]],
        retry: bool,
    ) -> None:
        size = variant.size
        validators = [
            (b"accept-ranges", b"bytes"),
            (b"etag", variant.etag),
            (b"last-modified", variant.last_modified),
            *variant.extra,
        ]
        if not ranges:
            extra = [(b"content-range", b"bytes */%d" % size), *self._plain_extra(variant)]
            _plain(exchange, 416, b"Range Not Satisfiable\n", extra)
            return
        body = variant.body
        if len(ranges) == 1:
            first, last = ranges[0]
            headers = [
                (b"content-type", variant.content_type),
                (b"content-length", b"%d" % (last - first + 1)),
                (b"content-range", content_range(first, last, size)),
                *validators,
            ]
            if body is not None:
                exchange.start_response(206, headers)
                exchange.finish(body[first : last + 1])
            else:
                segments = [(b"", first, last - first + 1)]
                self._from_disk(exchange, key, variant, 206, headers, (segments, b""), retry)
            return
        layout = multipart_layout(ranges, size, variant.content_type)
        headers = [
            (b"content-type", layout.content_type),
            (b"content-length", b"%d" % layout.length),
            *validators,
        ]
        if body is not None:
            out = [piece for head, a, b in layout.parts for piece in (head, body[a : b + 1])]
            out.append(layout.tail)
            exchange.start_response(206, headers)
            exchange.finish(b"".join(out))
        else:
            segments = [(head, a, b - a + 1) for head, a, b in layout.parts]
            self._from_disk(exchange, key, variant, 206, headers, (segments, layout.tail), retry)

    # -- large files -----------------------------------------------------------------
    def _from_disk(
        self,
        exchange: Exchange,
        key: str,
        variant: Variant,
        status: int,
        headers: list[tuple[bytes, bytes]],
        plan: tuple[list[tuple[bytes, int, int]], bytes] | None,
        retry: bool,
    ) -> None:
        """Open the file, make sure it is still the one described, and send it."""
        try:
            fd = os.open(variant.path, _OPEN_FLAGS)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                same = variant.same_file(os.fstat(fd))
            except OSError:
                same = False
            if not same:
                os.close(fd)
                fd = -1
        if fd < 0:
            self._cache.drop(key)  # changed or gone since it was looked at: look again
            if retry:
                self._serve(exchange, key, retry=False)
            else:
                self._answer_404(exchange)
            return
        if plan is None:
            plan = ([(b"", 0, variant.size)], b"")
        try:
            exchange.start_response(status, headers)
            if exchange.head.method == "HEAD":
                exchange.finish()
                os.close(fd)
                return
        except BaseException:
            os.close(fd)
            raise
        self._tasks.spawn(_send(exchange, fd, plan))

    # -- answers other than the file -------------------------------------------------
    def _answer_404(self, exchange: Exchange) -> None:
        if self._not_found:
            entry = self._cache.entries.get(_NOT_FOUND_KEY)
            if entry is None or _now() - entry.checked >= TRUST_SECONDS:
                entry = None
                found = self._safe.lookup(self._not_found)
                if found is not None and not found.is_dir:
                    entry = self._builder.build(found.path, self._mime(found.path), _now())
                    if entry is not None:
                        self._cache.put(_NOT_FOUND_KEY, entry)
            page = entry.identity if entry is not None else None
            if page is not None and page.body is not None:
                exchange.start_response(
                    404,
                    [
                        (b"content-type", page.content_type),
                        (b"content-length", b"%d" % page.size),
                    ],
                )
                exchange.finish(b"" if exchange.head.method == "HEAD" else page.body)
                return
        _plain(exchange, 404, b"Not Found\n", [])

    def _redirect_to_directory(self, exchange: Exchange) -> None:
        target = exchange.head.raw_path + b"/"
        if target.startswith(b"//"):
            self._answer_404(exchange)  # never a redirect to another host
            return
        if exchange.head.query_string:
            target += b"?" + exchange.head.query_string
        _plain(exchange, 301, b"Moved Permanently\n", [(b"location", target)])

    def _answer_listing(self, exchange: Exchange, directory: str, key: str) -> None:
        page = render_listing(
            self._safe, directory, exchange.head.normalized_path, at_root=key == "/"
        )
        if page is None:
            self._answer_404(exchange)
            return
        exchange.start_response(
            200,
            [
                (b"content-type", _HTML),
                (b"content-length", b"%d" % len(page)),
                (b"cache-control", b"no-cache"),
            ],
        )
        exchange.finish(b"" if exchange.head.method == "HEAD" else page)


Plan = tuple[list[tuple[bytes, int, int]], bytes]  # (part head, offset, count) and a tail


async def _send(exchange: Exchange, fd: int, plan: Plan) -> None:
    """Send the planned parts of ``fd`` (part heads and file ranges) and end the response."""
    segments, tail = plan
    try:
        for head, offset, count in segments:
            if head:
                exchange.write(head)
            if count:
                await exchange.sendfile(fd, offset, count)
            if exchange.disconnected:
                break
        exchange.finish(tail)
    except asyncio.CancelledError:
        exchange.fail(None)
        raise
    except ClientDisconnected:
        exchange.fail(None)
    except Exception as exc:
        exchange.fail(exc)
    finally:
        os.close(fd)
