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
generators, coroutines), frames and tracebacks, the C types that give something back
when freed without one (epoll, kqueue and dbm objects, memory maps, memory views, SQLite
connections), and every object holding one of those directly (an instance also through
its ``__dict__``), so that dropping the holder still closes the socket. A resource held
deeper (an object holding a list of sockets) is kept open when the outer object is
dropped. What an immortal object costs: it is never freed, so a worker that drops one (a
cache entry filled before the fork and evicted after) keeps its memory; the supervisor's
objects of that moment live as long as it does.

Only CPython 3.12 and 3.13, 64-bit, with the GIL, in a release build: each writes the
immortal count the same way (all ones in the low 32 bits of the reference count, its
first field), which this module relies on and checks on an object of its own; on any
other Python :func:`immortalize` does nothing.
"""

from __future__ import annotations

import gc
import sys
import sysconfig
import time
import types
from collections.abc import Iterable
from typing import Any, Final

#: the low 32 bits of an immortal object's reference count (Python 3.12, 3.13)
IMMORTAL: Final = 0xFFFFFFFF
_SIGN: Final = 0x80000000  # set in any immortal count (and in no real one below 2**31)
# where those 32 bits are in the object (its first field)
_OFFSET: Final = 4 if sys.byteorder == "big" else 0
_HEAP_TYPE: Final = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement

#: C types that give something back when freed, with no finalizer to say so: a
#: descriptor (epoll, kqueue, dbm files), a mapping, a buffer export (a memory view
#: keeps its bytearray or memory map from growing or closing), a database handle
_FREED_WITH_EFFECT: Final = frozenset(
    {
        "select.epoll",
        "select.kqueue",
        "mmap.mmap",
        "builtins.memoryview",
        "pickle.PickleBuffer",
        "sqlite3.Connection",
        "_dbm.dbm",
        "_gdbm.gdbm",
    }
)


def _python_fits() -> bool:
    """CPython 3.12 or 3.13, 64-bit, with the GIL, a release build without the trace of
    every object: where the immortal count is all ones in the low half of the first
    field (on 32-bit it is another value, in a trace-refs build not the first field)."""
    return (
        sys.implementation.name == "cpython"
        and sys.version_info[:2] in ((3, 12), (3, 13))
        and sys.maxsize > 2**32
        and not sysconfig.get_config_var("Py_GIL_DISABLED")
        and not hasattr(sys, "gettotalrefcount")  # a debug build
        and not hasattr(sys, "getobjects")  # a trace-refs build
    )


def _load_ctypes() -> Any:
    """ctypes, where this Python fits and its objects start with their reference count
    as expected (checked on an object of our own); else None. Loaded at import, not
    when called: the supervisor imports this module before it may switch to a user who
    cannot read the installed files."""
    if not _python_fits():
        return None
    try:
        import ctypes
    except ImportError:  # a Python built without it
        return None
    probe = object()
    if ctypes.c_ssize_t.from_address(id(probe)).value != sys.getrefcount(probe) - 1:
        return None
    return ctypes


_CTYPES: Final[Any] = _load_ctypes()


def supported() -> bool:
    """Whether this Python has immortal objects this module knows how to make."""
    return _CTYPES is not None


def immortalize() -> tuple[int, float]:
    """Make every object reachable from the collector's lists (the modules, their
    functions, classes and data, the preloaded app) immortal, except those that must
    be freed or finalized and those that hold one. Returns how many were made so and
    the seconds it took; (0, 0.0) where :func:`supported` is false."""
    if _CTYPES is None:
        return 0, 0.0
    started = time.perf_counter()
    gc.unfreeze()  # (the frozen objects too: gc.get_objects() leaves them out)
    gc.collect()  # (garbage would otherwise be kept for good)
    pending: list[Any] = gc.get_objects()
    pending.append(sys.modules)
    word_at = _CTYPES.c_uint32.from_address
    referents = gc.get_referents
    mortal: dict[type, bool] = {}  # per class: must its objects stay mortal?
    holders: set[int] = set()  # objects kept mortal for what they hold (seen once)
    count = 0
    while pending:
        obj = pending.pop()
        key = id(obj)
        word = word_at(key + _OFFSET)
        if word.value & _SIGN or key in holders:  # immortal already, or seen and kept
            continue
        kind = type(obj)
        if _stays_mortal(kind, mortal) or obj is pending:
            continue
        inside = referents(obj)
        pending.extend(inside)
        # What holds one directly (or an instance through its __dict__) stays mortal
        # too, or dropping it would no longer free what it holds. (A dict's values are
        # read from it: one sharing an instance's values shows none to the collector.)
        if _holds_mortal(obj.values() if kind is dict else inside, mortal) or (
            kind.__flags__ & _HEAP_TYPE
            and any(d.__class__ is dict and _holds_mortal(d.values(), mortal) for d in inside)
        ):
            holders.add(key)  # (two holders holding each other would be seen forever)
            continue
        word.value = IMMORTAL
        count += 1
    return count, time.perf_counter() - started


def _holds_mortal(objects: Iterable[Any], mortal: dict[type, bool]) -> bool:
    return any(_stays_mortal(type(item), mortal) for item in objects)


def _stays_mortal(kind: type, mortal: dict[type, bool]) -> bool:
    """:func:`_must_stay_mortal`, answered once per class (``mortal`` keeps the answers)."""
    keep = mortal.get(kind)
    if keep is None:
        keep = mortal[kind] = _must_stay_mortal(kind)
    return keep


def _must_stay_mortal(kind: type) -> bool:
    """Whether objects of ``kind`` must be freed, or finalized, when dropped."""
    if issubclass(kind, types.FrameType | types.TracebackType) or _has_finalizer(kind):
        return True
    return any(f"{c.__module__}.{c.__qualname__}" in _FREED_WITH_EFFECT for c in kind.__mro__)


def _has_finalizer(kind: type) -> bool:
    try:
        return getattr(kind, "__del__", None) is not None
    except Exception:  # a metaclass's own __getattr__: leave its objects alone
        return True
