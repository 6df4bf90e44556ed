"""Trailer fields through the reverse proxy: a chunked upstream response's trailers
reach an HTTP/1.1 client that sent ``TE: trailers``, minus the fields that must never
be trailers; without ``TE: trailers`` they are dropped and the body is intact."""

from __future__ import annotations

import socket
from pathlib import Path

from server import BastionProcess
from test_proxy import proxy, raw
from upstream_servers import RawServer, Request, response

CHUNKED_WITH_TRAILERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
    b"Trailer: grpc-status, x-digest\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n"
    b"grpc-status: 0\r\nx-digest: sha-256=abc\r\ncontent-type: text/html\r\n"
    b"keep-alive: timeout=1\r\nset-cookie: a=b\r\n\r\n"
)


def trailers_handler(req: Request) -> bytes:
    return CHUNKED_WITH_TRAILERS


def exchange(port: tuple[str, int], request: bytes) -> bytes:
    """Send ``request``, read one chunked response to its end (the last chunk's blank
    line after the trailers)."""
    with socket.create_connection(port, timeout=5) as s:
        s.sendall(request)
        out = b""
        while not (out.find(b"\r\n0\r\n") >= 0 and out.endswith(b"\r\n\r\n")):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def parse_chunked(raw: bytes, log: str = "") -> tuple[bytes, bytes, dict[bytes, bytes]]:
    assert raw.find(b"\r\n0\r\n") >= 0, (raw, log)
    head, _, rest = raw.partition(b"\r\n\r\n")
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2 :]
    trailers: dict[bytes, bytes] = {}
    for line in rest.split(b"\r\n"):
        if not line:
            break
        name, _, value = line.partition(b":")
        trailers[name.strip().lower()] = value.strip()
    return head, body, trailers


def test_response_trailers_reach_a_client_that_takes_them(tmp_path: Path) -> None:
    with RawServer(trailers_handler) as up, proxy(tmp_path, [up.address]) as p:
        out = exchange(p.host_port, b"GET /t HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
        head, body, trailers = parse_chunked(out, p.log)
        assert head.lower().find(b"transfer-encoding: chunked") >= 0
        assert body == b"hello world"
        assert trailers == {b"grpc-status": b"0", b"x-digest": b"sha-256=abc"}
        # the upstream was told the client takes trailers
        assert up.requests[0].all("te") == ["trailers"]


def test_trailers_are_dropped_for_a_client_that_did_not_ask(tmp_path: Path) -> None:
    with RawServer(trailers_handler) as up, proxy(tmp_path, [up.address]) as p:
        out = exchange(p.host_port, b"GET /t HTTP/1.1\r\nHost: x\r\nTE: gzip\r\n\r\n")
        head, body, trailers = parse_chunked(out)
        assert body == b"hello world"
        assert trailers == {}
        assert up.requests[0].all("te") == []


def test_request_trailers_are_passed_upstream(tmp_path: Path) -> None:
    def handler(req: Request) -> bytes:
        return response(200, req.body)

    with RawServer(handler) as up, proxy(tmp_path, [up.address]) as p:
        out = raw(
            p,
            b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Trailer: x-checksum\r\nConnection: close\r\n\r\n"
            b"5\r\nhello\r\n0\r\nx-checksum: 1234\r\nHost: evil\r\nConnection: x\r\n\r\n",
        )
        assert out.startswith(b"HTTP/1.1 200 "), out
        assert out.endswith(b"hello")
        req = up.requests[0]
        assert req.body == b"hello"
        assert req.header("transfer-encoding") == "chunked"
        # the field that may be a trailer passes, routing and hop-by-hop ones do not
        assert req.trailers == [("x-checksum", "1234")]


def test_trailer_fields_named_by_connection_are_removed(tmp_path: Path) -> None:
    def handler(req: Request) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\n"
            b"Transfer-Encoding: chunked\r\nTrailer: x-hop, x-digest, x-link\r\n\r\n"
            b"2\r\nhi\r\n0\r\n"
            b"x-hop: secret\r\nx-digest: abc\r\nconnection: x-link\r\nx-link: local\r\n\r\n"
        )

    with RawServer(handler) as up, proxy(tmp_path, [up.address]) as p:
        out = exchange(p.host_port, b"GET /t HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
        head, body, trailers = parse_chunked(out, p.log)
        assert body == b"hi"
        # named by the head's Connection, or by one in the trailer section: hop-by-hop
        assert trailers == {b"x-digest": b"abc"}
        assert len(up.requests) == 1


def test_request_trailers_cannot_forge_what_forward_auth_sets(tmp_path: Path) -> None:
    """On an anonymous pass (the auth service names no user) the head has no identity
    header; a trailer of that name, or of a header the auth service's answer supplies,
    is dropped all the same, in any spelling."""

    def auth(req: Request) -> bytes:
        return response(200, b"", [("X-Auth-Groups", "staff")])

    def echo(req: Request) -> bytes:
        return response(200, req.body)

    with RawServer(auth) as auth_up, RawServer(echo) as up:
        config = tmp_path / "fwd.toml"
        config.write_text(
            f'[upstreams.back]\nservers = ["{up.address}"]\n\n'
            '[[routes]]\npath = "/"\nproxy = { upstream = "back" }\n'
            f'[routes.auth_forward]\nurl = "http://{auth_up.address}/check"\n'
            'response_headers = ["X-Auth-Groups"]\nidentity_header = "X-Remote-User"\n'
        )
        with BastionProcess(
            ["serve", "-c", str(config), "--bind", "127.0.0.1:0", "--workers", "1"]
        ) as p:
            out = raw(
                p,
                b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Trailer: x-remote-user\r\nConnection: close\r\n\r\n"
                b"5\r\nhello\r\n0\r\nx-remote-user: admin\r\nX_Remote_User: admin\r\n"
                b"x-auth-groups: admins\r\nX_Auth_Groups: admins\r\nx-checksum: 1234\r\n\r\n",
            )
            assert out.startswith(b"HTTP/1.1 200 "), (out, p.log)
            req = up.requests[0]
            assert req.body == b"hello"
            assert req.all("x-auth-groups") == ["staff"]
            assert req.trailers == [("x-checksum", "1234")]
