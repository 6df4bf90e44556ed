"""Children that die with the supervisor: Linux's parent-death signal.

A ``[[process]]`` program runs code bastion does not control; if the supervisor is
killed with SIGKILL (the OOM killer, ``kill -9``) it would live on, reparented to init,
holding its ports and files. :func:`die_with_parent` runs in the child between the fork
and the exec and asks the kernel to send it ``sig`` when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); the request survives the exec. The parent may have died
before the call, which the kernel would never report: the child then checks
``getppid()`` against the parent it was forked from and stops at once.

(The workers and the admin process watch their parent themselves, once a second, and
stop when it is gone.)
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1

_prctl: Callable[..., int] | None = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        _prctl = None


def available() -> bool:
    return _prctl is not None


def die_with_parent(sig: int, parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when the
    process ``parent`` (the caller, the supervisor) dies; if it already has, the child
    exits before running the program."""

    def preexec() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)  # the supervisor died between the fork and the prctl

    return preexec


__all__ = ["available", "die_with_parent"]
