"""The typed configuration tree.

Every section is a small frozen value object. The tree is built once (defaults, then the
TOML file, then ``BASTION_*`` environment variables, then command-line flags) and never
mutated afterwards. ``msgspec`` does the type checking: unknown keys and wrong types are
rejected with the key path, which :mod:`bastion.config.load` turns into a message that
names the file and line.

Each default says in a comment where it comes from.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from bastion.config.auth_schema import (
    ApiKeyAuthConfig,
    BasicAuthConfig,
    ForwardAuthConfig,
    JwtAuthConfig,
)
from bastion.config.ratelimit_schema import RateLimitConfig, RouteRateLimitConfig

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]

Interface = Literal["auto", "asgi", "wsgi"]
Lifespan = Literal["auto", "on", "off"]
WsgiMode = Literal["inline", "threads"]
ForwardedHeader = Literal["x-forwarded", "forwarded"]
AccessFormat = Literal["off", "combined", "json"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every section: immutable, unknown keys are an error."""


class AppConfig(_Section, frozen=True):
    """Which application to serve and how to call it.

    ``target`` is ``module:attribute`` or ``path/to/file.py:attribute``; with
    ``factory = true`` the attribute is called with no arguments to build the app.
    """

    target: str = ""
    interface: Interface = "auto"  # detected from the app's call signature
    factory: bool = False
    app_dir: str = "."  # put on sys.path first, like uvicorn --app-dir
    root_path: str = ""  # ASGI root_path / WSGI SCRIPT_NAME, for apps mounted below a prefix
    lifespan: Lifespan = "auto"  # uvicorn: auto (run it, ignore apps that do not support it)
    # WSGI only. inline: the app runs on the event loop thread (CPU-bound apps, most
    # throughput). threads: a pool of `threads` threads (I/O-bound apps, like gthread).
    wsgi_mode: WsgiMode = "inline"
    threads: PositiveInt = 8  # a gunicorn gthread deployment commonly runs 2-4 per core x workers


class ServerConfig(_Section, frozen=True):
    """Where to listen and how to present ourselves."""

    # "HOST:PORT", "[V6]:PORT", "unix:/path", "fd://N"; port 8000 like gunicorn and uvicorn
    bind: tuple[str, ...] = ("127.0.0.1:8000",)
    unix_socket_mode: Annotated[int, msgspec.Meta(ge=0, le=0o777)] = 0o660  # owner+group
    backlog: PositiveInt = 2048  # gunicorn --backlog default
    # false: one listening socket shared by all workers (see docs/process.md for why)
    reuse_port: bool = False
    server_header: str = "bastion"  # "" sends no Server header
    debug: bool = False  # tracebacks in 500 responses, only to clients on loopback
    # a ";" in a request's path is refused (400) unless this: Java servers drop ";..."
    # from a path segment, so /admin;x/ would be routed past /admin's rules (Spring
    # Security's StrictHttpFirewall refuses it by default too)
    allow_path_semicolons: bool = False
    # proxies whose X-Forwarded-* / Forwarded headers are believed: addresses, networks
    # ("10.0.0.0/8"), "unix" (peers on a Unix socket), "*" (anyone: dangerous); none by
    # default, like uvicorn/gunicorn --forwarded-allow-ips without 127.0.0.1
    forwarded_allow_ips: tuple[str, ...] = ()
    # which headers they set: X-Forwarded-For/-Proto/-Host (nginx, most balancers) or
    # RFC 7239 Forwarded; the other family is ignored
    forwarded_header: ForwardedHeader = "x-forwarded"
    # binds (as written in `bind`) whose connections start with a PROXY protocol header
    # (HAProxy v1/v2), or "*" for all; none by default
    proxy_protocol: tuple[str, ...] = ()
    # a file the supervisor writes its pid to once its sockets are open, and removes
    # at exit; "" writes none (gunicorn --pid, nginx pid)
    pidfile: str = ""
    # the user and group to run as once the sockets are open (so a root-started bastion
    # can bind ports below 1024 and then give root up); "" keeps the current ones
    # (gunicorn --user / --group, nginx user)
    user: str = ""
    group: str = ""


