"""Building the PEP 3333 ``environ`` dict from an :class:`Exchange`.

The parts that never change (``wsgi.version``, ``wsgi.errors``, ``SCRIPT_NAME``...) are
built once; per request the base is copied and the request's own keys are added.
Request header names are translated to ``HTTP_*`` keys through a bounded cache.

Headers whose names contain ``_`` are dropped: ``X-Forwarded_For`` and
``X-Forwarded-For`` would both become ``HTTP_X_FORWARDED_FOR``, letting a client spoof
a header a proxy in front set (nginx and Apache drop them for the same reason).
Repeated headers are joined with ``", "`` (``Cookie`` with ``"; "``).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import unquote_to_bytes

from bastion.config.schema import Config
from bastion.gateway.wsgi_errors import ErrorStream
from bastion.gateway.wsgi_io import FileWrapper
from bastion.protocol.types import Exchange

__all__ = ["EnvironBuilder"]

_NAME_CACHE_LIMIT: Final = (
    512  # distinct header names remembered; the rest are translated each time
)

_SPECIAL: Final = {
    b"content-type": "CONTENT_TYPE",
    b"content-length": "CONTENT_LENGTH",
}

_COMMON: Final = (
    b"host",
    b"user-agent",
    b"accept",
    b"accept-encoding",
    b"accept-language",
    b"connection",
    b"cookie",
    b"referer",
    b"origin",
    b"authorization",
    b"cache-control",
    b"if-none-match",
    b"if-modified-since",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-real-ip",
    b"x-requested-with",
)

_PROTOCOLS: Final = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0", "2": "HTTP/2", "0.9": "HTTP/0.9"}
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def _translate(name: bytes) -> str:
    """The environ key for a header name; "" if the header is to be dropped."""
    special = _SPECIAL.get(name)
    if special is not None:
        return special
    if name.find(b"_") >= 0:
        return ""
    return "HTTP_" + name.decode("latin-1").upper().replace("-", "_")


class EnvironBuilder:
    """Makes the environ for each request. One per gateway."""

    __slots__ = ("_base", "_names", "_root", "_root_slash")

    def __init__(self, config: Config, multithread: bool) -> None:
        root = config.app.root_path.rstrip("/")
        # environ strings carry bytes as latin-1 (PEP 3333 "native strings")
        self._root = root.encode("utf-8").decode("latin-1")
        self._root_slash = self._root + "/"
        self._base: dict[str, Any] = {
            "SCRIPT_NAME": self._root,
            "wsgi.version": (1, 0),
            "wsgi.errors": ErrorStream(),
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }
        self._names: dict[bytes, str] = {}
        for name in (*_SPECIAL, *_COMMON):
            self._names[name] = _translate(name)

    def build(self, ex: Exchange) -> dict[str, Any]:
        """A new environ for ``ex``, without ``wsgi.input`` (the caller adds it)."""
        head = ex.head
        raw = head.raw_path
        path = (
            unquote_to_bytes(raw).decode("latin-1")
            if raw.find(b"%") >= 0
            else raw.decode("latin-1")
        )
        root = self._root
        if root and (path == root or path.startswith(self._root_slash)):
            path = path[len(root) :]
        base = self._base
        client = head.client
        # one dict display: made at its final size at once, where copying a base and
        # adding to it resized it twice per request
        env: dict[str, Any] = {
            "REQUEST_METHOD": head.method,
            "SCRIPT_NAME": root,
            "PATH_INFO": path,
            "QUERY_STRING": head.query_string.decode("latin-1"),
            "SERVER_PROTOCOL": _PROTOCOLS.get(head.http_version) or "HTTP/" + head.http_version,
            "REMOTE_ADDR": client[0] if client is not None else "",
            "REMOTE_PORT": str(client[1]) if client is not None else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": head.scheme,
            "wsgi.errors": base["wsgi.errors"],
            "wsgi.multithread": base["wsgi.multithread"],
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }
        if client is None:
            del env["REMOTE_ADDR"], env["REMOTE_PORT"]
        if head.tls is not None:
            env.update(head.tls.cgi())
        names = self._names
        for name, value in head.headers:
            key = names.get(name)
            if key is None:
                key = _translate(name)
                if len(names) < _NAME_CACHE_LIMIT:
                    names[name] = key
            if not key:
                continue
            text = value.decode("latin-1")
            if key in env:
                if key == "HTTP_COOKIE":
                    env[key] += "; " + text
                elif key.startswith("HTTP_"):
                    env[key] += ", " + text
                # a repeated Content-Length or Content-Type keeps the first
            else:
                env[key] = text
        host = env.get("HTTP_HOST")
        if host:
            if ":" in host and not host.endswith("]"):
                name_part, _, port = host.rpartition(":")
                env["SERVER_NAME"] = name_part
                # ("host:" has an empty port, which PEP 3333 does not allow)
                env["SERVER_PORT"] = port or _DEFAULT_PORTS.get(head.scheme, "80")
            else:
                env["SERVER_NAME"] = host
                env["SERVER_PORT"] = _DEFAULT_PORTS.get(head.scheme, "80")
        else:
            server = head.server
            if server is not None and server[1] is not None:
                env["SERVER_NAME"] = server[0]
                env["SERVER_PORT"] = str(server[1])
            else:  # a Unix socket: no host or port to speak of
                env["SERVER_NAME"] = "localhost"
                env["SERVER_PORT"] = _DEFAULT_PORTS.get(head.scheme, "80")
        if head.user is not None:
            env["REMOTE_USER"] = head.user
        context = head.context
        if context is not None:
            env.update(context)
        return env
