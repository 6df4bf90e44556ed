"""Immortal objects before the fork (Python 3.12 and 3.13): the workers stop copying the
pages of the code and data they share with the supervisor.

A forked worker shares every memory page with the supervisor until it writes to one,
and Python writes to an object each time it takes or drops a reference to it: calling a
function writes to the function, its code, its globals; making an instance writes to its
class. So a worker serving requests copies every page holding an object a request
touches, though it never changes one of them (docs/process.md measures it: most of a
worker's private memory). Python 3.12 gave objects an *immortal* reference count (PEP
683): for such an object taking and dropping references writes nothing, and it is never
freed. Python makes only its own constants immortal; this module does the same for every
object the supervisor holds just before it starts the workers, the way large
deployments of forking Python servers do.

What it leaves out, because they must be freed or finalized once nothing uses them:
objects whose class has a finalizer (``__del__``, or a C type's: files, sockets,
generators, coroutines), frames and tracebacks, and the few C types that release an
operating-system resource when freed without one (an epoll object, a memory map). What
an immortal object costs: it is never freed, so a worker that drops one (a cache entry
filled before the fork and evicted after) keeps its memory; the supervisor's objects of
that moment live as long as it does.

Only CPython 3.12 and 3.13 with the GIL, in a release build: each writes the immortal
count the same way (all ones in the low 32 bits of the reference count), which this
module relies on; on any other Python :func:`immortalize` does nothing.
"""

from __future__ import annotations

import gc
import sys
import sysconfig
import time
import types
from typing import Any

#: the low 32 bits of an immortal object's reference count (Python 3.12, 3.13)
IMMORTAL = 0xFFFFFFFF
_SIGN = 0x80000000  # set in any immortal count (and in no real one below 2**31)
# where those 32 bits are in the object (its first field)
_OFFSET = 4 if sys.byteorder == "big" else 0

_FREED_WITH_EFFECT = ("select.epoll", "select.kqueue", "mmap.mmap", "_sqlite3.Connection")


def supported() -> bool:
    """Whether this Python has immortal objects this module knows how to make."""
    return (
        sys.implementation.name == "cpython"
        and sys.version_info[:2] in ((3, 12), (3, 13))
        and not sysconfig.get_config_var("Py_GIL_DISABLED")
        and not hasattr(sys, "gettotalrefcount")  # a debug build counts differently
    )


if supported():
    # (here, not when called: the supervisor imports this module before it may switch to
    # a user who cannot read the installed files)
    import ctypes


def _resource_types() -> tuple[type, ...]:
    """C types that close or unmap something when freed, with no finalizer to say so."""
    found: list[type] = [types.FrameType, types.TracebackType]
    for dotted in _FREED_WITH_EFFECT:
        module, _, name = dotted.rpartition(".")
        loaded = sys.modules.get(module)
        kind = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(kind, type):
            found.append(kind)
    return tuple(found)


def immortalize() -> tuple[int, float]:
    """Make every object reachable from the collector's lists (the modules, their
    functions, classes and data, the preloaded app) immortal, except those that must
    be freed or finalized. Returns how many were made so and the seconds it took;
    (0, 0.0) where :func:`supported` is false."""
    if not supported():
        return 0, 0.0
    started = time.perf_counter()
    gc.collect()  # (garbage would otherwise be kept for good)
    pending: list[Any] = gc.get_objects()
    pending.append(sys.modules)
    word_at = ctypes.c_uint32.from_address
    excluded = _resource_types()
    mortal: dict[type, bool] = {}  # per class: must its objects stay mortal?
    count = 0
    while pending:
        obj = pending.pop()
        word = word_at(id(obj) + _OFFSET)
        if word.value & _SIGN:  # immortal already (Python's own, or seen before)
            continue
        kind = type(obj)
        keep = mortal.get(kind)
        if keep is None:
            keep = mortal[kind] = issubclass(kind, excluded) or _has_finalizer(kind)
        if keep or obj is pending:
            continue
        word.value = IMMORTAL
        count += 1
        pending.extend(gc.get_referents(obj))
    return count, time.perf_counter() - started


def _has_finalizer(kind: type) -> bool:
    try:
        return getattr(kind, "__del__", None) is not None
    except Exception:  # a metaclass's own __getattr__: leave its objects alone
        return True
