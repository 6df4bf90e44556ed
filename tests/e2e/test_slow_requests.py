"""log.slow_request_ms: slow responses are reported in the error log, fast ones not."""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from proc_tools import get, pid_of, wait_until
from server import BastionProcess, serve


@pytest.mark.parametrize("access", ["off", "json"])
def test_slow_requests_are_logged_with_their_time_and_worker(access: str) -> None:
    env = {"BASTION_LOG__SLOW_REQUEST_MS": "300"}
    with serve("proc_app:app", "--workers", "1", "--access-log", access, env=env) as srv:
        status, body = get(srv.url)
        assert status == 200
        worker = pid_of(body)
        assert get(srv.url, "/slow?s=0.5")[0] == 200
        wait_until(lambda: "slow request:" in srv.log, 10, "the slow-request line")
        m = re.search(
            r"WARNING slow request: GET (\S+) -> 200, ([\d.]+) ms, (\d+) bytes \(worker (\d+)\): "
            r"read 0\.0 ms, filters 0\.0 ms, app ([\d.]+) ms, send ([\d.]+) ms",
            srv.log,
        )
        assert m is not None, srv.log
        assert m.group(1) == "/slow?s=0.5"
        assert 450 <= float(m.group(2)) < 5000
        assert int(m.group(4)) == worker
        assert 450 <= float(m.group(5)) < 5000  # the app's wait, the rest is short
        assert float(m.group(6)) < 200
        assert srv.log.count("slow request:") == 1  # the fast one is not reported
        if access == "json":  # the access log still writes every line (from its thread)
            wait_until(lambda: '"path":"/slow"' in srv.log, 10, "the access-log line")
        assert srv.stop() == 0


STAGES_APP = """
import asyncio

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:  # the client sends its body late
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await asyncio.sleep(0.4)  # the app's own work
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % (len(body) * 2))]})
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await asyncio.sleep(0.3)  # streaming the rest slowly
    await send({"type": "http.response.body", "body": body})
"""


class _SlowAuth(BaseHTTPRequestHandler):
    """A forward-auth service that takes 0.3 s to say yes."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        time.sleep(0.3)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_slow_requests_name_their_route_and_the_time_of_each_stage(tmp_path: Path) -> None:
    auth = ThreadingHTTPServer(("127.0.0.1", 0), _SlowAuth)
    auth.daemon_threads = True
    threading.Thread(target=auth.serve_forever, daemon=True).start()
    (tmp_path / "stages_app.py").write_text(STAGES_APP)
    config = tmp_path / "bastion.toml"
    config.write_text(
        f'[app]\ntarget = "stages_app:app"\napp_dir = "{tmp_path}"\n'
        "[log]\nslow_request_ms = 300\n"
        '[[routes]]\npath = "/r/"\napp = "default"\n'
        f'[routes.auth_forward]\nurl = "http://127.0.0.1:{auth.server_address[1]}/check"\n'
    )
    args = ["serve", "-c", str(config), "--bind", "127.0.0.1:0", "--workers", "1"]
    try:
        with BastionProcess(args) as srv:
            with socket.create_connection(srv.host_port, timeout=10) as sock:
                sock.sendall(
                    b"POST /r/up HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                    b"Connection: close\r\n\r\n"
                )
                time.sleep(0.5)  # the body leaves half a second after the head
                sock.sendall(b"hello")
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hellohello")
            wait_until(lambda: "slow request:" in srv.log, 10, "the slow-request line")
            m = re.search(
                r"slow request: POST /r/up -> 200, ([\d.]+) ms, 10 bytes, route (\S+) "
                r"\(worker \d+\): read ([\d.]+) ms, filters ([\d.]+) ms, app ([\d.]+) ms, "
                r"send ([\d.]+) ms",
                srv.log,
            )
            assert m is not None, srv.log
            total, route = float(m.group(1)), m.group(2)
            read, filters, app, send = (float(m.group(i)) for i in range(3, 7))
            assert route == "/r/"
            assert 1100 <= total < 10_000
            assert 450 <= read < 5000  # head to the last body byte
            assert 250 <= filters < 5000  # the forward-auth call
            assert 350 <= app < 5000  # the rest of the body wait and the app's sleep
            assert 250 <= send < 5000  # the slow second half of the body
            # the stages that follow one another add up to the whole
            assert abs(filters + app + send - total) < 50
            assert srv.stop() == 0
    finally:
        auth.shutdown()
        auth.server_close()
