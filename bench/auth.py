"""Cost of authentication per request (not a test): µs per request through each
authentication filter, with and without its cache.

Each filter is called in process, on a uvloop loop, with an in-memory exchange (the
one the unit tests use), the way the pipeline calls it; the time includes handing the
identity on (a new request head). Basic without its cache runs argon2 (argon2-cffi's
defaults) in the filter's thread; with it, one HMAC and a dict lookup. JWT (ES256)
without its cache parses and verifies the token with PyJWT; with it, a dict lookup.

    .venv/bin/python bench/auth.py [--slow N] [--fast N]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import msgspec
import uvloop
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bastion.config.auth_schema import ApiKeyAuthConfig, BasicAuthConfig, JwtAuthConfig
from bastion.edge.auth.api_key import ApiKeyFilter
from bastion.edge.auth.basic import BasicFilter
from bastion.edge.auth.jwt import JwtFilter
from bastion.edge.types import RouteMatch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
from fake_exchange import FakeExchange

MATCH = RouteMatch(0, {}, "/")


async def per_request(filt: Callable[..., Any], headers: list[tuple[str, str]], n: int) -> float:
    """µs per request, the filter's answer awaited when it is a coroutine."""
    exchanges = [FakeExchange("GET", "/", headers) for _ in range(n)]
    start = time.perf_counter()
    for ex in exchanges:
        result = filt(ex, MATCH)
        if asyncio.iscoroutine(result):
            result = await result
        assert result is not None and result is not ex, "refused"
    return (time.perf_counter() - start) / n * 1e6


async def run(args: argparse.Namespace, tmp: Path) -> list[tuple[str, float]]:
    rows: list[tuple[str, float]] = []
    users = tmp / "users"
    users.write_text(f"alice:{PasswordHasher().hash('correct horse')}\n")
    creds = base64.b64encode(b"alice:correct horse").decode()
    basic_headers = [("authorization", f"Basic {creds}")]
    for label, size, n in (
        ("basic, no cache (argon2)", 0, args.slow),
        ("basic, cached", 1024, args.fast),
    ):
        cfg = msgspec.convert({"users_file": str(users), "cache_size": size}, BasicAuthConfig)
        f = BasicFilter(cfg)
        await f.startup()
        await per_request(f, basic_headers, 1)  # warm (and fill the cache)
        rows.append((label, await per_request(f, basic_headers, n)))
        await f.shutdown()

    key = "k" * 43
    api = ApiKeyFilter(
        msgspec.convert(
            {"keys": {"ci": hashlib.sha256(key.encode()).hexdigest()}}, ApiKeyAuthConfig
        )
    )
    rows.append(("api key (header)", await per_request(api, [("x-api-key", key)], args.fast)))

    private = ec.generate_private_key(ec.SECP256R1())
    pem = tmp / "es.pem"
    pem.write_bytes(
        private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    token = jwt.encode({"sub": "dave", "exp": int(time.time()) + 3600}, private, algorithm="ES256")
    bearer = [("authorization", f"Bearer {token}")]
    for label, size, n in (
        ("jwt ES256, no cache", 0, args.slow * 10),
        ("jwt ES256, cached", 1024, args.fast),
    ):
        cfg = msgspec.convert(
            {"algorithms": ["ES256"], "public_key_file": str(pem), "cache_size": size},
            JwtAuthConfig,
        )
        jf = JwtFilter(cfg)
        await per_request(jf, bearer, 1)
        rows.append((label, await per_request(jf, bearer, n)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--slow", type=int, default=20, help="requests for the uncached argon2 case")
    ap.add_argument("--fast", type=int, default=20000, help="requests for the cached cases")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = uvloop.run(run(args, Path(tmp)))
    print(f"{'filter':<28} {'µs/request':>12}")
    for label, us in rows:
        print(f"{label:<28} {us:>12.1f}")


if __name__ == "__main__":
    main()
