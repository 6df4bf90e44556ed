"""A WSGI app for the compression tests, mounted below ``/wsgi/``.

- ``/rows``: a CSV export yielded row by row (a streamed body without a length);
- ``/file``: the file named by ``COMPRESS_WSGI_FILE`` (the test writes ``FILE_BODY``
  there), sent with ``wsgi.file_wrapper``: bastion would use sendfile; through
  compression it reads and compresses blocks instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

ROWS = [b"%d,user%d,user%d@example.com,%d\n" % (i, i, i, i * 7 % 100) for i in range(2000)]
FILE_BODY = b"".join(ROWS)


def _file() -> str:
    """The file to send: named by the test in COMPRESS_WSGI_FILE, holding FILE_BODY."""
    return os.environ["COMPRESS_WSGI_FILE"]


def _rows() -> Iterator[bytes]:
    yield b"id,name,email,score\n"
    yield from ROWS


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    csv = [("Content-Type", "text/csv; charset=utf-8")]
    if path == "/rows":
        start_response("200 OK", csv)
        return _rows()
    if path == "/file":
        f = open(_file(), "rb")  # noqa: SIM115 - the server closes it with the response
        start_response("200 OK", [*csv, ("Content-Length", str(len(FILE_BODY)))])
        wrapper = environ["wsgi.file_wrapper"]
        return wrapper(f, 65536)  # type: ignore[no-any-return]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]
