"""auth_basic shares one argon2 check between requests with the same credentials, but
never one made against a users file that has changed since: a removed user or a changed
password is refused from the next request on, and nothing stale is cached."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from argon2 import PasswordHasher

from bastion.config.auth_schema import BasicAuthConfig
from bastion.edge.auth import basic
from bastion.edge.auth.basic import BasicFilter
from bastion.edge.types import RouteMatch
from tests.unit.fake_exchange import FakeExchange

MATCH = RouteMatch(0, {}, "/")  # type: ignore[arg-type]


def request(user: str, password: str) -> FakeExchange:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return FakeExchange(headers=[("authorization", f"Basic {token}")])


def rewrite(users: Path, text: str) -> None:
    users.write_text(text)
    later = time.time_ns() + 10**9  # (a new stamp even within the file system's tick)
    os.utime(users, ns=(later, later))


async def settle(result: Any) -> Any:
    return await result if asyncio.iscoroutine(result) else result


def test_a_check_under_way_is_not_shared_across_a_change_of_the_users_file(
    tmp_path: Path,
) -> None:
    users = tmp_path / "users"
    users.write_text(f"alice:{PasswordHasher().hash('pw')}\n")
    gate = BasicFilter(msgspec.convert({"users_file": str(users)}, BasicAuthConfig))

    async def main() -> None:
        await gate.startup()
        try:
            first = asyncio.ensure_future(settle(gate(request("alice", "pw"), MATCH)))
            await asyncio.sleep(0)  # its check is under way, against alice's hash
            rewrite(users, f"bob:{PasswordHasher().hash('x')}\n")  # alice removed
            gate.checked_at = 0.0  # (the file is looked at once a second)
            second = await settle(gate(request("alice", "pw"), MATCH))
            assert second is None  # refused: not admitted by the check begun before
            assert await first is None  # checked again against the file as it is now
            assert not gate.cache
            later = gate(request("alice", "pw"), MATCH)
            assert asyncio.iscoroutine(later)  # no cached pass: a check
            assert await later is None
        finally:
            await gate.shutdown()

    asyncio.run(main())


def test_the_same_credentials_at_once_share_one_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = tmp_path / "users"
    users.write_text(f"alice:{PasswordHasher().hash('pw')}\n")
    gate = BasicFilter(msgspec.convert({"users_file": str(users)}, BasicAuthConfig))
    checks: list[str] = []
    real = basic.verify

    def counted(digest: str | None, password: bytes) -> bool:
        checks.append("argon2")
        return real(digest, password)

    monkeypatch.setattr(basic, "verify", counted)

    async def main() -> None:
        await gate.startup()
        try:
            pending = [gate(request("alice", "pw"), MATCH) for _ in range(6)]
            results = await asyncio.gather(*(settle(p) for p in pending))
            assert checks == ["argon2"]
            assert all(r is not None and r.head.user == "alice" for r in results)
            assert not gate.checking and not gate.per_client
        finally:
            await gate.shutdown()

    asyncio.run(main())