class WorkersConfig(_Section, frozen=True):
    """The supervisor and its workers."""

    count: NonNegativeInt = 0  # 0 = one per CPU core, like Granian / nginx worker_processes auto
    preload: bool = False  # gunicorn --preload default
    max_requests: NonNegativeInt = 0  # 0 = never recycle (gunicorn default)
    max_requests_jitter: NonNegativeInt = 0  # gunicorn default
    timeout: PositiveFloat = 30.0  # blocked event loop kills the worker; gunicorn --timeout 30
    graceful_timeout: NonNegativeFloat = 30.0  # gunicorn --graceful-timeout 30
    startup_timeout: PositiveFloat = 60.0  # time for import + lifespan start-up before giving up
    heartbeat_interval: PositiveFloat = 1.0  # how often a worker proves its loop is alive
    # after SIGTERM: keep serving (not ready) this long before stopping; 0 = stop at once
    drain_delay: NonNegativeFloat = 0.0
    # recycle a worker (gracefully, one at a time) whose memory passes this many bytes;
    # gunicorn has no such limit, uWSGI reload-on-rss / reload-on-as. 0 = no limit
    max_memory: NonNegativeInt = 0
    # what max_memory measures: "pss" (proportional set size: pages shared with other
    # workers count for a share, so preloaded code is not counted once per worker) or
    # "rss" (every resident page, as ps and uWSGI reload-on-rss show it)
    memory_metric: Literal["pss", "rss"] = "pss"
    # how often the supervisor reads each worker's memory (each worker with its own
    # random offset, so that the reads and any recycling are spread out)
    memory_check_interval: PositiveFloat = 10.0
    # Python 3.12 and 3.13: make the objects the supervisor holds before it starts the
    # workers (bastion's code, a preloaded app) immortal, so that workers never copy
    # their pages by counting references to them (process/immortal.py)
    immortalize: bool = True
    # development: restart the workers (a rolling reload) when a Python or .toml file
    # under reload_dirs changes (uvicorn --reload, gunicorn --reload); needs watchfiles
    reload: bool = False
    reload_dirs: tuple[str, ...] = ()  # none: app.app_dir, else the working directory


class LimitsConfig(_Section, frozen=True):
    """Sizes that bound what one client can make a worker hold."""

    # nginx large_client_header_buffers 8k; gunicorn limit_request_line 4094 (-> 414)
    max_request_line: PositiveInt = 8190
    # the whole header block; nginx 4 x 8k buffers = 32k, Go http.DefaultMaxHeaderBytes 1 MB
    max_header_size: PositiveInt = 32768
    max_header_count: PositiveInt = 100  # gunicorn limit_request_fields 100 (-> 431)
    # nginx client_max_body_size is 1m, too small for most apps; Django's upload handlers
    # stream larger files, so allow 100 MiB and let users lower it (-> 413); 0 = no limit
    max_body_size: NonNegativeInt = 100 * 1024 * 1024
    # per worker; nginx worker_connections 512, gunicorn worker_connections 1000
    max_connections: PositiveInt = 1000
    # per worker, from one client address (trusted proxies exempt): a quarter of
    # max_connections, so that no fewer than four addresses can fill a worker; browsers
    # open at most 6 per host. nginx limit_conn has no default (off). 0 = no limit
    max_connections_per_client: NonNegativeInt = 256
    # the IPv6 prefix that counts as one client for per-client limits (connections per
    # client, address-keyed rate limits, auth_basic's checks): a host is usually given a
    # /64 and can use any address of it; 128 = each address. nginx counts each address
    client_ipv6_prefix: Annotated[int, msgspec.Meta(ge=32, le=128)] = 64
    # max requests on one keep-alive connection; nginx keepalive_requests 1000
    max_keepalive_requests: NonNegativeInt = 1000
    # per worker: response bytes written but not yet taken by slow clients; above it the
    # slowest readers are dropped (a 1 MiB page to 1,000 stalled readers would hold 1 GiB).
    # No direct precedent: nginx bounds it per connection (output_buffers, send_timeout).
    # 0 = no limit
    max_pending_output: NonNegativeInt = 128 * 1024 * 1024


