"""The error log: where bastion says what it is doing and what went wrong.

Every process writes readable lines to stderr (or ``log.error_file``)::

    2026-11-24 10:00:00 [1234] INFO listening on http://127.0.0.1:8000

The supervisor writes directly: it is a small blocking loop with nothing else to do.
A worker must never let a slow terminal or disk stall its event loop, so after the fork
:func:`setup_worker_logging` routes its records through a queue to a writer thread.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
from typing import TextIO

from bastion.config.schema import LogConfig

LOGGER_NAME = "bastion"
FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

logger = logging.getLogger(LOGGER_NAME)

_stream: TextIO = sys.stderr
_owned_stream: TextIO | None = None  # an error_file we opened and must close
_listener: logging.handlers.QueueListener | None = None


def error_stream() -> TextIO:
    """The stream the error log writes to (for faulthandler stack dumps)."""
    return _stream


def _open_stream(cfg: LogConfig) -> TextIO:
    global _owned_stream
    if cfg.error_file in ("", "-"):
        return sys.stderr
    if _owned_stream is not None and _owned_stream.name == cfg.error_file:
        return _owned_stream
    stream = open(cfg.error_file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    if _owned_stream is not None:
        _owned_stream.close()
    _owned_stream = stream
    return stream


def _reset_handlers() -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        if not isinstance(handler, logging.handlers.QueueHandler):
            handler.close()


def setup_logging(cfg: LogConfig) -> None:
    """Configure the error log for the supervisor (blocking writes, one handler).

    Safe to call again (on reload) to switch level or file.
    """
    global _stream
    _stream = _open_stream(cfg)
    _reset_handlers()
    handler = logging.StreamHandler(_stream)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(cfg.level.upper())
    logger.propagate = False
    # the app's own loggers (and asyncio's) go to the same place unless the app
    # configured logging itself
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


def setup_worker_logging(cfg: LogConfig) -> None:
    """In a freshly forked worker: send records through a queue to a writer thread."""
    global _listener
    setup_logging(cfg)
    target = logger.handlers[0]
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _reset_handlers_keep(target)
    queue_handler = logging.handlers.QueueHandler(records)
    logger.addHandler(queue_handler)
    root = logging.getLogger()
    if target in root.handlers:
        root.removeHandler(target)
        root.addHandler(queue_handler)
    _listener = logging.handlers.QueueListener(records, target, respect_handler_level=False)
    _listener.start()


def _reset_handlers_keep(keep: logging.Handler) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        if handler is not keep:
            handler.close()


def reopen_error_log() -> bool:
    """Open ``log.error_file`` again by its name (after logrotate renamed it) and write
    there from now on; False when the error log is not a file of ours (stderr)."""
    global _stream, _owned_stream
    old = _owned_stream
    if old is None:
        return False
    stream = open(old.name, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    handlers = [*logger.handlers, *logging.getLogger().handlers]
    if _listener is not None:
        handlers.extend(_listener.handlers)
    for handler in handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is old:
            handler.setStream(stream)
    _stream = stream
    _owned_stream = stream
    old.close()
    return True


def flush_logging() -> None:
    """Write out everything queued (a worker calls this before it exits)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
    for handler in logger.handlers:
        handler.flush()
    try:
        _stream.flush()
    except (OSError, ValueError):
        pass
