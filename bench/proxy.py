#!/usr/bin/env python3
"""Reverse-proxy benchmark: bastion's ``proxy`` route against nginx's ``proxy_pass``.

Both proxies forward to the same fixed backend (an nginx answering ``200 ok`` and
serving one large file) through keep-alive upstream connections, one worker each,
pinned to CPU 0; the backend and wrk run on CPU 1. For each proxy: wrk's req/s and p99
for small GETs, the proxy worker's CPU time per request (utime + stime from
/proc/PID/stat over the measured run), and the throughput of one large download through
it (curl). Both proxies run during the whole bench and the small GETs are measured in
turns, ``--rounds`` times each with the order alternating, so that a machine whose speed
drifts weighs on both alike; each proxy's median round is kept (every round is in the
file). Writes bench/results/proxy-<UTC time>.json. A short run:

    .venv/bin/python bench/proxy.py --rounds 1       # 5 s per proxy
    .venv/bin/python bench/proxy.py --seconds 10 --download-mib 1024

Needs nginx and wrk (scripts/system-deps.sh bench-static).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness.measure import parse_wrk
from harness.servers import CLIENT_CPU, HOST, RESULTS, ROOT, SERVER_CPU, free_port

PY = Path(os.environ.get("BENCH_PYTHON", ROOT / ".venv" / "bin" / "python"))
TICKS = os.sysconf("SC_CLK_TCK")


def nginx_binary() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(found, os.X_OK):
        raise SystemExit("nginx is not installed (scripts/system-deps.sh bench-static)")
    return found


def nginx_conf(workdir: Path, body: str) -> Path:
    temp = "\n".join(
        f"    {k}_temp_path {workdir / k};"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    path = workdir / "nginx.conf"
    path.write_text(
        f"worker_processes 1;\ndaemon off;\npid {workdir / 'nginx.pid'};\nerror_log stderr warn;\n"
        f"events {{ worker_connections 4096; }}\nhttp {{\n    access_log off;\n{temp}\n{body}\n}}\n"
    )
    return path


def start(cmd: list[str], cpu: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", str(cpu), *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


def wait_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                r.read()
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, 9)


def small_gets(url: str, worker: int, args: argparse.Namespace) -> dict[str, Any]:
    """wrk's figures for small GETs, with the proxy worker's CPU time per request."""
    wrk = ["taskset", "-c", str(CLIENT_CPU), "wrk", "-t1", f"-c{args.connections}"]
    subprocess.run([*wrk, "-d1s", url + "/small"], capture_output=True, check=True)  # warm-up
    cpu0 = cpu_seconds(worker)
    out = subprocess.run(
        [*wrk, f"-d{args.seconds}s", "--latency", url + "/small"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = cpu_seconds(worker) - cpu0
    result = parse_wrk(out)
    result["cpu_us_per_request"] = round(cpu / max(result["requests"], 1) * 1e6, 2)
    return result


def download(url: str, worker: int) -> dict[str, Any]:
    """One large download through the proxy (curl), and the worker's peak RSS."""
    t0 = time.monotonic()
    dl = subprocess.run(
        [
            "taskset",
            "-c",
            str(CLIENT_CPU),
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            url + "/big",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.monotonic() - t0
    size = int(dl.stdout)
    rss = [
        ln
        for ln in Path(f"/proc/{worker}/status").read_text().splitlines()
        if ln.startswith("VmHWM")
    ]
    return {
        "download_bytes": size,
        "download_mib_per_s": round(size / elapsed / 2**20, 1),
        "worker_peak_rss_kib": int(rss[0].split()[1]) if rss else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--download-mib", type=int, default=256)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="small-GET measurements of each proxy, alternated (the median is kept)",
    )
    args = parser.parse_args()
    nginx = nginx_binary()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "www").mkdir()
        with open(work / "www" / "big", "wb") as f:
            f.truncate(args.download_mib * 2**20)
        os.chmod(work, 0o755)
        os.chmod(work / "www", 0o755)
        os.chmod(work / "www" / "big", 0o644)
        backend_port = free_port()
        bdir = work / "backend"
        bdir.mkdir()
        backend = start(
            [
                nginx,
                "-p",
                f"{bdir}/",
                "-e",
                "stderr",
                "-c",
                str(
                    nginx_conf(
                        bdir,
                        f"""
    server {{
        listen {HOST}:{backend_port};
        keepalive_requests 100000;
        location /small {{ return 200 "ok"; }}
        location /big {{ root {work / "www"}; rewrite ^ /big break; sendfile on; }}
    }}""",
                    )
                ),
            ],
            CLIENT_CPU,
        )
        procs = [backend]
        try:
            wait_up(f"http://{HOST}:{backend_port}/small")
            # nginx as the proxy
            port = free_port()
            ndir = work / "nginx-proxy"
            ndir.mkdir()
            conf = nginx_conf(
                ndir,
                f"""
    upstream back {{ server {HOST}:{backend_port}; keepalive 32; }}
    server {{
        listen {HOST}:{port};
        keepalive_requests 100000;
        location / {{
            proxy_pass http://back;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
        }}
    }}""",
            )
            proxy = start([nginx, "-p", f"{ndir}/", "-e", "stderr", "-c", str(conf)], SERVER_CPU)
            procs.append(proxy)
            wait_up(f"http://{HOST}:{port}/small")
            (worker,) = children(proxy.pid)
            urls = {"nginx": (f"http://{HOST}:{port}", worker)}
            # bastion as the proxy, up at the same time (the one not measured is idle)
            port = free_port()
            cfg = work / "bastion.toml"
            cfg.write_text(
                f'[upstreams.back]\nservers = ["{HOST}:{backend_port}"]\nkeepalive_timeout = 50\n\n'
                '[[routes]]\npath = "/"\nproxy = "back"\n'
            )
            proxy = start(
                [
                    str(PY),
                    "-m",
                    "bastion",
                    "serve",
                    "-c",
                    str(cfg),
                    "--workers",
                    "1",
                    "--bind",
                    f"{HOST}:{port}",
                    "--log-level",
                    "warning",
                ],
                SERVER_CPU,
                env={**os.environ, "BASTION_LIMITS__MAX_KEEPALIVE_REQUESTS": "0"},
            )
            procs.append(proxy)
            wait_up(f"http://{HOST}:{port}/small")
            (worker,) = children(proxy.pid)
            urls["bastion"] = (f"http://{HOST}:{port}", worker)
            # measured in turns, the order alternating: a machine whose speed drifts
            # during the run weighs on both alike; each one's median round is kept
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
            for r in range(args.rounds):
                for name in list(urls) if r % 2 == 0 else list(urls)[::-1]:
                    url, pid = urls[name]
                    got = small_gets(url, pid, args)
                    rounds[name].append(got)
                    print(
                        f"{name:8} {got['rps']:>10.0f} req/s  p99 {got.get('p99_ms', 0):>7.2f} ms  "
                        f"{got['cpu_us_per_request']:>6.1f} us CPU/req",
                        flush=True,
                    )
            for name, (url, pid) in urls.items():
                runs = sorted(rounds[name], key=lambda g: g["rps"])
                results[name] = {
                    **runs[len(runs) // 2],
                    "rounds_rps": [g["rps"] for g in rounds[name]],
                    "rounds_cpu_us": [g["cpu_us_per_request"] for g in rounds[name]],
                    **download(url, pid),
                }
                print(f"{name:8} download {results[name]['download_mib_per_s']} MiB/s")
        finally:
            for p in procs:
                if p.poll() is None:
                    stop(p)
    b, n = results["bastion"], results["nginx"]
    ratios = {
        "rps": round(b["rps"] / n["rps"], 3) if n["rps"] else None,
        "cpu_per_request": round(b["cpu_us_per_request"] / n["cpu_us_per_request"], 3)
        if n["cpu_us_per_request"]
        else None,
        "download": round(b["download_mib_per_s"] / n["download_mib_per_s"], 3),
    }
    print(
        f"bastion / nginx (medians): {ratios}  (targets: rps >= 0.8, cpu <= 2.0, download >= 0.5)"
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"proxy-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "when": stamp,
                "settings": vars(args),
                "python": str(PY),
                "bastion_build": os.environ.get("BENCH_BUILD_NOTE", "as installed"),
                "results": results,
                "ratios": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
