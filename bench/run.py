#!/usr/bin/env python3
"""Side-by-side HTTP benchmark: bastion against uvicorn, Granian, gunicorn, Hypercorn, waitress.

Each server runs alone with one worker pinned to CPU 0; wrk drives it from CPU 1. For every
workload and server: start, wait until it answers correctly, warm up, measure, sample the
peak RSS of its process tree, stop it, check that its port is free. Prints a table per
workload, checks bastion's targets and writes everything to bench/results/<UTC time>.json.

    .venv/bin/python bench/run.py              # the full run (three rounds: 25-70 minutes)
    .venv/bin/python bench/run.py --quick      # a smoke check (1 s warm-up, 3 s runs)
    .venv/bin/python bench/run.py --only asgi-plaintext --servers bastion,granian

See bench/README.md for what is measured and how to read the output.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.environment import (
    bastion_available,
    bastion_build,
    ensure_peers,
    machine,
    preflight,
    source_tree,
    versions,
)
from harness.measure import measure_quietly
from harness.servers import CLIENT_CPU, RESULTS, ROOT, SERVER_CPU, renice_session, stop_all
from harness.workloads import (
    CEILING,
    NOISY_PCT,
    SERVERS,
    WORKLOADS_BY_NAME,
    WSGI_THREADS,
    check_targets,
    interference,
    rps_of,
    void_reason,
)

CLIENT_BOUND_PCT = 97.0  # wrk's core this busy: the figure may be wrk's limit, not the server's


# -- reporting ----------------------------------------------------------------------------


def print_table(name: str, title: str, rows: list[dict[str, Any]]) -> None:
    by_name = {r["server"]: r for r in rows}
    ours, ours_cpu = rps_of(by_name, "bastion"), rps_of(by_name, "bastion", "rps_per_cpu")
    print(f"\n== {name}: {title} ==")
    print(
        f"{'server':<10} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7} "
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
        print(
            f"{r['server']:<10} {r['rps']:>9.0f} {r.get('p50_ms', 0):>7.2f} "
            f"{r.get('p99_ms', 0):>7.2f} {r['rss_tree_mb']:>7.1f} {r['rss_worker_mb']:>9.1f} "
            f"{r['server_cpu_pct']:>6.0f} {per_cpu:>9.0f} {ratio:>10} {ratio_cpu:>9}{_notes(r)}"
        )


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """A server's row from its rounds: the round of median req/s (the lower of the two
    middle ones for an even count), with every round's req/s; a failed or void round is
    reported in its place, never measured away."""
    bad = [r for r in rounds if not r["ok"] or void_reason(r)]
    ranked = bad or sorted(rounds, key=lambda r: r["rps"])
    row = dict(ranked[0] if bad else ranked[(len(ranked) - 1) // 2])
    row["rounds"] = len(rounds)
    row["rounds_rps"] = [round(r["rps"], 1) if r["ok"] else None for r in rounds]
    return row


def _notes(r: dict[str, Any]) -> str:
    notes = []
    if len(r.get("rounds_rps") or ()) > 1:
        spread = [x for x in r["rounds_rps"] if x]
        if spread:
            notes.append(f"rounds {min(spread):.0f}..{max(spread):.0f}")
    if interference(r) > NOISY_PCT:
        notes.append(
            f"other processes took {r['others_on_server_cpu_pct']:.0f}% of the server's core "
            f"and {r['others_on_client_cpu_pct']:.0f}% of wrk's"
        )
    if r["client_cpu_pct"] > CLIENT_BOUND_PCT:
        notes.append(f"wrk used {r['client_cpu_pct']:.0f}% of its core: may be client-bound")
    return "  ! " + "; ".join(notes) if notes else ""


def print_targets(targets: list[dict[str, Any]]) -> None:
    if targets:
        print("\n== targets ==")
    for t in targets:
        print(f"{t['verdict']:<5} {t['target']}: {t['detail']}")


def show(path: Path) -> int:
    """Print the tables and targets of a results file again."""
    report = json.loads(path.read_text())
    print(f"{path}: {' '.join(report.get('command', []))}, started {report.get('started')}")
    print(f"machine: {report.get('machine')}")
    print(f"versions: {report.get('versions')}")
    results = {}
    for name, workload in report["workloads"].items():
        results[name] = workload["rows"]
        print_table(name, workload["title"], workload["rows"])
    print_targets(check_targets(results))
    return 0


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--show", metavar="FILE", help="print the tables of a results file again")
    p.add_argument("--quick", action="store_true", help="smoke check: 1 s warm-up, 3 s runs")
    p.add_argument(
        "--only", help="workloads to run, comma-separated: " + ",".join(WORKLOADS_BY_NAME)
    )
    p.add_argument("--servers", help="servers to run, comma-separated: " + ",".join(SERVERS))
    p.add_argument("--duration", type=float, help="seconds per measured run (default 10)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per server (default 2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument(
        "--rounds",
        type=int,
        help="rounds per workload, the servers taking turns (forward, then backward); "
        "each server's median round is reported (default 3, --quick 1)",
    )
    p.add_argument(
        "--settle",
        type=float,
        help="seconds to wait, before each server, for the two cores to be quiet (default 10)",
    )
    p.add_argument(
        "--retries",
        type=int,
        help="times to measure again when other processes disturbed a run (default 1)",
    )
    p.add_argument(
        "--nice",
        type=int,
        help="niceness of the servers and wrk, and of their sessions' scheduler groups "
        "(default -20 as root, so that other work on a shared machine yields; else 0)",
    )
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.settle is None:
        args.settle = 5.0 if args.quick else 10.0
    if args.retries is None:
        args.retries = 0 if args.quick else 1
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if not 1 <= args.rounds <= 9:
        p.error("--rounds must be 1..9")
    if not (1 <= args.duration <= 600 and 0 <= args.warmup <= 60 and 0 <= args.settle <= 600):
        p.error("--duration must be 1..600 s, --warmup 0..60 s, --settle 0..600 s")
    if not (1 <= args.connections <= 10000 and 0 <= args.retries <= 5):
        p.error("--connections must be 1..10000, --retries 0..5")
    if args.nice is None:
        args.nice = -20 if os.geteuid() == 0 else 0
    if not -20 <= args.nice <= 19:
        p.error("--nice must be -20..19")
    args.workloads = _pick(p, args.only, WORKLOADS_BY_NAME, "--only")
    args.server_names = _pick(p, args.servers, dict.fromkeys(SERVERS), "--servers")
    return args


def _pick(
    p: argparse.ArgumentParser, value: str | None, known: dict[str, Any], flag: str
) -> list[str]:
    if not value:
        return list(known)
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        p.error(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    return names


@contextlib.contextmanager
def cleanup_on_exit() -> Iterator[None]:
    """Kill every server still running on exit, Ctrl-C, SIGTERM or an error."""
    atexit.register(stop_all)
    previous = {
        sig: signal.signal(sig, signal.default_int_handler)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.show:
        return show(Path(args.show))
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows up when piped too
    preflight()
    if set(args.server_names) - {"bastion", CEILING}:  # bastion and the ceiling run from .venv
        ensure_peers()
    # keep this process (and its RSS sampling) off the server's core
    os.sched_setaffinity(0, {CLIENT_CPU})
    if args.nice and not renice_session(os.getpid(), args.nice):  # wrk runs in this session
        print(f"bench: could not set niceness {args.nice} (needs root); going on without")
    unavailable = bastion_available() if "bastion" in args.server_names else None
    if unavailable:
        print(f"bastion cannot serve yet, measuring the peers only: {unavailable}")
    build = bastion_build()
    print(f"bastion: {len(build['compiled_modules']) or 'no'} compiled modules")
    if build["stale_compiled_modules"]:
        stale = ", ".join(build["stale_compiled_modules"])
        print(f"bastion: compiled modules older than their source (edits not in effect): {stale}")
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
            "wsgi_threads": WSGI_THREADS,
            "settle_s": args.settle,
            "retries": args.retries,
            "rounds": args.rounds,
            "nice": args.nice,
        },
        "tree": tree,
        "machine": machine(),
        "versions": versions(),
        "workloads": {},
    }
    results: dict[str, list[dict[str, Any]]] = {}
    with cleanup_on_exit(), tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        try:
            for name in args.workloads:
                w = WORKLOADS_BY_NAME[name]
                rows: list[dict[str, Any]] = results.setdefault(name, [])
                report["workloads"][name] = {"title": w.title, "rows": rows}
                servers = [s for s in w.servers if s in args.server_names]
                if "bastion" in servers and unavailable:
                    servers.remove("bastion")
                    rows.append({"server": "bastion", "ok": False, "error": unavailable})
                runs: dict[str, list[dict[str, Any]]] = {s: [] for s in servers}
                for turn in range(args.rounds):
                    # alternate the order, so that a machine slowing down or speeding up
                    # over the rounds weighs on every server alike
                    progress = f" (round {turn + 1} of {args.rounds})" if args.rounds > 1 else ""
                    for server in servers if turn % 2 == 0 else servers[::-1]:
                        print(f"  {w.name} / {server}{progress} ...", flush=True)
                        row = measure_quietly(server, w, args, Path(tmp))
                        if not row["ok"] and row.get("log_tail"):
                            print("    " + row["log_tail"].replace("\n", "\n    "))
                        runs[server].append(row)
                rows.extend(median_round(runs[s]) for s in servers)
                print_table(w.name, w.title, rows)
        except KeyboardInterrupt:
            print("\ninterrupted: servers stopped; writing what was measured")
            report["interrupted"] = True
    report["targets"] = check_targets(results)
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    print_targets(report["targets"])
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    tmp_path = path.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(report, indent=2) + "\n")
    tmp_path.replace(path)
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 130 if report.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
