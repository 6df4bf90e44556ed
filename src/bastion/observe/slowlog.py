"""The slow-request log: a warning in the error log for each response that took longer
than ``log.slow_request_ms``, with its route, its worker and where the time went.

It sits where the access log does (the protocol calls it once per finished response
with the time since the request head), in front of the access log when that is on, so a
fast request costs one comparison. The line goes through the worker's queued error log,
never blocking the event loop::

    WARNING slow request: GET /reports/42 -> 200, 1834.2 ms, 52311 bytes, route /reports/
    (worker 1236): read 0.4 ms, filters 12.1 ms, app 1500.3 ms, send 321.4 ms

The stages (the exchange times them only while this log is on:
``ProtocolSettings.stage_times``):

* ``read``: from the request head to the last byte of its body (0 without a body). The
  body arrives as the app reads it, so this overlaps the other stages: a large ``read``
  with a large ``app`` is an app waiting for a slow upload.
* ``queued``: waiting behind an earlier pipelined request of the connection (shown
  only when it took 1 ms or more).
* ``filters``: the route's request filters (authentication, rate limits, access
  rules), which may wait for the network (a JWKS or forward-auth call, Redis).
* ``app``: the handler, until the response head: the application's own time, or for a
  proxied request the upstream's time to its response head (the line then names the
  ``upstream``).
* ``send``: from the response head to the last byte handed to the kernel: a slow
  client, or an app streaming its body slowly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from bastion.observe.logging import logger
from bastion.protocol.h1_exchange import (
    STAGE_BODY,
    STAGE_DISPATCH,
    STAGE_FILTERED,
    STAGE_HEAD,
    STAGE_RESPONSE,
)

QUEUED_SHOWN = 0.001  # a wait behind a pipelined request is named from 1 ms on


def describe_stages(stages: list[float], duration: float) -> str:
    """The time of each stage, from ``stages`` (see STAGE_* in h1_exchange) and the
    whole ``duration`` of the exchange, as "read 0.4 ms, filters ..."."""
    start = stages[STAGE_HEAD]
    end = start + duration
    dispatched = stages[STAGE_DISPATCH] or start
    filtered = stages[STAGE_FILTERED]
    answered = stages[STAGE_RESPONSE] or end
    body = stages[STAGE_BODY]
    parts = [f"read {max(body - start, 0.0) * 1000 if body else 0.0:.1f} ms"]
    if dispatched - start >= QUEUED_SHOWN:
        parts.append(f"queued {(dispatched - start) * 1000:.1f} ms")
    app_from = dispatched
    if filtered:
        parts.append(f"filters {max(filtered - dispatched, 0.0) * 1000:.1f} ms")
        app_from = filtered
    else:
        parts.append("filters 0.0 ms")
    parts.append(f"app {max(answered - app_from, 0.0) * 1000:.1f} ms")
    parts.append(f"send {max(end - answered, 0.0) * 1000:.1f} ms")
    return ", ".join(parts)


class SlowLog:
    """The access-log hook, reporting slow responses and passing on to ``inner``.
    ``routes`` are the labels of the site's routes, by index (as the access log's)."""

    def __init__(self, threshold_ms: float, inner: Any = None, routes: Sequence[str] = ()) -> None:
        self.threshold = threshold_ms / 1000
        self.inner = inner
        self.routes = tuple(routes)
        self.pid = os.getpid()

    def __call__(self, exchange: Any, status: int, body_bytes: int, duration: float) -> None:
        if self.inner is not None:
            self.inner(exchange, status, body_bytes, duration)
        if duration >= self.threshold:
            try:
                self._report(exchange, status, body_bytes, duration)
            except Exception:  # a log line must never break a response
                pass

    def _report(self, exchange: Any, status: int, body_bytes: int, duration: float) -> None:
        head = exchange.head
        target = head.raw_path.decode("latin-1")
        if head.query_string:
            target += "?" + head.query_string.decode("latin-1")
        route = head.route
        where = ""
        if 0 <= route < len(self.routes):
            where = f", route {self.routes[route]}"
        if head.upstream:
            where += f", upstream {head.upstream}"
        stages = exchange.stages if hasattr(exchange, "stages") else None
        timed = f": {describe_stages(stages, duration)}" if stages else ""
        logger.warning(
            "slow request: %s %s -> %d, %.1f ms, %d bytes%s (worker %d)%s",
            head.method,
            target[:300],
            status,
            duration * 1000,
            body_bytes,
            where,
            self.pid,
            timed,
        )

    def session(self, exchange: Any, session: Any, duration: float) -> None:
        if self.inner is not None:
            self.inner.session(exchange, session, duration)

    def reopen(self) -> None:
        if self.inner is not None:
            self.inner.reopen()

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