class TimeoutsConfig(_Section, frozen=True):
    """How long a connection may sit in each state, in seconds."""

    # time to receive the request line and headers; nginx client_header_timeout 60s,
    # Go servers are commonly set to ReadHeaderTimeout 10-30s. 408 then close.
    header: PositiveFloat = 30.0
    # idle gap allowed while receiving a body; nginx client_body_timeout 60s (-> 408)
    body: PositiveFloat = 60.0
    # idle keep-alive connection; uvicorn 5s, gunicorn 2s, nginx 75s
    keepalive: PositiveFloat = 5.0
    # a client that takes none of a response for this long is dropped; nginx send_timeout 60s
    send: PositiveFloat = 60.0
    # minimum data rates in bytes a second, averaged once the grace period has passed, for
    # a request body arriving and a response leaving (while bastion waits on the client);
    # ASP.NET Kestrel MinRequestBodyDataRate / MinResponseDataRate: 240 B/s, 5 s grace.
    # A slower client is answered 408 (body) or dropped (response). 0 = no minimum
    min_body_rate: NonNegativeFloat = 240.0
    min_send_rate: NonNegativeFloat = 240.0
    rate_grace: PositiveFloat = 5.0


class LogConfig(_Section, frozen=True):
    """Error log and access log."""

    level: LogLevel = "info"
    error_file: str = "-"  # "-" = stderr
    access: AccessFormat = "off"  # off by default, like gunicorn
    access_file: str = "-"  # "-" = stdout
    # a warning in the error log for each response that took longer than this many
    # milliseconds (from the request head to the last byte handed to the kernel); 0 = off
    slow_request_ms: NonNegativeFloat = 0.0


class WebSocketConfig(_Section, frozen=True):
    """Limits and timers of WebSocket sessions (ASGI apps)."""

    # the largest message, once reassembled and inflated; uvicorn ws_max_size 16 MiB
    # (websockets' own default is 1 MiB). Larger messages close the socket with 1009.
    max_message_size: PositiveInt = 16 * 1024 * 1024
    # unread messages held per socket before bastion stops reading it; uvicorn
    # ws_max_queue 32 (websockets max_queue 16)
    max_queue: PositiveInt = 32
    # a peer silent this long is pinged; uvicorn ws_ping_interval / websockets 20 s; 0 = never
    ping_interval: NonNegativeFloat = 20.0
    # no answer this long after the ping closes the socket (1011); uvicorn / websockets 20 s
    ping_timeout: PositiveFloat = 20.0
    # wait for the peer's close frame after ours, then drop it; websockets close_timeout 10 s
    close_timeout: PositiveFloat = 10.0
    # accept permessage-deflate (RFC 7692) offers; uvicorn ws_per_message_deflate true
    compression: bool = True


ClientAuth = Literal["none", "optional", "required"]


class CertificateConfig(_Section, frozen=True):
    """One certificate of ``[[tls.certificates]]``, served to the host names it names."""

    certfile: str  # PEM: the certificate, then its intermediates
    keyfile: str = ""  # PEM private key; "" = the key is in certfile
    keyfile_password_file: str = ""  # a file holding the key's passphrase (first line)
    # the SNI names it serves ("*.example.com" allowed); () = the DNS names of its SAN
    names: tuple[str, ...] = ()


