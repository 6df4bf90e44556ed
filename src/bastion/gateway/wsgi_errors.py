"""``wsgi.errors``: the stream a WSGI app writes its error text to.

Not compiled, on purpose: the class derives from ``io.TextIOBase``, a C type whose
instances keep their attributes in a dictionary Python manages itself from 3.12 on, and a
class compiled with mypyc that derives from it fails to load there ("has the
Py_TPFLAGS_MANAGED_DICT flag but tp_dictoffset is set"). Nothing here is on the request
path: an app writes to it only to report an error.
"""

from __future__ import annotations

import io
import logging
import threading

__all__ = ["ErrorStream"]


class ErrorStream(io.TextIOBase):
    """``wsgi.errors``: text written here goes, line by line, to the ``bastion.error`` log.

    A partial line waits (per thread) for its newline or a :meth:`flush`.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__()
        self._log = logger or logging.getLogger("bastion.error")
        self._local = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"wsgi.errors takes str, not {type(s).__name__}")
        pending: str = getattr(self._local, "pending", "") + s
        lines = pending.split("\n")
        self._local.pending = lines.pop()
        for line in lines:
            self._log.error("%s", line)
        return len(s)

    def flush(self) -> None:
        pending = getattr(self._local, "pending", "")
        if pending:
            self._local.pending = ""
            self._log.error("%s", pending)

    def close(self) -> None:  # shared by every request: an app closing it changes nothing
        self.flush()
