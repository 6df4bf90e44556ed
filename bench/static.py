#!/usr/bin/env python3
"""Static-file benchmark: bastion against nginx, Starlette StaticFiles and WhiteNoise.

The same generated files are served at /s/ by every server, one worker each, pinned to
CPU 0; wrk drives it from CPU 1 with the foundation harness's settings (bench/run.py).
Workloads: a 1 KiB file, a 100 KiB file, a 1 MiB file, and a 304 revalidation of the
1 KiB file (If-None-Match with the ETag the server gave). Prints a table per workload with
bastion's ratios, checks the targets against nginx (1 KiB: >= 1.0x req/s; 1 MiB: >= 0.8x
throughput) and writes bench/results/static-<UTC time>.json.

    make bench-static                                  # installs nginx-light if missing
    .venv/bin/python bench/static.py --quick           # a smoke check
    .venv/bin/python bench/static.py --only static-1k --servers bastion,nginx

See "Static files" in bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.environment import (
    _versions,
    bastion_build,
    ensure_peers,
    machine,
    preflight,
    source_tree,
    versions,
)
from harness.measure import QUIET_PCT, parse_wrk, settle
from harness.procfs import CpuSnapshot, RssSampler, cpu_usage, process_tree, rss_kib
from harness.servers import (
    BENCH,
    CLIENT_CPU,
    HOST,
    PEERS,
    PROJECT_PY,
    RESULTS,
    ROOT,
    SERVER_CPU,
    START_TIMEOUT,
    Server,
    free_port,
    pinned,
    renice_session,
)
from harness.workloads import NOISY_PCT, interference, void_reason
from run import _notes, _pick, cleanup_on_exit

STATIC_APPS = BENCH / "static_apps"
STATIC_REQUIREMENTS = STATIC_APPS / "requirements.txt"
PREFIX = "/s/"  # every server serves the files below this path
SERVERS = ("bastion", "nginx", "starlette", "whitenoise")
WHITENOISE_THREADS = 8  # gunicorn gthread threads, as in the foundation harness
KIB, MIB = 1024, 1024 * 1024


# -- workloads and files ------------------------------------------------------------------


@dataclass(frozen=True)
class StaticWorkload:
    name: str
    title: str
    file: str  # name under the generated directory, served at PREFIX + file
    size: int  # bytes
    revalidate: bool = False  # send If-None-Match with the server's ETag: expect 304


WORKLOADS = (
    StaticWorkload("static-1k", "1 KiB CSS file", "asset-1k.css", KIB),
    StaticWorkload("static-100k", "100 KiB JavaScript file", "asset-100k.js", 100 * KIB),
    StaticWorkload("static-1m", "1 MiB JPEG file", "image-1m.jpg", MIB),
    StaticWorkload(
        "static-304",
        "304 revalidation of the 1 KiB file (If-None-Match)",
        "asset-1k.css",
        KIB,
        revalidate=True,
    ),
)
WORKLOADS_BY_NAME = {w.name: w for w in WORKLOADS}


def make_files(directory: Path) -> dict[str, bytes]:
    """Write the benchmark's files (the same bytes on every run); their contents by name.

    Text files get printable text, the image random bytes. Every server reads them from
    here, so the directory and files are world-readable (nginx's worker is not root).
    """
    rng = random.Random(20240601)
    alphabet = b"abcdefghijklmnopqrstuvwxyz{}();:.#- \n"
    contents: dict[str, bytes] = {}
    for w in WORKLOADS:
        if w.file in contents:
            continue
        if w.file.endswith(".jpg"):
            data = rng.randbytes(w.size)
        else:
            data = bytes(rng.choice(alphabet) for _ in range(w.size))
        (directory / w.file).write_bytes(data)
        (directory / w.file).chmod(0o644)
        contents[w.file] = data
    directory.chmod(0o755)
    return contents


# -- servers ------------------------------------------------------------------------------


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def nginx_config(port: int, root: Path, workdir: Path) -> str:
    """One worker, sendfile and tcp_nopush on, no access log; the rest nginx's defaults."""
    mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
worker_processes 1;
daemon off;
pid {workdir / "nginx.pid"};
error_log stderr warn;
events {{
    worker_connections 1024;
}}
http {{
    {mime}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
{temp}
    server {{
        listen {HOST}:{port};
        location {PREFIX} {{
            alias {root}/;
        }}
    }}
}}
"""


def bastion_config(root: Path) -> str:
    """A static-only site: one route, no app."""
    return f'[[routes]]\npath = "{PREFIX}"\nstatic = {{ root = "{root}" }}\n'


def server_command(server: str, port: int, root: Path, workdir: Path) -> list[str]:
    """The command line that starts ``server`` with one worker on ``port`` serving ``root``."""
    peers_bin = PEERS / "bin"
    with_root = ["env", f"BENCH_STATIC_ROOT={root}"]
    if server == "bastion":
        config = workdir / "bastion.toml"
        config.write_text(bastion_config(root))
        return [
            *(str(PROJECT_PY), "-m", "bastion", "serve", "--config", str(config)),
            *("--workers", "1", "--bind", f"{HOST}:{port}", "--log-level", "warning"),
        ]
    if server == "nginx":
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (`make bench-static` installs nginx-light)")
        config = workdir / "nginx.conf"
        config.write_text(nginx_config(port, root, workdir))
        return [binary, "-p", f"{workdir}/", "-c", str(config), "-e", "stderr"]
    if server == "starlette":
        return [
            *(*with_root, str(peers_bin / "uvicorn"), "starlette_static:app"),
            *("--app-dir", str(STATIC_APPS), "--host", HOST, "--port", str(port)),
            *("--loop", "uvloop", "--http", "httptools", "--no-access-log"),
            *("--log-level", "warning"),
        ]
    if server == "whitenoise":
        return [
            *(*with_root, str(peers_bin / "gunicorn"), "--workers", "1"),
            *("--worker-class", "gthread", "--threads", str(WHITENOISE_THREADS)),
            *("--chdir", str(STATIC_APPS), "--bind", f"{HOST}:{port}"),
            *("--log-level", "warning", "whitenoise_static:app"),
        ]
    raise ValueError(f"unknown server {server!r}")


def ensure_static_peers() -> None:
    """Add what bench/static_apps/requirements.txt lists to the peers' virtualenv once."""
    stamp = PEERS / ".static-requirements.sha256"
    want = hashlib.sha256(STATIC_REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return
    print("installing Starlette and WhiteNoise into bench/.peers ...", flush=True)
    pip = [str(PEERS / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-r", str(STATIC_REQUIREMENTS)], check=True, timeout=900)
    stamp.write_text(want)


def static_versions() -> dict[str, str]:
    found = _versions(PEERS / "bin" / "python", ("starlette", "whitenoise"), "peers")
    if binary := nginx_binary():
        proc = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
        found["nginx"] = (proc.stderr or proc.stdout).strip().split("/")[-1]
    return found


# -- asking one request ---------------------------------------------------------------------


def fetch(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def probe(w: StaticWorkload, port: int, expected: bytes) -> tuple[str | None, dict[str, str]]:
    """Ask like the workload does; (what was wrong or None, the headers wrk must send)."""
    status, headers, body = fetch(port, PREFIX + w.file)
    if status != 200:
        return f"status {status}: {body[:200]!r}", {}
    if body != expected:
        return f"wrong body: {len(body)} bytes, not the file's {len(expected)}", {}
    if not w.revalidate:
        return None, {}
    etag = headers.get("etag")
    if not etag:
        return "no ETag on the 200 response", {}
    ask = {"If-None-Match": etag}
    status, _, body = fetch(port, PREFIX + w.file, ask)
    if status != 304 or body:
        return f"If-None-Match {etag}: status {status} with {len(body)} body bytes", {}
    return None, ask


def wait_ready(srv: Server, w: StaticWorkload, expected: bytes) -> dict[str, str]:
    """Wait until the server answers the workload's request right; the headers for wrk."""
    assert srv.proc is not None
    deadline = time.monotonic() + START_TIMEOUT
    problem = "no answer"
    while time.monotonic() < deadline:
        if srv.proc.poll() is not None:
            raise RuntimeError(f"exited with status {srv.proc.returncode}")
        try:
            wrong, ask = probe(w, srv.port, expected)
        except (OSError, http.client.HTTPException) as exc:
            problem = f"no answer ({exc.__class__.__name__})"
        else:
            if wrong is None:
                srv.seen.update(process_tree(srv.proc.pid))
                return ask
            problem = wrong
        time.sleep(0.1)
    raise RuntimeError(f"not ready after {START_TIMEOUT:.0f} s: {problem}")


# -- wrk ------------------------------------------------------------------------------------

_BINARY_UNITS = {"B": 1, "KB": KIB, "MB": MIB, "GB": 1024 * MIB, "TB": 1024 * 1024 * MIB}


def run_wrk(
    port: int, path: str, headers: dict[str, str], seconds: float, args: argparse.Namespace
) -> dict[str, Any]:
    """wrk as the foundation harness runs it, on one path with extra request headers."""
    cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{max(1, round(seconds))}s"]
    cmd += ["--latency", "--timeout", "5s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(f"http://{HOST}:{port}{path}")
    out = subprocess.run(
        pinned(CLIENT_CPU, args.nice, cmd),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    ).stdout
    result = parse_wrk(out)
    # wrk counts 3xx with 2xx; what it reads per second, headers included (binary units)
    if m := re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)", out):
        result["wire_mib_s"] = round(float(m.group(1)) * _BINARY_UNITS[m.group(2)] / MIB, 1)
    return result


# -- one measurement ------------------------------------------------------------------------


def measure(
    server: str, w: StaticWorkload, args: argparse.Namespace, files: Path, contents: bytes
) -> dict[str, Any]:
    """Start ``server``, check it, warm up, measure under wrk with RSS sampling, stop it."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"{server}-", dir=args.tmp))
    row: dict[str, Any] = {"server": server, "ok": False}
    srv = Server(server, [], port, workdir / "server.log", nice=args.nice)
    try:
        srv.cmd = server_command(server, port, files, workdir)
        row["command"] = " ".join(srv.cmd)
        pid = srv.start()
        ask = wait_ready(srv, w, contents)
        row["request_headers"] = ask
        row["idle_rss_tree_mb"] = _mb(sum(rss_kib(p) for p in process_tree(pid)))
        path = PREFIX + w.file
        if args.warmup > 0:
            run_wrk(port, path, ask, args.warmup, args)
        cpus = (SERVER_CPU, CLIENT_CPU)
        with RssSampler(pid) as rss:
            before = CpuSnapshot.take(pid, cpus)
            row.update(run_wrk(port, path, ask, args.duration, args))
            after = CpuSnapshot.take(pid, cpus)
            rss.sample()
        row.update(cpu_usage(before, after, SERVER_CPU, CLIENT_CPU))
        if row["server_cpu_pct"] > 0:
            row["rps_per_cpu"] = round(row["rps"] * 100 / row["server_cpu_pct"], 1)
        if not w.revalidate:
            row["body_mib_s"] = round(row["rps"] * w.size / MIB, 1)
        row["rss_tree_mb"] = _mb(rss.peak_tree_kib)
        row["rss_worker_mb"] = _mb(rss.peak_worker_kib)
        row["processes"] = len(rss.peak_by_pid)
        if (status := srv.exited()) is not None:
            raise RuntimeError(f"exited during the run with status {status}")
        wrong, _ = probe(w, port, contents)
        if wrong:
            raise RuntimeError(f"wrong answer after the run: {wrong}")
        if not row["requests"]:
            raise RuntimeError("wrk completed no request")
        row["ok"] = True
        row["void"] = void_reason(row)
    except (RuntimeError, OSError, http.client.HTTPException, subprocess.SubprocessError) as e:
        row["error"] = str(e)
        row["log_tail"] = srv.log_tail()
    finally:
        row["port_freed"] = srv.stop()
    return row


def measure_quietly(
    server: str, w: StaticWorkload, args: argparse.Namespace, files: Path, contents: bytes
) -> dict[str, Any]:
    """As the foundation harness does: wait for quiet cores, measure, measure again when
    other processes took a share of them, keep the least disturbed run."""
    attempts: list[dict[str, Any]] = []
    for attempt in range(1 + args.retries):
        if attempt:
            print(f"    others took {interference(attempts[-1]):.0f}% of a core: measuring again")
        busy_before = settle(args.settle)
        row = measure(server, w, args, files, contents)
        row["busy_before_pct"] = busy_before
        attempts.append(row)
        if not row["ok"] or row["void"] or interference(row) <= NOISY_PCT:
            break  # a void run is the server's doing: it is reported, not measured away
    best = min([r for r in attempts if r["ok"]] or attempts, key=interference)
    best["attempts"] = len(attempts)
    return best


def _mb(kib: int) -> float:
    return round(kib / 1024, 1)


# -- targets and reporting --------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    workload: str
    text: str
    factor: float  # bastion's req/s at least this times nginx's


TARGETS = (
    Target("static-1k", "1 KiB file: bastion >= 1.0x nginx req/s", 1.0),
    Target("static-1m", "1 MiB file: bastion >= 0.8x nginx throughput", 0.8),
)


def _ok(rows: dict[str, dict[str, Any]], name: str, key: str = "rps") -> float | None:
    row = rows.get(name)
    if not row or not row.get("ok") or void_reason(row) or not row.get(key):
        return None
    return float(row[key])


def check_targets(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for t in TARGETS:
        if t.workload not in results:
            continue
        rows = {r["server"]: r for r in results[t.workload]}
        ours, theirs = _ok(rows, "bastion"), _ok(rows, "nginx")
        void = [
            f"{name} ({why})"
            for name in ("bastion", "nginx")
            if name in rows and (why := void_reason(rows[name]))
        ]
        if void:  # a void run counts for nothing, not even for a MISS
            verdict, detail = "VOID", "void run: " + "; ".join(void)
        elif ours is None or theirs is None:
            verdict, detail = "n/a", "no data"
        else:
            verdict = "PASS" if ours / theirs >= t.factor else "MISS"
            detail = f"{ours / theirs:.2f}x ({ours:.0f} vs {theirs:.0f} req/s)"
            ours_cpu, theirs_cpu = (
                _ok(rows, "bastion", "rps_per_cpu"),
                _ok(rows, "nginx", "rps_per_cpu"),
            )
            if ours_cpu and theirs_cpu:
                detail += f", {ours_cpu / theirs_cpu:.2f}x per CPU-second"
        noisy = verdict in ("PASS", "MISS") and any(
            interference(r) > NOISY_PCT for r in rows.values()
        )
        if noisy:
            detail += " (unreliable: the machine was busy during this workload)"
        out.append(
            {
                "target": t.text,
                "workload": t.workload,
                "verdict": verdict,
                "detail": detail,
                "reliable": not noisy,
            }
        )
    return out


def print_table(w: StaticWorkload, rows: list[dict[str, Any]]) -> None:
    by_name = {r["server"]: r for r in rows}
    ours, ours_cpu = _ok(by_name, "bastion"), _ok(by_name, "bastion", "rps_per_cpu")
    print(f"\n== {w.name}: {w.title} ==")
    print(
        f"{'server':<10} {'req/s':>8} {'MiB/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7} "
        f"{'worker MB':>9} {'CPU %':>6} {'req/CPU-s':>9} {'bastion ÷':>10} {'÷ per CPU':>9}"
    )
    for r in rows:
        if not r["ok"]:
            print(f"{r['server']:<10} failed: {r.get('error', '?')}")
            continue
        if why := void_reason(r):
            print(f"{r['server']:<10} VOID: {why}")
            continue
        peer = r["server"] != "bastion"
        ratio = f"{ours / r['rps']:.2f}x" if ours and peer else "-"
        per_cpu = r.get("rps_per_cpu") or 0.0
        ratio_cpu = f"{ours_cpu / per_cpu:.2f}x" if ours_cpu and per_cpu and peer else "-"
        mib = f"{r['body_mib_s']:.0f}" if "body_mib_s" in r else "-"
        print(
            f"{r['server']:<10} {r['rps']:>8.0f} {mib:>7} {r.get('p50_ms', 0):>7.2f} "
            f"{r.get('p99_ms', 0):>7.2f} {r['rss_tree_mb']:>7.1f} {r['rss_worker_mb']:>9.1f} "
            f"{r['server_cpu_pct']:>6.0f} {per_cpu:>9.0f} {ratio:>10} {ratio_cpu:>9}{_notes(r)}"
        )


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke check: 1 s warm-up, 3 s runs")
    p.add_argument("--only", help="workloads, comma-separated: " + ",".join(WORKLOADS_BY_NAME))
    p.add_argument("--servers", help="servers, comma-separated: " + ",".join(SERVERS))
    p.add_argument("--duration", type=float, help="seconds per measured run (default 10)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per server (default 2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument(
        "--settle", type=float, help="seconds to wait for quiet cores before each server (10)"
    )
    p.add_argument("--retries", type=int, help="measure again when disturbed (default 1)")
    p.add_argument(
        "--nice",
        type=int,
        help="niceness of the servers, wrk and their sessions (default -20 as root, else 0)",
    )
    args = p.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    args.settle = args.settle if args.settle is not None else (5.0 if args.quick else 10.0)
    args.retries = args.retries if args.retries is not None else (0 if args.quick else 1)
    if args.nice is None:
        args.nice = -20 if os.geteuid() == 0 else 0
    if not -20 <= args.nice <= 19:
        p.error("--nice must be -20..19")
    if not (1 <= args.duration <= 600 and 0 <= args.warmup <= 60 and 0 <= args.settle <= 600):
        p.error("--duration must be 1..600 s, --warmup 0..60 s, --settle 0..600 s")
    if not (1 <= args.connections <= 10000 and 0 <= args.retries <= 5):
        p.error("--connections must be 1..10000, --retries 0..5")
    args.workloads = _pick(p, args.only, WORKLOADS_BY_NAME, "--only")
    args.server_names = _pick(p, args.servers, dict.fromkeys(SERVERS), "--servers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    preflight()
    ensure_peers()
    ensure_static_peers()
    os.sched_setaffinity(0, {CLIENT_CPU})  # keep the harness off the server's core
    if args.nice and not renice_session(os.getpid(), args.nice):  # wrk runs in this session
        print(f"bench: could not set niceness {args.nice} (needs root); going on without")
    tree = source_tree()
    if tree["dirty"]:
        changed = ", ".join(tree["changed"][:5]) + (", ..." if len(tree["changed"]) > 5 else "")
        print(f"bench: the tree differs from {tree['commit'][:7]} ({changed}): figures say so")
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)],
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "wrk_threads": 1,
            "server_cpu": SERVER_CPU,
            "client_cpu": CLIENT_CPU,
            "workers": 1,
            "whitenoise_gunicorn": f"gthread, {WHITENOISE_THREADS} threads",
            "settle_s": args.settle,
            "quiet_pct": QUIET_PCT,
            "retries": args.retries,
            "nice": args.nice,
        },
        "tree": tree,
        "machine": machine(),
        "versions": {**versions(), "static": static_versions()},
        "bastion_build": bastion_build(),  # mypyc-compiled modules (`make` builds them)
        "workloads": {},
    }
    if "bastion" in args.server_names:
        build = report["bastion_build"]
        print(f"bastion: {len(build['compiled_modules']) or 'no'} compiled modules")
        if build["stale_compiled_modules"]:
            stale = ", ".join(build["stale_compiled_modules"])
            print(
                f"bastion: compiled modules older than their source (edits not in effect): {stale}"
            )
    results: dict[str, list[dict[str, Any]]] = {}
    with cleanup_on_exit(), tempfile.TemporaryDirectory(prefix="bastion-bench-static-") as tmp:
        args.tmp = tmp
        files = Path(tmp) / "files"
        files.mkdir()
        Path(tmp).chmod(0o755)  # nginx's worker runs as an unprivileged user
        contents = make_files(files)
        try:
            for name in args.workloads:
                w = WORKLOADS_BY_NAME[name]
                rows = results.setdefault(name, [])
                report["workloads"][name] = {
                    "title": w.title,
                    "path": PREFIX + w.file,
                    "size": w.size,
                    "rows": rows,
                }
                for server in args.server_names:
                    print(f"  {w.name} / {server} ...", flush=True)
                    row = measure_quietly(server, w, args, files, contents[w.file])
                    if not row["ok"] and row.get("log_tail"):
                        print("    " + row["log_tail"].replace("\n", "\n    "))
                    rows.append(row)
                print_table(w, rows)
        except KeyboardInterrupt:
            print("\ninterrupted: servers stopped; writing what was measured")
            report["interrupted"] = True
    report["targets"] = check_targets(results)
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    if report["targets"]:
        print("\n== targets ==")
        for t in report["targets"]:
            print(f"{t['verdict']:<5} {t['target']}: {t['detail']}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"static-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    tmp_path = path.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(report, indent=2) + "\n")
    tmp_path.replace(path)
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 130 if report.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
