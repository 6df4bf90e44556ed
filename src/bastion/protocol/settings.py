"""The numbers an HTTP/1.1 connection needs, read once from the configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from bastion.protocol.forwarded import TrustedProxies

if TYPE_CHECKING:
    from bastion.config.schema import Config


class AccessLog(Protocol):
    """The access log's hook (bastion.observe.accesslog.AccessLog)."""

    def __call__(self, exchange: Any, status: int, body_bytes: int, duration: float) -> None:
        """A response is complete: ``body_bytes`` of body in ``duration`` seconds."""

    def session(self, exchange: Any, session: Any, duration: float) -> None:
        """The session that took ``exchange``'s connection over (after a 101) has ended,
        ``duration`` seconds after the request began."""


# Write buffer limits: pause the handler above HIGH, resume below LOW (asyncio uses 64k/16k).
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024


class ProtocolSettings:
    """The numbers an HTTP/1.1 connection needs, read once from the configuration."""

    __slots__ = (
        "access_log",
        "allow_path_semicolons",
        "body_timeout",
        "client_ipv6_prefix",
        "debug",
        "forwarded",
        "header_timeout",
        "keepalive_timeout",
        "max_body_size",
        "max_connections",
        "max_connections_per_client",
        "max_header_count",
        "max_header_size",
        "max_keepalive_requests",
        "max_pending_output",
        "max_request_line",
        "min_body_rate",
        "min_send_rate",
        "rate_grace",
        "send_timeout",
        "server_header",
        "stage_times",
    )

    def __init__(
        self,
        *,
        max_request_line: int = 8190,
        max_header_size: int = 32768,
        max_header_count: int = 100,
        max_body_size: int = 100 * 1024 * 1024,
        max_connections: int = 1000,
        max_keepalive_requests: int = 1000,
        header_timeout: float = 30.0,
        body_timeout: float = 60.0,
        keepalive_timeout: float = 5.0,
        send_timeout: float = 60.0,
        min_body_rate: float = 240.0,
        min_send_rate: float = 240.0,
        rate_grace: float = 5.0,
        max_pending_output: int = 128 * 1024 * 1024,
        max_connections_per_client: int = 256,
        client_ipv6_prefix: int = 64,
        allow_path_semicolons: bool = False,
        server_header: str = "bastion",
        debug: bool = False,
        access_log: AccessLog | None = None,
        forwarded: TrustedProxies | None = None,
        stage_times: bool = False,
    ) -> None:
        self.max_request_line = max_request_line
        self.max_header_size = max_header_size
        self.max_header_count = max_header_count
        self.max_body_size = max_body_size or (1 << 62)  # 0 = no limit, as in nginx
        self.max_connections = max_connections
        self.max_keepalive_requests = max_keepalive_requests
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.keepalive_timeout = keepalive_timeout
        self.send_timeout = send_timeout
        # bytes a second below which a body arriving or a response leaving, averaged
        # after the grace period, ends the connection (0: no minimum)
        self.min_body_rate = min_body_rate
        self.min_send_rate = min_send_rate
        self.rate_grace = rate_grace
        self.max_pending_output = max_pending_output or (1 << 62)  # 0 = no limit
        self.max_connections_per_client = max_connections_per_client  # 0 = no limit
        #: an IPv6 client is counted by its prefix of this many bits (client_group)
        self.client_ipv6_prefix = client_ipv6_prefix
        #: a ";" in a path is refused unless this (path_refusal)
        self.allow_path_semicolons = allow_path_semicolons
        self.server_header = (
            b"server: " + server_header.encode("latin-1") + b"\r\n" if server_header else b""
        )
        self.debug = debug
        self.access_log = access_log
        #: time each request's stages (reading, filters, app, sending) for the
        #: slow-request log; off, the exchange takes no timestamps of its own
        self.stage_times = stage_times
        #: trusted proxies whose forwarding headers give the client (None: trust none)
        self.forwarded = forwarded if forwarded is not None and forwarded.enabled else None

    @classmethod
    def from_config(cls, config: Config, access_log: AccessLog | None = None) -> ProtocolSettings:
        lim, tmo, srv = config.limits, config.timeouts, config.server
        return cls(
            max_request_line=lim.max_request_line,
            max_header_size=lim.max_header_size,
            max_header_count=lim.max_header_count,
            max_body_size=lim.max_body_size,
            max_connections=lim.max_connections,
            max_keepalive_requests=lim.max_keepalive_requests,
            header_timeout=tmo.header,
            body_timeout=tmo.body,
            keepalive_timeout=tmo.keepalive,
            send_timeout=tmo.send,
            min_body_rate=tmo.min_body_rate,
            min_send_rate=tmo.min_send_rate,
            rate_grace=tmo.rate_grace,
            max_pending_output=lim.max_pending_output,
            max_connections_per_client=lim.max_connections_per_client,
            client_ipv6_prefix=lim.client_ipv6_prefix,
            allow_path_semicolons=srv.allow_path_semicolons,
            server_header=config.server.server_header,
            debug=config.server.debug,
            access_log=access_log,
            forwarded=TrustedProxies(srv.forwarded_allow_ips, srv.forwarded_header),
            stage_times=config.log.slow_request_ms > 0,
        )
