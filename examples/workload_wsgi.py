"""A WSGI app with a CPU-bound and an I/O-bound route, to measure worker settings.

docs/choosing-workers.md measures it with wrk; run it from this directory::

    bastion serve workload_wsgi:app --workers 1 --wsgi-mode inline
    bastion serve workload_wsgi:app --workers 1 --wsgi-mode threads --threads 16

Routes:

* ``/cpu`` -- about 1 ms of pure-Python work (like rendering a template); holds the GIL.
* ``/io`` -- waits 20 ms without using the CPU (like a database query); releases the GIL.
* ``/hello`` -- answers at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

IO_WAIT = 0.020  # seconds
CPU_ROUNDS = 15_000  # about 1 ms of arithmetic in CPython 3.11 on a current x86 core


def _cpu() -> bytes:
    total = 0
    for i in range(CPU_ROUNDS):
        total += i * i % 7
    return b"cpu %d\n" % total


def _io() -> bytes:
    time.sleep(IO_WAIT)
    return b"io done\n"


ROUTES: dict[str, Callable[[], bytes]] = {
    "/cpu": _cpu,
    "/io": _io,
    "/hello": lambda: b"hello\n",
}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    route = ROUTES.get(environ.get("PATH_INFO", ""))
    if route is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    body = route()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
