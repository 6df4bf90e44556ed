"""HTTP Basic authentication (RFC 7617) against a users file of argon2 hashes.

argon2 is slow on purpose (tens of milliseconds, 64 MiB): each check runs in one of the
filter's own threads, ``max_concurrency`` at most per worker, never on the event loop.
An unknown user is checked against a dummy hash, so it costs the same time as a wrong
password and a client cannot tell users that exist from those that do not.

Successful checks are remembered for ``cache_ttl`` seconds, up to ``cache_size``
entries: the key is an HMAC (with a random key made per worker) of user and password,
so the cache holds no password and a different password for the same user is a miss.
A changed users file (checked at most once a second) empties the cache: a removed user
or a changed password takes effect within a second.

Requests with the same credentials that arrive while they are being checked (a browser
loading a page's resources at once) wait for that one check. A client address may have
at most ``max_checks_per_client`` checks of different credentials waiting or running;
more get 429 at once, so that one client guessing passwords over many connections cannot
fill the queue that everyone's first login waits in. A check nobody waits for any more
(its clients left) is dropped from the queue.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bastion.config.auth_schema import BasicAuthConfig
from bastion.edge.auth.identity import Gate, refuse
from bastion.edge.auth.users_file import read_users
from bastion.edge.types import FilterResult, RouteMatch
from bastion.observe.logging import logger
from bastion.protocol.client_group import client_group
from bastion.protocol.types import Exchange

__all__ = ["BasicFilter", "parse_basic"]

_HASHER = PasswordHasher()
_DUMMY = _HASHER.hash(secrets.token_urlsafe(16))


def parse_basic(value: bytes | None) -> tuple[str, bytes] | None:
    """(user, password) from an ``Authorization: Basic ...`` value, or None."""
    if value is None:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        raw = binascii.a2b_base64(token.strip(), strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def verify(digest: str | None, password: bytes) -> bool:
    """Whether ``password`` matches ``digest`` (None: an unknown user, checked against a
    dummy hash so that it takes as long, and then refused)."""
    try:
        ok = _HASHER.verify(_DUMMY if digest is None else digest, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return ok and digest is not None


class BasicFilter:
    """A route's ``auth_basic`` filter; a :class:`~bastion.edge.types.Lifecycle` (its
    threads)."""

    def __init__(self, cfg: BasicAuthConfig, ipv6_prefix: int = 64) -> None:
        self.cfg = cfg
        self.path = cfg.users_file
        self.gate = Gate("basic", cfg.identity_header)
        self.challenge = f'Basic realm="{cfg.realm}", charset="UTF-8"'
        self.users: dict[str, str] = {}
        self.stamp: tuple[int, int, int] | None = None
        self.checked_at = 0.0
        self._load()
        self.cache: OrderedDict[bytes, tuple[str, float]] = OrderedDict()
        self.cache_key = secrets.token_bytes(32)
        self.pool: ThreadPoolExecutor | None = None
        self.limit = cfg.max_concurrency
        self.ipv6_prefix = ipv6_prefix  # an IPv6 client counts by its /64 (client_group)
        #: checks waiting or running: cache key -> [the check, how many requests wait]
        self.checking: dict[bytes, list[Any]] = {}
        #: checks waiting or running per client address
        self.per_client: dict[str, int] = {}

    async def startup(self) -> None:
        self.pool = ThreadPoolExecutor(self.limit, thread_name_prefix="bastion-argon2")

    async def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    # -- the users file --------------------------------------------------------------
    def _load(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp == self.stamp:
                return
            self.users = read_users(self.path)
        except OSError as exc:
            logger.error(
                "auth basic: cannot read %s: %s (keeping the users read before)", self.path, exc
            )
            return
        if self.stamp is not None:
            logger.info("auth basic: %s changed, %d users", self.path, len(self.users))
            self.cache = OrderedDict()
        self.stamp = stamp

    def _fresh_users(self, now: float) -> None:
        if now - self.checked_at >= 1.0:
            self.checked_at = now
            self._load()

    # -- requests -------------------------------------------------------------------
    def __call__(self, exchange: Exchange, match: RouteMatch) -> FilterResult:
        creds = parse_basic(exchange.head.header(b"authorization"))
        if creds is None:
            refuse(exchange, "basic", "no credentials", challenge=self.challenge)
            return None
        user, password = creds
        now = time.monotonic()
        self._fresh_users(now)
        key = hmac.new(
            self.cache_key, user.encode("utf-8") + b"\0" + password, hashlib.sha256
        ).digest()
        hit = self.cache.get(key)
        if hit is not None:
            if hit[1] > now and hit[0] == user:
                return self.gate.admit(exchange, user)
            del self.cache[key]
        return self._check(exchange, user, password, key)

    def _start_check(
        self, exchange: Exchange, digest: str | None, password: bytes, key: bytes
    ) -> list[Any] | None:
        """The check of these credentials against ``digest``: the one under way, or a
        new one; None when the client has too many under way already."""
        entry = self.checking.get(key)
        # (one against another digest began before the users file changed: not joined)
        if entry is not None and not entry[0].cancelled() and entry[2] == digest:
            entry[1] += 1
            return entry
        client = exchange.head.client
        address = client_group(client[0], self.ipv6_prefix) if client is not None else ""
        count = self.per_client.get(address, 0)
        if count >= self.cfg.max_checks_per_client:
            return None
        self.per_client[address] = count + 1
        check = asyncio.get_running_loop().run_in_executor(self.pool, verify, digest, password)
        entry = [check, 1, digest]
        self.checking[key] = entry

        def done(_: object) -> None:
            if self.checking.get(key) is entry:
                del self.checking[key]
            left = self.per_client.get(address, 1) - 1
            if left > 0:
                self.per_client[address] = left
            else:
                self.per_client.pop(address, None)

        check.add_done_callback(done)
        return entry

    async def _check(
        self, exchange: Exchange, user: str, password: bytes, key: bytes
    ) -> Exchange | None:
        digest = self.users.get(user)
        entry = self._start_check(exchange, digest, password, key)
        if entry is None:
            refuse(
                exchange,
                "basic",
                f"too many password checks under way for this client (user {user!r})",
                status=429,
            )
            return None
        check = entry[0]
        try:
            # shielded: another request may wait for the same check
            ok = await asyncio.shield(check)
        finally:
            entry[1] -= 1
            if entry[1] == 0 and not check.done():
                check.cancel()  # nobody waits for it: dropped if still queued
        self._fresh_users(time.monotonic())
        if self.users.get(user) != digest:
            # the users file changed during the check (the user removed, the password
            # changed): check again against what it says now
            return await self._check(exchange, user, password, key)
        if not ok:
            why = "unknown user" if digest is None else "wrong password"
            refuse(exchange, "basic", f"{why} for {user!r}", challenge=self.challenge)
            return None
        cfg = self.cfg
        if cfg.cache_size and cfg.cache_ttl:
            cache = self.cache
            cache[key] = (user, time.monotonic() + cfg.cache_ttl)
            while len(cache) > cfg.cache_size:
                cache.popitem(last=False)
        return self.gate.admit(exchange, user)