class TLSConfig(_Section, frozen=True):
    """TLS on the listeners of ``server.bind`` (off unless a certificate is given)."""

    certfile: str = ""  # gunicorn --certfile / uvicorn --ssl-certfile; the default certificate
    keyfile: str = ""  # gunicorn --keyfile; "" = the key is in certfile
    keyfile_password_file: str = ""  # never a prompt: the passphrase comes from this file
    # more certificates, chosen by the name the client asks for (SNI)
    certificates: tuple[CertificateConfig, ...] = ()
    # client certificates: none, optional (verified when sent) or required (mutual TLS)
    client_auth: ClientAuth = "none"
    ca_certs: str = ""  # PEM CAs client certificates must chain to; gunicorn --ca-certs
    # Mozilla "intermediate" (TLS 1.2 suites; TLS 1.3 suites are always on)
    ciphers: str = (
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
        "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
    )
    min_version: Literal["1.2", "1.3"] = "1.2"  # Mozilla intermediate: TLS 1.2 and 1.3
    alpn: tuple[Literal["http/1.1"], ...] = ("http/1.1",)  # "h2" joins when bastion speaks it
    # a client must finish the handshake in this time; nginx ssl_handshake_timeout 60s,
    # asyncio 60s; 10s like a header deadline, as a handshake is a few round trips
    handshake_timeout: PositiveFloat = 10.0
    # TLS handshakes in progress per worker (0 = no cap), like HAProxy's maxsslconn;
    # 256 never binds normal traffic yet bounds a flood's share of a worker's CPU
    max_handshakes: NonNegativeInt = 256
    # seconds a connection over the cap waits for a slot before it is closed (0 = at once)
    handshake_wait: NonNegativeFloat = 2.0
    # plain-HTTP listeners that answer every request with a 308 to the https URL
    redirect_bind: tuple[str, ...] = ()


# --- the edge: routes, static files, compression, headers ------------------------------

MatchKind = Literal["prefix", "exact", "regex"]
RedirectStatus = Literal[301, 302, 303, 307, 308]
SecurityPreset = Literal["none", "basic", "strict"]
Algorithm = Literal["zstd", "br", "gzip"]

# Compressible types: what nginx's gzip_types and Caddy's encode commonly cover.
DEFAULT_COMPRESS_TYPES = (
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/manifest+json",
    "application/wasm",
    "image/svg+xml",
    "font/ttf",
    "font/otf",
)


class StaticConfig(_Section, frozen=True):
    """Serve files from a directory (a route's ``static`` handler)."""

    root: str  # the directory; relative paths are taken from the working directory
    index: tuple[str, ...] = ("index.html",)  # nginx: index index.html
    listing: bool = False  # nginx autoindex off
    dotfiles: bool = False  # hide .git, .env, ... (answer 404)
    follow_symlinks: bool = False  # symlinks that leave `root` are refused unless true
    cache_control: str = ""  # e.g. "public, max-age=31536000, immutable" for fingerprinted assets
    mime_types: dict[str, str] = msgspec.field(default_factory=dict)  # ".ext" -> type overrides
    not_found: str = ""  # a file under root served with status 404 (nginx error_page 404)
    precompressed: bool = True  # serve file.br / file.zst / file.gz when the client accepts them
    # files up to this size are kept in memory (invalidated when they change on disk);
    # larger ones go out with sendfile
    memory_max_file: NonNegativeInt = 256 * 1024
    memory_max_total: NonNegativeInt = 64 * 1024 * 1024  # per worker, for this route


class RedirectConfig(_Section, frozen=True):
    """Answer with a redirect. ``to`` may use ``{name}`` captures of a regex route and
    ``{path}`` (the path after a prefix route's prefix) and ``{query}``."""

    to: str
    status: RedirectStatus = 302  # nginx `return URL` default


class ReturnConfig(_Section, frozen=True):
    """Answer with a fixed response (maintenance pages, /robots.txt, health checks)."""

    status: Annotated[int, msgspec.Meta(ge=200, le=599)] = 200
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class CompressConfig(_Section, frozen=True):
    """On-the-fly compression of responses (off unless enabled, like nginx's gzip)."""

    enabled: bool = False
    algorithms: tuple[Algorithm, ...] = ("zstd", "br", "gzip")  # preference on equal q-values
    min_size: NonNegativeInt = 1024  # smaller bodies gain little; nginx gzip_min_length 20
    types: tuple[str, ...] = DEFAULT_COMPRESS_TYPES
    gzip_level: Annotated[int, msgspec.Meta(ge=1, le=9)] = 5  # nginx gzip_comp_level 1, Caddy 5
    brotli_quality: Annotated[int, msgspec.Meta(ge=0, le=11)] = 4  # fast, for on-the-fly use
    zstd_level: Annotated[int, msgspec.Meta(ge=1, le=19)] = 3  # zstd's own default


