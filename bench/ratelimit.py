"""Cost of a Redis-backed rate limit (not a test): the hello app served by one worker,
with no limit and with a Redis limit that never trips, in the same run, loaded by wrk
over loopback; req/s kept, the added p99 latency, and the CPU time per request of the
worker and of redis-server (they share the machine's cores with wrk).

Starts its own redis-server (no persistence) on a free loopback port. Both sites stay
up and are measured in turns, ``--rounds`` times each with the order alternating; each
case's median round is kept (every round's req/s is in the file). Short by design: a
few seconds per round. Writes bench/results/ratelimit-<UTC time>.json.

    .venv/bin/python bench/ratelimit.py [--seconds 5] [--rounds 3] [--connections 32]

The machine running it is usually shared: compare two builds by alternating runs of
each in one session and quote the ratios (``--label`` says which build a file is).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from redis_server import RedisServer  # noqa: E402
from server import BastionProcess  # noqa: E402

CONFIG = """
[app]
target = "raw_asgi:hello"
app_dir = "{apps}"

[rate_limit]
backend = "redis"
redis_url = "{url}"

[[routes]]
path = "/"
app = "default"
{limit}
"""

LIMIT = """[[routes.rate_limit]]
rate = "100000/s"
burst = 1000000
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
        assert m is not None, out
        lat[pct] = float(m.group(1)) * _UNITS[m.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def workers(pid: int) -> list[int]:
    """The supervisor's child processes (the worker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def _compiled() -> bool:
    import bastion.protocol.http1 as http1

    return not http1.__file__.endswith(".py")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measurements of each case, alternated (the median is kept)",
    )
    parser.add_argument("--label", default="", help="a note kept in the results (the build)")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        redis = RedisServer(Path(tmp)).start()
        stack.callback(redis.stop)
        # both sites up at once (the one not measured is idle), measured in turns, the
        # order alternating: a machine whose speed drifts weighs on both alike
        sites: dict[str, BastionProcess] = {}
        for case, limit in (("no limit", ""), ("redis limit", LIMIT)):
            path = Path(tmp) / f"{case.replace(' ', '-')}.toml"
            path.write_text(CONFIG.format(apps=ROOT / "bench" / "apps", url=redis.url, limit=limit))
            argv = ["serve", "-c", str(path), "--bind", "127.0.0.1:0", "--workers", "1"]
            site = stack.enter_context(BastionProcess(argv, cwd=tmp))
            wrk(site.url + "/", 1, args.connections)  # warm up
            sites[case] = site
        order = list(sites)
        for r in range(args.rounds):
            for case in order if r % 2 == 0 else order[::-1]:
                site = sites[case]
                pids = workers(site.pid)
                assert pids is not None and redis.proc is not None
                before = [cpu_seconds(p) for p in pids], cpu_seconds(redis.proc.pid)
                res = wrk(site.url + "/", args.seconds, args.connections)
                after = [cpu_seconds(p) for p in pids], cpu_seconds(redis.proc.pid)
                count = res["rps"] * args.seconds
                # CPU per request, in microseconds: the worker's and redis-server's
                res["worker_us"] = round(1e6 * (sum(after[0]) - sum(before[0])) / count, 2)
                res["redis_us"] = round(1e6 * (after[1] - before[1]) / count, 2)
                runs.setdefault(case, []).append(res)
                print(case, res, flush=True)
    # each case's median round (by req/s), with every round's req/s
    results: dict[str, dict[str, Any]] = {}
    for case, rs in runs.items():
        ordered = sorted(rs, key=lambda x: x["rps"])
        results[case] = {**ordered[len(ordered) // 2], "rounds_rps": [x["rps"] for x in rs]}
    base, limited = results["no limit"], results["redis limit"]
    summary = {
        "rps_kept": round(limited["rps"] / base["rps"], 3),
        "added_p99_ms": round(limited["p99_ms"] - base["p99_ms"], 3),
        "added_worker_us": round(limited["worker_us"] - base["worker_us"], 2),
        "redis_us": limited["redis_us"],
    }
    print(summary)
    out = {
        "bench": "ratelimit",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "wrk": {"threads": 2, "connections": args.connections, "seconds": args.seconds},
        "rounds": args.rounds,
        "workers": 1,
        "build": "compiled" if _compiled() else "pure Python",
        "label": args.label,
        "results": results,
        "summary": summary,
    }
    name = (
        ROOT
        / "bench"
        / "results"
        / f"ratelimit-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    )
    name.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {name}")


if __name__ == "__main__":
    main()
