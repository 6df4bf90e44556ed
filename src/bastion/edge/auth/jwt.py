"""Bearer JSON Web Tokens (RFC 7519), verified with PyJWT.

Keys come from one source: a shared secret (HS*), a PEM public key, a JWKS file or a
JWKS URL. A token is accepted only when its ``alg`` is one of ``algorithms``: ``none``
never is (it cannot be listed), and the configuration refuses HS* next to public keys,
so a token "signed" HMAC-style with a public key (algorithm confusion) is refused; a
JWKS key that names its ``alg`` accepts that algorithm only.

A JWKS URL is fetched at start-up and again when a token names a ``kid`` the set does
not hold, at most once per ``jwks_refresh_interval``; a failed fetch is logged and the
keys already known stay in use.

Verified tokens are remembered (the token itself is the key, up to ``cache_size``,
never past their ``exp``), so a client that sends the same token again costs one dict
lookup instead of a signature check. The cache is emptied when the key set changes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK
from jwt.types import Options

from bastion.clients.jwks import JwksFetcher, JwksFetchError
from bastion.config.auth_schema import JwtAuthConfig
from bastion.edge.auth.identity import Gate, refuse, usable_name
from bastion.edge.types import FilterResult, RouteMatch
from bastion.observe.logging import logger
from bastion.protocol.types import Exchange

__all__ = ["JwtFilter"]

_MAX_TOKEN = 16 * 1024


def bearer(value: bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` value, or None."""
    if value is None:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token or len(token) > _MAX_TOKEN:
        return None
    try:
        return token.strip().decode("ascii")
    except UnicodeDecodeError:
        return None


class _Unknown(Exception):
    """The token names a key the set does not hold."""