class HeadersConfig(_Section, frozen=True):
    """Response headers: a security preset plus free-form rules."""

    preset: SecurityPreset = "none"
    hsts_max_age: NonNegativeInt = 31536000  # one year, as hstspreload.org asks; strict only
    content_security_policy: str = ""  # sent when not empty
    add: dict[str, str] = msgspec.field(default_factory=dict)  # set (replacing the app's)
    remove: tuple[str, ...] = ()  # header names removed from responses


Balance = Literal["peak_ewma", "round_robin", "least_requests", "hash"]
FailStatuses = Literal["5xx", "gateway", "none"]


class UpstreamConfig(_Section, frozen=True):
    """A named group of servers a ``proxy`` route forwards to (``[upstreams.NAME]``).

    Each server is ``HOST:PORT``, ``[V6]:PORT``, ``unix:/path``, ``http://HOST[:PORT]`` or
    ``https://HOST[:PORT]``,
    optionally followed by ``weight=N``, ``max_conns=N`` and ``backup``, separated by
    spaces (nginx's ``server`` line): ``"10.0.0.5:8000 weight=2 max_conns=100"``.
    """

    servers: tuple[str, ...]
    # power of two choices over peak-EWMA latency (Finagle, Linkerd); round_robin is
    # smooth weighted round robin (nginx); least_requests: fewest in flight (Envoy)
    balance: Balance = "peak_ewma"
    connect_timeout: PositiveFloat = 5.0  # Envoy connect_timeout 5 s (nginx 60 s)
    # from the request sent to the first byte of the answer; nginx proxy_read_timeout 60 s
    first_byte_timeout: PositiveFloat = 60.0
    read_timeout: PositiveFloat = 60.0  # a gap inside the response; nginx proxy_read_timeout
    write_timeout: PositiveFloat = 60.0  # a stalled request body; nginx proxy_send_timeout
    # idle keep-alive connections kept per server per worker; nginx upstream keepalive 32
    keepalive: NonNegativeInt = 32
    # an idle pooled connection older than this is closed; nginx keepalive_timeout 60 s
    keepalive_timeout: PositiveFloat = 60.0
    # consecutive connect errors or 5xx that eject a server; Envoy consecutive_5xx 5
    max_fails: PositiveInt = 5
    # which answers count as failures besides errors and timeouts: every 5xx (Envoy
    # consecutive_5xx), 502/503/504 only (Envoy consecutive_gateway_failure), or none
    # (nginx max_fails)
    fail_statuses: FailStatuses = "5xx"
    # the first ejection's length, doubled on each ejection in a row up to 10x;
    # Envoy base_ejection_time 30 s, nginx fail_timeout 10 s
    fail_timeout: PositiveFloat = 10.0
    # at most this share of the group is ejected at once; Envoy max_ejection_percent 10,
    # raised because groups here are often two or three servers
    max_ejected_percent: Annotated[int, msgspec.Meta(ge=0, le=100)] = 50
    # further tries, on another server, of an idempotent request that got no answer;
    # nginx proxy_next_upstream_tries 0 (unbounded), Envoy num_retries 1
    retries: Annotated[int, msgspec.Meta(ge=0, le=5)] = 1
    # what balance = "hash" hashes: "client" (the address), "path", "header:NAME" or
    # "cookie:NAME"; a request without it goes to any server
    hash_on: str = "client"
    # sticky sessions: the cookie naming a client's server ("" = off; nginx sticky cookie)
    sticky_cookie: str = ""
    # the key of the cookie's keyed hash ("" = the upstream's name); set it so the
    # cookie cannot be matched to a server address by guessing
    sticky_secret: str = ""
    # active health checks: GET this path on every server ("" = off)
    health_path: str = ""
    health_interval: PositiveFloat = 5.0  # nginx plus interval 5 s
    health_timeout: PositiveFloat = 2.0  # connect and answer, per check
    # the statuses that pass; () = any 2xx or 3xx (nginx plus's default match)
    health_status: tuple[Annotated[int, msgspec.Meta(ge=100, le=599)], ...] = ()
    health_rise: PositiveInt = 2  # passes in a row that bring a server back; nginx plus 1
    health_fall: PositiveInt = 3  # failures in a row that take it out; nginx plus 1
    # each wait is the interval plus or minus this share of it, so workers spread out
    health_jitter: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.1
    # retries allowed on top of recent traffic: this share of the requests of the last
    # 10 s, plus retry_min_per_second; Linkerd retry budget 0.2 and 10/s
    retry_budget: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] = 0.2
    retry_min_per_second: Annotated[float, msgspec.Meta(ge=0.0)] = 10.0
    # seconds from the request to the response head across every try (0 = no limit);
    # Envoy's route timeout (15 s) counts the whole response
    timeout: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    # seconds between resolutions of server names (0 = resolve at each connection only)
    resolve_interval: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    # https:// servers: verify the certificate against the system's CAs or tls_ca_file
    # (nginx proxy_ssl_verify is off by default; Envoy, Caddy and Go verify)
    tls_verify: bool = True
    tls_ca_file: str = ""  # PEM CA certificates to trust instead of the system's
    # the name sent as SNI and checked in the certificate; "" = the server's host
    tls_server_name: str = ""
    tls_certfile: str = ""  # a client certificate (PEM) for upstreams that ask for one
    tls_keyfile: str = ""  # its key, when not in tls_certfile


