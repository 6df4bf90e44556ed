"""The request id through the proxy: the id sent upstream is the one the access log
shows, and with ``response_request_id`` the client gets it back (errors included)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from server import BastionProcess
from test_proxy import free_port, proxy, raw
from upstream_servers import RawServer, Request, response

LOG = '[log]\naccess = "json"'
BACK = ", response_request_id = true"
UPGRADES = ', upgrades = ["echo"]'


def upstream_id(req: Request) -> bytes:
    # an upstream that answers with an id of its own
    return response(200, (req.header("x-request-id") or "").encode(), [("X-Request-ID", "up")])


def logged_id(proc: BastionProcess, path: str) -> str:
    line = proc.wait_for_log(r'\{"time".*"path":"' + path + r'".*\}').group(0)
    return str(json.loads(line)["request_id"])


def test_the_request_id_goes_back_to_the_client(tmp_path: Path) -> None:
    with RawServer(upstream_id) as up, proxy(tmp_path, [up.address], route=BACK, top=LOG) as p:
        r = httpx.get(p.url + "/given", headers={"X-Request-ID": "req-7"})
        assert r.status_code == 200
        assert r.headers.get_list("x-request-id") == ["req-7"]  # the upstream's replaced
        assert r.text == "req-7"
        assert logged_id(p, "/given") == "req-7"

        r = httpx.get(p.url + "/made")
        made = r.headers["x-request-id"]
        assert r.headers.get_list("x-request-id") == [made] and made != "up"
        assert r.text == made  # the id sent upstream...
        assert logged_id(p, "/made") == made  # ...and logged

        # an id unfit to log (too long) is replaced, upstream as in the log
        r = httpx.get(p.url + "/long", headers={"X-Request-ID": "x" * 300})
        made = r.headers["x-request-id"]
        assert made != "x" * 300 and r.text == made
        assert logged_id(p, "/long") == made
        assert up.requests[-1].all("x-request-id") == [made]


def test_an_error_the_proxy_makes_carries_the_request_id(tmp_path: Path) -> None:
    with proxy(tmp_path, [f"127.0.0.1:{free_port()}"], route=BACK) as p:
        r = httpx.get(p.url + "/", headers={"X-Request-ID": "req-9"})
        assert r.status_code in (502, 503)
        assert r.headers["x-request-id"] == "req-9"


def test_without_the_option_the_response_is_the_upstreams(tmp_path: Path) -> None:
    with RawServer(upstream_id) as up, proxy(tmp_path, [up.address]) as p:
        r = httpx.get(p.url + "/", headers={"X-Request-ID": "req-7"})
        assert r.headers.get_list("x-request-id") == ["up"]
        assert up.requests[0].all("x-request-id") == ["req-7"]


def test_informational_and_switching_heads_carry_the_request_id_too(tmp_path: Path) -> None:
    def heads(req: Request) -> bytes:
        if req.target == "/switch":
            return (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                b"Connection: Upgrade\r\nX-Request-ID: up\r\n\r\n"
            )
        hints = (
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nX-Request-ID: up\r\n\r\n"
        )
        return hints + response(200, b"final", [("X-Request-ID", "up")])

    with RawServer(heads) as up, proxy(tmp_path, [up.address], route=BACK + UPGRADES) as p:
        out = raw(
            p, b"GET /hints HTTP/1.1\r\nHost: x\r\nX-Request-ID: req-3\r\nConnection: close\r\n\r\n"
        )
        hints, _, final = out.partition(b"\r\n\r\n")
        assert hints.startswith(b"HTTP/1.1 103 "), out[:200]
        assert hints.lower().count(b"x-request-id: req-3") == 1, hints
        assert b": up\r\n" not in hints.lower()
        assert final.startswith(b"HTTP/1.1 200 ") and b"x-request-id: req-3" in final.lower()

        out = raw(
            p,
            b"GET /switch HTTP/1.1\r\nHost: x\r\nX-Request-ID: req-4\r\n"
            b"Connection: Upgrade\r\nUpgrade: echo\r\n\r\n",
            timeout=2.0,
        )
        head = out.partition(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 101 "), out[:200]
        assert head.count(b"x-request-id: req-4") == 1 and b": up\r\n" not in head + b"\r\n"