class JwtFilter:
    """A route's ``auth_jwt`` filter; a :class:`~bastion.edge.types.Lifecycle` (its
    JWKS client, when it has a URL)."""

    def __init__(self, cfg: JwtAuthConfig) -> None:
        self.cfg = cfg
        self.algorithms = list(cfg.algorithms)
        self.gate = Gate("jwt", cfg.identity_header)
        self.challenge = 'Bearer realm="bastion"'
        self.single: Any = None  # the secret or public key, when there is one
        #: kid -> (key, the algorithm the set names for it), from a key set
        self.keys: dict[str, tuple[Any, str | None]] = {}
        self.anonymous: list[tuple[Any, str | None]] = []  # keys of the set without a kid
        self.fetcher: JwksFetcher | None = None
        self.fetched_at = -1e18
        self.refreshing: asyncio.Task[None] | None = None
        self.cache: OrderedDict[str, tuple[str, dict[str, Any], float]] = OrderedDict()
        self.options: Options = {
            "require": list(cfg.require),
            # no audience configured: aud is not looked at (PyJWT would refuse any token
            # that has one)
            "verify_aud": bool(cfg.audience),
        }
        if cfg.secret_file:
            with open(cfg.secret_file, "rb") as f:
                self.single = f.read().strip()
        elif cfg.public_key_file:
            with open(cfg.public_key_file, "rb") as f:
                self.single = load_pem_public_key(f.read())
        elif cfg.jwks_file:
            with open(cfg.jwks_file, encoding="utf-8") as f:
                self._use_set(json.load(f))
        elif cfg.jwks_url:
            self.fetcher = JwksFetcher(cfg.jwks_url, cfg.jwks_timeout)

    # -- lifecycle ------------------------------------------------------------------
    async def startup(self) -> None:
        if self.fetcher is not None:
            await self.fetcher.start()
            await self._refresh()

    async def shutdown(self) -> None:
        if self.refreshing is not None:
            self.refreshing.cancel()
        if self.fetcher is not None:
            await self.fetcher.close()

    # -- keys -----------------------------------------------------------------------
    def _use_set(self, doc: dict[str, Any]) -> None:
        keys: dict[str, tuple[Any, str | None]] = {}
        anonymous: list[tuple[Any, str | None]] = []
        for data in doc.get("keys", ()):
            if not isinstance(data, dict) or data.get("kty") == "oct":
                continue  # a shared secret has no place in a published key set
            try:
                key = PyJWK(data).key
            except pyjwt.PyJWTError as exc:
                logger.warning("auth jwt: key %r of the set skipped: %s", data.get("kid"), exc)
                continue
            alg = data.get("alg")
            entry = (key, alg if isinstance(alg, str) else None)
            kid = data.get("kid")
            if isinstance(kid, str):
                keys[kid] = entry
            else:
                anonymous.append(entry)
        self.keys = keys
        self.anonymous = anonymous
        self.cache.clear()

    async def _refresh(self) -> None:
        """Fetch the key set (keeping the old one if that fails)."""
        assert self.fetcher is not None
        self.fetched_at = time.monotonic()
        try:
            doc = await self.fetcher.fetch()
            self._use_set(doc)
        except JwksFetchError as exc:
            logger.error(
                "auth jwt: cannot fetch the key set %s: %s (keeping %d keys)",
                self.fetcher.url,
                exc,
                len(self.keys) + len(self.anonymous),
            )
            return
        logger.info(
            "auth jwt: %d keys from %s", len(self.keys) + len(self.anonymous), self.fetcher.url
        )

    def _key_for(self, header: dict[str, Any]) -> Any:
        if self.single is not None:
            return self.single
        alg = header.get("alg")
        kid = header.get("kid")
        if isinstance(kid, str):
            entry = self.keys.get(kid)
            if entry is None:
                raise _Unknown(kid)
            candidates = [entry]
        elif len(self.anonymous) + len(self.keys) == 1:
            candidates = [*self.anonymous, *self.keys.values()]
        else:
            candidates = self.anonymous
        for key, named in candidates:
            if named is None or named == alg:
                return key
        raise pyjwt.InvalidKeyError("no key of the set fits the token's algorithm")

    # -- requests -------------------------------------------------------------------
    def __call__(self, exchange: Exchange, match: RouteMatch) -> FilterResult:
        token = bearer(exchange.head.header(b"authorization"))
        if token is None:
            refuse(exchange, "jwt", "no bearer token", challenge=self.challenge)
            return None
        hit = self.cache.get(token)
        if hit is not None:
            if hit[2] > time.time():
                return self.gate.admit(exchange, hit[0], {"claims": hit[1]})
            del self.cache[token]
        try:
            return self._verify(exchange, token)
        except _Unknown as exc:
            if self.fetcher is None:
                refuse(
                    exchange, "jwt", f"unknown key id {str(exc)[:64]!r}", challenge=self.challenge
                )
                return None
            return self._after_refresh(exchange, token)

    def _verify(self, exchange: Exchange, token: str) -> Exchange | None:
        cfg = self.cfg
        try:
            header = pyjwt.get_unverified_header(token)
            if header.get("alg") not in self.algorithms:
                raise pyjwt.InvalidAlgorithmError(
                    f"algorithm {str(header.get('alg'))[:16]!r} not allowed"
                )
            key = self._key_for(header)
            claims: dict[str, Any] = pyjwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=list(cfg.audience) or None,
                issuer=cfg.issuer or None,
                leeway=cfg.leeway,
                options=self.options,
            )
        except pyjwt.PyJWTError as exc:
            reason = _describe(exc)
            refuse(exchange, "jwt", reason, challenge=f'{self.challenge}, error="invalid_token"')
            return None
        except (TypeError, ValueError):
            # the token's (allowed) algorithm names another kind of key than the one it
            # selected (RS256 with an EC key): PyJWT fails to load the key, in no
            # PyJWTError; anyone can send such a token, so no traceback for it
            refuse(
                exchange,
                "jwt",
                "the key does not fit the token's algorithm",
                challenge=f'{self.challenge}, error="invalid_token"',
            )
            return None
        user = claims.get(cfg.user_claim)
        if not isinstance(user, str) or not user:
            refuse(exchange, "jwt", f"no {cfg.user_claim} claim", status=403)
            return None
        if not usable_name(user):
            # the name goes into WSGI REMOTE_USER, the access log and, on proxy routes,
            # a request header: a line break in it would start a header (or a request)
            # of the token holder's choosing
            refuse(exchange, "jwt", f"the {cfg.user_claim} claim is not a usable name", status=403)
            return None
        if cfg.cache_size:
            exp = claims.get("exp")
            if isinstance(exp, int | float):
                self.cache[token] = (user, claims, float(exp))
                while len(self.cache) > cfg.cache_size:
                    self.cache.popitem(last=False)
        return self.gate.admit(exchange, user, {"claims": claims})

    async def _after_refresh(self, exchange: Exchange, token: str) -> Exchange | None:
        """A token with a kid the set does not hold: fetch the set again (at most once
        per interval, one fetch for every request that waits on it), then decide."""
        due = time.monotonic() - self.fetched_at >= self.cfg.jwks_refresh_interval
        if self.refreshing is None and due:
            self.refreshing = asyncio.ensure_future(self._refresh())
            self.refreshing.add_done_callback(self._refreshed)
        if self.refreshing is not None:
            await asyncio.shield(self.refreshing)
        try:
            return self._verify(exchange, token)
        except _Unknown as exc:
            refuse(exchange, "jwt", f"unknown key id {str(exc)[:64]!r}", challenge=self.challenge)
            return None

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self.refreshing = None


def _describe(exc: Exception) -> str:
    """Why a token was refused, in words that hold no part of it."""
    if isinstance(exc, pyjwt.ExpiredSignatureError):
        return "expired"
    if isinstance(exc, pyjwt.ImmatureSignatureError):
        return "not yet valid (nbf)"
    if isinstance(exc, pyjwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, pyjwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(exc, pyjwt.MissingRequiredClaimError):
        return f"missing claim {exc.claim}"
    if isinstance(exc, pyjwt.InvalidAlgorithmError):
        return str(exc)
    if isinstance(exc, pyjwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(exc, pyjwt.DecodeError):
        return "malformed token"
    return type(exc).__name__
