"""The caches of the authentication filters: a hit skips the slow check (no coroutine,
no argon2, no signature check); another password, a changed users file or an expired
token is a miss."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path

import jwt
import msgspec
from argon2 import PasswordHasher

from bastion.config.auth_schema import BasicAuthConfig, JwtAuthConfig
from bastion.edge.auth.basic import BasicFilter
from bastion.edge.auth.jwt import JwtFilter
from bastion.edge.types import RouteMatch
from bastion.edge.wrap import ExchangeWithHead

from .fake_exchange import FakeExchange

MATCH = RouteMatch(0, {}, "/")


def basic(user: str, password: str) -> FakeExchange:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return FakeExchange(headers=[("authorization", f"Basic {token}")])


def test_basic_cache_hit_is_synchronous_and_keyed_by_password(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(f"alice:{PasswordHasher().hash('pw')}\n")
    f = BasicFilter(msgspec.convert({"users_file": str(users)}, BasicAuthConfig))

    async def go() -> None:
        first = f(basic("alice", "pw"), MATCH)
        assert asyncio.iscoroutine(first)
        result = await first
        assert isinstance(result, ExchangeWithHead) and result.head.user == "alice"
        hit = f(basic("alice", "pw"), MATCH)
        assert not asyncio.iscoroutine(hit)  # from the cache: no argon2
        assert isinstance(hit, ExchangeWithHead) and hit.head.user == "alice"
        wrong = f(basic("alice", "other"), MATCH)
        assert asyncio.iscoroutine(wrong)
        ex = basic("alice", "other")
        coro = f(ex, MATCH)
        assert asyncio.iscoroutine(coro)
        assert await coro is None and ex.status == 401
        wrong.close()
        # a changed users file empties the cache
        users.write_text(f"alice:{PasswordHasher().hash('new')}\n")
        os.utime(users, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        f.checked_at = 0.0
        again = f(basic("alice", "pw"), MATCH)
        assert asyncio.iscoroutine(again)
        ex = basic("alice", "pw")
        coro = f(ex, MATCH)
        assert asyncio.iscoroutine(coro)
        assert await coro is None and ex.status == 401
        again.close()

    asyncio.run(go())


def test_jwt_cache_until_exp(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_bytes(b"x" * 40)
    f = JwtFilter(
        msgspec.convert(
            {"algorithms": ["HS256"], "secret_file": str(secret), "leeway": 0}, JwtAuthConfig
        )
    )
    token = jwt.encode({"sub": "dave", "exp": int(time.time()) + 60}, b"x" * 40, algorithm="HS256")
    ex = FakeExchange(headers=[("authorization", f"Bearer {token}")])
    assert isinstance(f(ex, MATCH), ExchangeWithHead)
    assert token in f.cache
    # an entry past its time is dropped and the token checked again (still valid here)
    user, claims, _ = f.cache[token]
    f.cache[token] = (user, claims, time.time() - 1)
    assert isinstance(f(ex, MATCH), ExchangeWithHead)
    assert f.cache[token][2] > time.time()
    claims_exp = {"sub": "dave", "exp": int(time.time()) - 5}
    stale = jwt.encode(claims_exp, b"x" * 40, algorithm="HS256")
    f.cache[stale] = ("dave", claims_exp, time.time() + 60)  # a poisoned entry is served...
    ex = FakeExchange(headers=[("authorization", f"Bearer {stale}")])
    assert isinstance(f(ex, MATCH), ExchangeWithHead)
    f.cache[stale] = ("dave", claims_exp, float(claims_exp["exp"]))  # ...only until its exp
    ex = FakeExchange(headers=[("authorization", f"Bearer {stale}")])
    assert f(ex, MATCH) is None and ex.status == 401