class ProxyConfig(_Section, frozen=True):
    """Forward to an upstream (a route's ``proxy``; ``proxy = "NAME"`` is the short form)."""

    upstream: str
    # remove the route's prefix from the path sent upstream (and add it back to a
    # Location the upstream answers with); nginx proxy_pass with a URI part
    strip_prefix: bool = False
    # "" passes the client's Host on (nginx proxy_set_header Host $host); anything else
    # is sent instead
    host: str = ""
    # read a request body whole before choosing a server: up to this many bytes in
    # memory, the rest in a temporary file (0: stream it as it comes); nginx
    # proxy_request_buffering on, client_body_buffer_size 8k/16k
    buffer_request: NonNegativeInt = 0
    # an upgraded connection (WebSocket) with no byte either way for this long is
    # closed (0: never); HAProxy's "timeout tunnel" (its documented example: 1h) --
    # nginx's proxy_read_timeout of 60 s would cut WebSockets that ping less often
    tunnel_idle_timeout: NonNegativeFloat = 3600.0
    # the protocols a client may switch to through this route (its Upgrade value, one
    # protocol, any case); any other Upgrade is dropped and the request served as plain
    # HTTP. nginx forwards no Upgrade unless told to; h2c must never pass by default (it
    # would carry requests past the routes, access rules and authentication)
    upgrades: tuple[str, ...] = ("websocket",)
    # send the request id (the one sent upstream and logged) back to the client as
    # X-Request-ID, in place of any the upstream answered with; nginx add_header
    # X-Request-ID $request_id
    response_request_id: bool = False


