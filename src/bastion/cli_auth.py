"""``bastion passwd FILE USER`` and ``bastion apikey NAME``: the credentials of
authentication routes.

``passwd`` adds a user to a Basic users file or changes its password (argon2id hash,
argon2-cffi's defaults): the password is read twice from the terminal without echo, or
once from standard input when that is not a terminal (for scripts). ``--delete``
removes the user. The file is replaced at once; workers see the change within a second.

``apikey NAME`` makes a random key, prints it once, and prints the line to put under
the route's ``auth_api_key.keys`` (its SHA-256, never the key).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import secrets
import sys

__all__ = ["add_commands", "run_command"]

COMMANDS = ("passwd", "apikey")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    passwd = sub.add_parser(
        "passwd",
        help="add or change a user of a Basic auth users file",
        description="Add a user to a Basic auth users file, or change its password "
        "(argon2 hash). Reads the password twice from the terminal, or once from "
        "standard input when it is not a terminal.",
    )
    passwd.add_argument("file", metavar="FILE", help="the users file (created if missing)")
    passwd.add_argument("user", metavar="USER", help="the user name (no ':')")
    passwd.add_argument("--delete", action="store_true", help="remove the user instead")
    apikey = sub.add_parser(
        "apikey",
        help="make an API key and print its SHA-256 for auth_api_key.keys",
        description="Print a new random API key and the configuration line that accepts it.",
    )
    apikey.add_argument("name", metavar="NAME", help="the name the key gives as identity")


def _fail(message: str) -> int:
    print(f"bastion: error: {message}", file=sys.stderr)
    return 1


def _read_password() -> str | None:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Again: ")
        if first != second:
            _fail("the passwords differ")
            return None
        return first
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def passwd(path: str, user: str, delete: bool) -> int:
    try:
        from argon2 import PasswordHasher
    except ImportError:
        return _fail("passwd needs the auth extra: pip install 'bastion[auth]'")
    from bastion.edge.auth.users_file import read_users, write_users

    if not user or ":" in user or any(c.isspace() for c in user):
        return _fail(f"a user name cannot be empty or hold ':' or spaces: {user!r}")
    try:
        users = read_users(path) if os.path.exists(path) else {}
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"cannot read {path}: {exc}")
    if delete:
        if user not in users:
            return _fail(f"no user {user!r} in {path}")
        del users[user]
    else:
        password = _read_password()
        if password is None:
            return 1
        if not password:
            return _fail("empty password")
        users[user] = PasswordHasher().hash(password)
    try:
        write_users(path, users)
    except OSError as exc:
        return _fail(f"cannot write {path}: {exc}")
    done = "removed" if delete else "set"
    print(f"{path}: {user} {done}", file=sys.stderr)
    return 0


def apikey(name: str) -> int:
    key = secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    print(f"key (give it to the client; it is not stored): {key}")
    print(f'[routes.auth_api_key.keys] line: "{name}" = "{digest}"')
    return 0


def run_command(ns: argparse.Namespace) -> int:
    if ns.command == "passwd":
        return passwd(ns.file, ns.user, ns.delete)
    return apikey(ns.name)
