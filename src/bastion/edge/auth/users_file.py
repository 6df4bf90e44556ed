"""The users file of Basic authentication: ``user:argon2-hash`` lines.

``bastion passwd FILE USER`` writes it. Blank lines and lines starting with ``#`` are
skipped. A user name cannot contain ``:`` (Basic credentials split at the first one).
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["read_users", "write_users"]


def read_users(path: str) -> dict[str, str]:
    """user -> hash, from ``path``."""
    users: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, digest = line.partition(":")
            if sep and user and digest:
                users[user] = digest
    return users


def write_users(path: str, users: dict[str, str]) -> None:
    """Replace ``path`` with ``users`` at once (a worker reading it sees the old file or
    the new one, never half of one), readable by its owner only when new."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    fd, tmp = tempfile.mkstemp(prefix=".passwd-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for user, digest in users.items():
                f.write(f"{user}:{digest}\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
