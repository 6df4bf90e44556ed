#!/usr/bin/env python3
"""TLS benchmark: bastion against nginx, the same certificate, in the same run.

Both serve a fixed 1 KiB response over TLS (bastion: a ``return`` route; nginx:
``return 200``), one worker each, pinned to CPU 0; wrk drives them from CPU 1.

Workloads:

* ``keepalive``: 1 KiB responses over keep-alive TLS connections (the record layer);
* ``handshake``: one new TLS connection per request (``Connection: close``: a full
  handshake each time, as wrk does not resume sessions).

Both servers run during the whole bench and are measured in turns, ``--rounds`` times
each (the order alternating), so that a machine whose speed drifts weighs on both alike;
each server's median run is kept. Prints req/s and bastion/nginx ratios of the medians
(targets: keep-alive >= 0.8x, handshakes >= 0.5x) and writes
bench/results/tls-<UTC time>.json (every round's figure too). Not part of ``make test``.

    .venv/bin/python bench/tls.py                            # about 1 minute
    .venv/bin/python bench/tls.py --duration 3 --rounds 1    # a smoke check

nginx comes from ``scripts/system-deps.sh bench-static``; the certificate is made with
trustme (an ECDSA P-256 key, as most sites now get from Let's Encrypt).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BODY = "x" * 1023 + "\n"
TARGETS = {"keepalive": 0.8, "handshake": 0.5}
SERVER_CPU, CLIENT_CPU = "0", "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_tls(port: int, ca: str, timeout: float = 30.0) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                ctx.wrap_socket(raw, server_hostname="localhost") as sock,
            ):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                if sock.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered over TLS on port {port}")


def start_bastion(tmp: Path, port: int, cert: str, key: str) -> subprocess.Popen[bytes]:
    config = tmp / "bastion.toml"
    config.write_text(
        f'[server]\nbind = ["127.0.0.1:{port}"]\n[workers]\ncount = 1\n'
        f'[tls]\ncertfile = "{cert}"\nkeyfile = "{key}"\n'
        f'[[routes]]\npath = "/"\n[routes.return]\nbody = "{BODY[:-1]}\\n"\n'
        'content_type = "text/plain"\n'
    )
    cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "bastion", "serve", "-c", str(config)]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "bastion.log", "wb"), cwd=tmp
    )


def start_nginx(tmp: Path, port: int, cert: str, key: str) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        location / {{ default_type text/plain; return 200 "{BODY[:-1]}\\n"; }}
    }}
}}
"""
    )
    return subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, nginx, "-c", str(conf), "-p", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wrk(port: int, workload: str, duration: float, connections: int) -> dict[str, Any]:
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s"]
    if workload == "handshake":
        cmd += ["-H", "Connection: close"]
    cmd.append(f"https://localhost:{port}/")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    result: dict[str, Any] = {"rps": 0.0, "requests": 0, "errors": ""}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        result["requests"] = int(m.group(1))
    if m := re.search(r"Socket errors:.*", out):
        result["errors"] = m.group(0)
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        result["errors"] += f" non-2xx {m.group(1)}"
    return result


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measurements of each server, alternated (the median is kept)",
    )
    args = parser.parse_args()
    import trustme

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bastion-tls-bench-") as name:
        tmp = Path(name)
        ca = trustme.CA()
        issued = ca.issue_cert("localhost", "127.0.0.1")
        cert, key, ca_file = str(tmp / "cert.pem"), str(tmp / "key.pem"), str(tmp / "ca.pem")
        issued.cert_chain_pems[0].write_to_path(cert)
        issued.private_key_pem.write_to_path(key)
        ca.cert_pem.write_to_path(ca_file)
        # both servers up at once (the one not measured is idle), measured in turns:
        # a machine whose speed drifts during the run weighs on both alike
        servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        try:
            for server, start in (("bastion", start_bastion), ("nginx", start_nginx)):
                port = free_port()
                servers[server] = (port, start(tmp, port, cert, key))
                wait_tls(port, ca_file)
                wrk(port, "keepalive", 1, args.connections)  # warm up
            order = list(servers)
            for round_ in range(args.rounds):
                for workload in ("keepalive", "handshake"):
                    for server in order if round_ % 2 == 0 else order[::-1]:
                        port = servers[server][0]
                        r = wrk(port, workload, args.duration, args.connections)
                        runs.setdefault(workload, {}).setdefault(server, []).append(r)
                        print(f"{workload:10} {server:8} {r['rps']:10.0f} req/s  {r['errors']}")
        finally:
            for _, proc in servers.values():
                stop(proc)
    # each server's median run per workload
    results: dict[str, dict[str, Any]] = {
        w: {
            server: {
                **sorted(rs, key=lambda r: r["rps"])[len(rs) // 2],
                "rounds": [r["rps"] for r in rs],
            }
            for server, rs in by_server.items()
        }
        for w, by_server in runs.items()
    }
    ratios = {
        w: round(r["bastion"]["rps"] / r["nginx"]["rps"], 3) if r["nginx"]["rps"] else None
        for w, r in results.items()
    }
    print()
    for w, ratio in ratios.items():
        ok = ratio is not None and ratio >= TARGETS[w]
        print(f"{w:10} bastion/nginx {ratio}x (target >= {TARGETS[w]}x) {'ok' if ok else 'MISSED'}")
    nginx_version = subprocess.run(
        [shutil.which("nginx") or "/usr/sbin/nginx", "-v"], capture_output=True, text=True
    ).stderr.strip()
    record = {
        "bench": "tls",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "duration_s": args.duration,
            "connections": args.connections,
            "rounds": args.rounds,
            "server_cpu": SERVER_CPU,
            "client_cpu": CLIENT_CPU,
            "body_bytes": len(BODY),
            "certificate": "ECDSA P-256 (trustme)",
        },
        "versions": {
            "python": platform.python_version(),
            "openssl": ssl.OPENSSL_VERSION,
            "nginx": nginx_version,
        },
        "load_before": os.getloadavg(),
        "results": results,
        "ratios": ratios,
        "targets": TARGETS,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"tls-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