class RouteConfig(_Section, frozen=True):
    """One route: what it matches, the one handler that answers, and response filters.

    Routes are tried in order; the first match wins; no match is a 404.
    """

    host: str = ""  # "" = any host; "example.com"; "*.example.com" (any subdomain)
    path: str = "/"  # with match = "prefix", "/static/" matches /static/ and below
    match: MatchKind = "prefix"
    methods: tuple[str, ...] = ()  # () = any method
    match_headers: dict[str, str] = msgspec.field(default_factory=dict)  # name -> exact value
    # the handler: exactly one of these
    app: str = ""  # name of an app under [apps] ("default" is the top-level [app])
    static: StaticConfig | None = None
    redirect: RedirectConfig | None = None
    respond: ReturnConfig | None = msgspec.field(default=None, name="return")
    proxy: ProxyConfig | None = None  # forward to an upstream ([upstreams.NAME])
    # response filters for this route (None: the top-level [compress] / [headers])
    compress: CompressConfig | None = None
    headers: HeadersConfig | None = None
    # access control by client address: rules "allow NET" / "deny NET" ("all" for any),
    # tried in order, the first match decides; a denied client gets 403; () = everyone
    access: tuple[str, ...] = ()
    # authentication (request filters): at most one of these; see docs/authentication.md
    auth_basic: BasicAuthConfig | None = None
    auth_api_key: ApiKeyAuthConfig | None = None
    auth_jwt: JwtAuthConfig | None = None
    auth_forward: ForwardAuthConfig | None = None
    # rate limits ([[routes.rate_limit]] tables), checked after access control and
    # authentication; a request must pass every one; see docs/rate-limiting.md
    rate_limit: tuple[RouteRateLimitConfig, ...] = ()


class AdminConfig(_Section, frozen=True):
    """The admin listener: health checks, metrics and the dashboard (docs/operations.md)."""

    bind: str = ""  # "" = no admin listener; "127.0.0.1:9000"
    token: str = ""  # a bearer token the admin listener requires ("" = none)
    token_file: str = ""  # or read the token from this file's first line
    allow_public: bool = False  # listen on an address that is not loopback


class ProcessConfig(_Section, frozen=True):
    """A ``[[process]]`` table: a program bastion runs beside its workers (a Celery
    worker, a scheduler, a renderer), restarts when it dies and stops on shutdown."""

    name: str  # for the log: each line of its output is logged as "[name] line"
    # the program and its arguments: a list, or one string split like a shell would
    # (no shell runs: no pipes, globs or variables)
    command: str | tuple[str, ...]
    env: dict[str, str] = msgspec.field(default_factory=dict)  # added to bastion's own
    cwd: str = ""  # "" = bastion's working directory
    # restart it when it ends: "always" (supervisord autorestart=true), "on-failure"
    # (only after a non-zero status or a signal), "never"
    restart: Literal["always", "on-failure", "never"] = "always"
    # the first restart waits backoff_min seconds, each quick one after it twice as long,
    # up to backoff_max; a run longer than backoff_max starts over (systemd RestartSec)
    backoff_min: PositiveFloat = 1.0
    backoff_max: PositiveFloat = 60.0
    stop_signal: str = "SIGTERM"  # what asks it to stop (Celery: SIGTERM is a warm stop)
    stop_timeout: NonNegativeFloat = 10.0  # then SIGKILL (supervisord stopwaitsecs 10)


class Config(_Section, frozen=True):
    """The whole configuration tree. Build it with :func:`bastion.config.load.load_config`."""

    app: AppConfig = msgspec.field(default_factory=AppConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    workers: WorkersConfig = msgspec.field(default_factory=WorkersConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    timeouts: TimeoutsConfig = msgspec.field(default_factory=TimeoutsConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    websocket: WebSocketConfig = msgspec.field(default_factory=WebSocketConfig)
    tls: TLSConfig = msgspec.field(default_factory=TLSConfig)
    # more apps, by name, for routes to mount ([app] is the one named "default")
    apps: dict[str, AppConfig] = msgspec.field(default_factory=dict)
    routes: tuple[RouteConfig, ...] = ()  # none: every request goes to the default app
    # groups of servers for proxy routes, by name
    upstreams: dict[str, UpstreamConfig] = msgspec.field(default_factory=dict)
    compress: CompressConfig = msgspec.field(default_factory=CompressConfig)
    headers: HeadersConfig = msgspec.field(default_factory=HeadersConfig)
    # where the counters of the routes' rate limits live (see docs/rate-limiting.md)
    rate_limit: RateLimitConfig = msgspec.field(default_factory=RateLimitConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    # programs run beside the workers, started in this order and stopped in reverse
    process: tuple[ProcessConfig, ...] = ()
