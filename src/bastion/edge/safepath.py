"""Turning a request path into a file path that cannot leave the served directory.

Two layers, both cheap:

- :func:`raw_path_refused` looks at the path as it came off the wire (still
  percent-encoded) and refuses encoded slashes, backslashes and NUL bytes: once decoded
  they would change where a path segment ends, so no file name may carry them.
- :class:`SafeRoot` checks the decoded path segment by segment (no ``.``/``..``, no empty
  segment, no backslash or NUL, dotfiles hidden unless allowed) and then, for the file
  actually found, resolves every symlink (``realpath``) and requires the result to lie
  under the root's own real path (``commonpath``), unless symlinks may leave the root.

Only regular files and directories are ever reported; devices, FIFOs and sockets under
the root are treated as missing (opening a FIFO would block the worker).
"""

from __future__ import annotations

import os
import re
import stat

__all__ = ["Found", "SafeRoot", "raw_path_refused"]

# %2F (/), %5C (\), %00 (NUL) in any case, or a literal backslash
_RAW_BAD = re.compile(rb"%(?:2[fF]|5[cC]|00)|\\")

# names that stay visible when dotfiles are hidden: ACME challenges, security.txt, ...
ALWAYS_VISIBLE = frozenset({".well-known"})


def raw_path_refused(raw_path: bytes) -> bool:
    """True if the undecoded request path holds an encoded slash, backslash or NUL."""
    return (raw_path.find(b"%") >= 0 or raw_path.find(b"\\") >= 0) and _RAW_BAD.search(
        raw_path
    ) is not None


class Found:
    """A file or directory under the root that a request may see."""

    __slots__ = ("is_dir", "path", "st")

    def __init__(self, path: str, st: os.stat_result, is_dir: bool) -> None:
        self.path = path  # the path to open (under the root as given, symlinks unresolved)
        self.st = st  # os.stat of it (symlinks followed)
        self.is_dir = is_dir


class SafeRoot:
    """One served directory and the rules for what below it may be seen."""

    __slots__ = ("dotfiles", "follow_symlinks", "real", "root")

    def __init__(self, root: str, *, dotfiles: bool, follow_symlinks: bool) -> None:
        self.root = os.path.abspath(root)
        self.real = os.path.realpath(self.root)
        self.dotfiles = dotfiles
        self.follow_symlinks = follow_symlinks

    def segments_ok(self, rel: str) -> bool:
        """Whether a decoded path below the root (starting with "/") is well formed.

        A trailing "/" is allowed (a directory); nothing else may be empty.
        """
        if not rel.startswith("/") or "\x00" in rel or "\\" in rel:
            return False
        parts = rel[1:].split("/")
        if parts and parts[-1] == "":
            parts.pop()
        for part in parts:
            if part == "" or part == "." or part == "..":
                return False
            if part[0] == "." and not self.dotfiles and part not in ALWAYS_VISIBLE:
                return False
        return True

    def inside(self, path: str) -> bool:
        """Whether ``path``, with every symlink resolved, still lies under the root."""
        if self.follow_symlinks:
            return True
        real = os.path.realpath(path)
        try:
            return os.path.commonpath((self.real, real)) == self.real
        except ValueError:
            return False

    def lookup(self, rel: str) -> Found | None:
        """The file or directory ``rel`` names, or None if it must look missing."""
        if not self.segments_ok(rel):
            return None
        path = self.root + rel.rstrip("/") if rel != "/" else self.root
        return self.check(path)

    def check(self, path: str) -> Found | None:
        """Stat ``path`` (already under the root by construction) and apply the rules."""
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        mode = st.st_mode
        if stat.S_ISREG(mode):
            is_dir = False
        elif stat.S_ISDIR(mode):
            is_dir = True
        else:
            return None
        if not self.inside(path):
            return None
        return Found(path, st, is_dir)
