"""Content types for static files, from the file name's extension.

The table is Python's built-in one (the same on every machine: the system's
``/etc/mime.types`` is not read, so a site answers the same wherever it runs), corrected
and extended for the web (``.js`` is ``text/javascript`` per RFC 9239, ``.wasm``,
``.webp``, ``.avif``, ``.woff2``, ...), with a route's own overrides on top. Text types
get ``; charset=utf-8``. Unknown extensions are ``application/octet-stream``.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping

__all__ = ["DEFAULT_TYPE", "MimeTable"]

DEFAULT_TYPE = "application/octet-stream"

# Where the built-in table is missing, outdated or differs from what browsers expect.
WEB_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".cjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".htm": "text/html",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/vnd.microsoft.icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".md": "text/markdown",
    ".txt": "text/plain",
    ".xml": "application/xml",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".gz": "application/gzip",
    ".br": "application/octet-stream",
    ".zst": "application/zstd",
}

# types that are text although not text/*: they get a charset too
_TEXT_LIKE = frozenset({"application/javascript", "image/svg+xml"})


def with_charset(content_type: str) -> str:
    """Add ``charset=utf-8`` to a text type that names no charset."""
    if ";" in content_type:
        return content_type
    if content_type.startswith("text/") or content_type in _TEXT_LIKE:
        return content_type + "; charset=utf-8"
    return content_type


class MimeTable:
    """Extension (lower case, with its dot) -> Content-Type value as bytes."""

    __slots__ = ("_types",)

    def __init__(self, overrides: Mapping[str, str] = ()) -> None:  # type: ignore[assignment]
        table: dict[str, str] = {}
        builtin = mimetypes.MimeTypes()  # the built-in table only, no system files
        table.update(builtin.types_map[True])
        table.update(WEB_TYPES)
        types = {ext.lower(): with_charset(t) for ext, t in table.items()}
        for ext, value in dict(overrides).items():
            key = ext.lower() if ext.startswith(".") else "." + ext.lower()
            if not value or any(c in value for c in "\r\n\x00"):
                raise ValueError(f"mime_types: invalid content type {value!r} for {ext!r}")
            types[key] = value  # an override is taken exactly as written
        self._types = {ext: t.encode("latin-1") for ext, t in types.items()}

    def __call__(self, name: str) -> bytes:
        """The Content-Type for a file called ``name``."""
        dot = name.rfind(".")
        if dot > name.rfind("/"):
            found = self._types.get(name[dot:].lower())
            if found is not None:
                return found
        return DEFAULT_TYPE.encode()
