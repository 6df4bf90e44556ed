"""Unmasking client WebSocket frames in C where ``websockets`` is installed.

Every client frame is XOR-masked with a 4-byte key (RFC 6455 section 5.3). wsproto
unmasks in Python (four strided translate()s of the payload: ~70 us per 64 KiB here,
most of the CPU time of large messages); the ``websockets`` library ships the same
operation in C (~1.3 us). When it is installed (the ``bastion[websocket]`` extra),
importing this module replaces wsproto's masker by one that calls it: same results,
chunk by chunk, the key rotated the same way. :func:`unmask` is the same operation for
the frames :mod:`bastion.protocol.websocket` parses itself.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable

import wsproto.frame_protocol

__all__ = ["FAST_UNMASK", "unmask"]


# The extension module is loaded from its file alone: importing it by name would run
# the websockets package's __init__, whose version module imports importlib.metadata
# (zipfile, csv, email, ...: 1.7 MiB more in the supervisor and every worker, for a
# package bastion takes one C function from).
def _load_apply_mask() -> Callable[[bytes | bytearray, bytes], bytes] | None:
    loaded = sys.modules.get("websockets.speedups")
    if loaded is None:
        try:
            # the import system's own search, in the package's folders, without running
            # the package
            package = importlib.util.find_spec("websockets")
            folders = package.submodule_search_locations if package is not None else None
            if not folders:  # (None would search sys.path itself)
                return None
            spec = importlib.machinery.PathFinder.find_spec("websockets.speedups", folders)
            if spec is None or spec.loader is None:
                return None
            loaded = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(loaded)
        except (ImportError, ValueError):
            return None
        finally:
            # (Python files an extension module under its name; left there without its
            # package, an app's own ``import websockets.speedups`` would skip the package)
            if "websockets" not in sys.modules:
                sys.modules.pop("websockets.speedups", None)
    apply_mask = getattr(loaded, "apply_mask", None)
    return apply_mask if callable(apply_mask) else None


_apply_mask = _load_apply_mask()  # None: no C speed-up, wsproto's own masker


class _CMasker:
    """wsproto's ``XorMaskerSimple`` with the XOR done in C."""

    __slots__ = ("_key",)

    def __init__(self, masking_key: bytearray | bytes) -> None:
        self._key = bytes(masking_key)

    def process(self, data: bytearray) -> bytes:
        # bytes, not the bytearray wsproto's own masker returns: wsproto copies the
        # payload into bytes next, which is then no copy at all
        n = len(data)
        if not n:
            return b""
        key = self._key
        assert _apply_mask is not None
        out: bytes = _apply_mask(data, key)
        turn = n & 3
        if turn:
            self._key = key[turn:] + key[:turn]
        return out


def unmask(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """``data`` XOR-ed with the 4-byte ``key`` repeated (RFC 6455 section 5.3)."""
    if _apply_mask is not None:
        return _apply_mask(data, key)  # type: ignore[arg-type]
    n = len(data)
    if not n:
        return b""
    mask = key * ((n + 3) >> 2)
    if len(mask) != n:
        mask = mask[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(mask, "little")).to_bytes(n, "little")


#: True when client frames are unmasked in C (``websockets.speedups``)
FAST_UNMASK = _apply_mask is not None
if FAST_UNMASK:
    wsproto.frame_protocol.XorMaskerSimple = _CMasker  # type: ignore[misc,assignment]
