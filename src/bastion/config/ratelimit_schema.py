"""The tables of rate limiting: the top-level ``[rate_limit]`` (where the counters live
and what happens when they cannot be reached) and each route's ``[[routes.rate_limit]]``
(what is limited, how fast, per what key). See docs/rate-limiting.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]

RateLimitBackend = Literal["local", "redis"]
RateLimitOnError = Literal["allow", "deny"]
RateLimitHeaders = Literal["denied", "always"]
RateLimitKey = Literal["address", "header", "user", "api_key"]


class _Table(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class RateLimitConfig(_Table, frozen=True):
    """Where the counters of every route's limits live, and how failures are handled."""

    # local: in each worker's memory (N workers = N x the limit); redis: one count
    # shared by every worker of every host that uses the same Redis and key_prefix
    backend: RateLimitBackend = "local"
    # redis://[:password@]host:6379/0, rediss:// (TLS) or unix:///path/redis.sock?db=0
    redis_url: str = ""
    key_prefix: str = "bastion:rl:"  # every key bastion writes starts with it
    # one decision may wait this long for Redis (connect included): a round trip on a
    # LAN takes well under 1 ms, so 0.25 s passes GC pauses and a busy Redis but keeps a
    # dead or black-holed one from adding more than a quarter second to a request
    timeout: PositiveFloat = 0.25
    # when Redis cannot decide in time: allow (fail open: serve, unlimited) or deny
    # (fail closed: answer error_status); open by default, like Envoy's rate limit filter
    on_error: RateLimitOnError = "allow"
    error_status: Annotated[int, msgspec.Meta(ge=400, le=599)] = 503
    # connections to Redis per worker; a decision holds one for a round trip
    max_connections: PositiveInt = 16
    # a Redis failure is logged at most once per this many seconds per worker
    log_interval: PositiveFloat = 60.0
    # RateLimit / RateLimit-Policy headers on 429 answers only, or on every response
    headers: RateLimitHeaders = "denied"


class RouteRateLimitConfig(_Table, frozen=True):
    """One limit of a route (a route may have several; a request must pass them all)."""

    rate: str  # required: "100/s", "600/m", "5000/h", "20/10s" (COUNT/[N]s|m|h|d)
    # requests a client with a clean slate may send at once; 0 = the rate's count
    burst: NonNegativeInt = 0
    # what a client is: its address (the real one behind trusted proxies), a request
    # header's value, the authenticated user, or the API key's name
    key: RateLimitKey = "address"
    header: str = ""  # the header, with key = "header"
    # the policy name in the RateLimit headers, and the counter's identity: limits with
    # the same name share their counts (also across routes); "" = one per route and limit
    name: str = ""
