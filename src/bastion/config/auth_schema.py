"""The route tables of authentication: ``auth_basic``, ``auth_api_key``, ``auth_jwt`` and
``auth_forward`` (a route sets at most one; see docs/authentication.md).

Every method ends with an *identity* (a name and details) that reaches the app: WSGI
``REMOTE_USER`` and ``environ["bastion.auth"]``, ASGI
``scope["extensions"]["bastion.auth"]``, and the request header ``identity_header`` when
it is set (a copy of that header sent by the client is always removed first).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]

JwtAlgorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"
]


class _Table(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class BasicAuthConfig(_Table, frozen=True):
    """HTTP Basic authentication against a file of argon2 hashes (``bastion passwd``)."""

    users_file: str  # "user:$argon2id$..." lines, written by `bastion passwd FILE USER`
    realm: str = "bastion"  # shown by browsers in the login prompt
    identity_header: str = ""  # e.g. "X-Remote-User": the user name, to the app
    # successful checks remembered this long (a keyed hash of user and password), so a
    # client sending the same credentials does not cost an argon2 check per request
    cache_ttl: NonNegativeFloat = 60.0
    cache_size: NonNegativeInt = 1024  # entries per worker; 0 = no cache
    # argon2 checks at once per worker, each in a thread (each takes tens of ms and 64 MiB)
    max_concurrency: PositiveInt = 2
    # checks of different credentials one client address may have waiting or running at
    # once per worker; more get 429 (the same credentials sent at once share one check)
    max_checks_per_client: PositiveInt = 2


class ApiKeyAuthConfig(_Table, frozen=True):
    """API keys: name -> SHA-256 of the key (hex); the name becomes the identity."""

    keys: dict[str, str] = msgspec.field(default_factory=dict)
    header: str = "X-API-Key"  # "" = not read from a header
    query_param: str = ""  # e.g. "api_key"; "" = never read from the query
    identity_header: str = ""


class JwtAuthConfig(_Table, frozen=True):
    """Bearer JSON Web Tokens, checked with PyJWT."""

    algorithms: tuple[JwtAlgorithm, ...]  # required: only these are accepted
    secret_file: str = ""  # HS*: a file holding the shared secret
    public_key_file: str = ""  # RS*/ES*/PS*/EdDSA: a PEM public key
    jwks_file: str = ""  # a JSON Web Key Set in a file
    jwks_url: str = ""  # a JSON Web Key Set fetched over HTTP(S)
    jwks_refresh_interval: PositiveFloat = 300.0  # at most one fetch per interval
    jwks_timeout: PositiveFloat = 5.0
    issuer: str = ""  # "" = iss not checked
    audience: tuple[str, ...] = ()  # () = aud not checked; else one of these is required
    leeway: NonNegativeFloat = 30.0  # seconds of clock skew allowed on exp / nbf
    require: tuple[str, ...] = ("exp",)  # claims a token must have
    user_claim: str = "sub"  # the claim that names the identity
    identity_header: str = ""
    cache_size: NonNegativeInt = 1024  # verified tokens remembered (until their exp); 0 = none


class ForwardAuthConfig(_Table, frozen=True):
    """Ask an auth service (Traefik ForwardAuth, nginx auth_request)."""

    url: str  # required: "http://127.0.0.1:9000/check"
    method: str = "GET"
    # request headers sent on to the auth service, besides the X-Forwarded-* ones
    request_headers: tuple[str, ...] = ("authorization", "cookie")
    # response headers of a 2xx copied into the request (client copies removed first)
    response_headers: tuple[str, ...] = ()
    user_header: str = ""  # a response header naming the identity, e.g. "X-Auth-User"
    identity_header: str = ""
    timeout: PositiveFloat = 5.0
    timeout_status: Annotated[int, msgspec.Meta(ge=400, le=599)] = 503
    max_connections: PositiveInt = 100  # per worker
