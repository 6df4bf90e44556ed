"""The slow-request log: a warning in the error log for each response that took longer
than ``log.slow_request_ms``.

It sits where the access log does (the protocol calls it once per finished response
with the time since the request head), in front of the access log when that is on, so a
fast request costs one comparison. The line goes through the worker's queued error log,
never blocking the event loop::

    WARNING slow request: GET /reports/42 -> 200, 1834.2 ms, 52311 bytes (worker 1236)
"""

from __future__ import annotations

import os
from typing import Any

from bastion.observe.logging import logger


class SlowLog:
    """The access-log hook, reporting slow responses and passing on to ``inner``."""

    def __init__(self, threshold_ms: float, inner: Any = None) -> None:
        self.threshold = threshold_ms / 1000
        self.inner = inner
        self.pid = os.getpid()

    def __call__(self, exchange: Any, status: int, body_bytes: int, duration: float) -> None:
        if self.inner is not None:
            self.inner(exchange, status, body_bytes, duration)
        if duration >= self.threshold:
            try:
                head = exchange.head
                target = head.raw_path.decode("latin-1")
                if head.query_string:
                    target += "?" + head.query_string.decode("latin-1")
                logger.warning(
                    "slow request: %s %s -> %d, %.1f ms, %d bytes (worker %d)",
                    head.method,
                    target[:300],
                    status,
                    duration * 1000,
                    body_bytes,
                    self.pid,
                )
            except Exception:  # a log line must never break a response
                pass

    def session(self, exchange: Any, session: Any, duration: float) -> None:
        if self.inner is not None:
            self.inner.session(exchange, session, duration)

    def reopen(self) -> None:
        if self.inner is not None:
            self.inner.reopen()

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
