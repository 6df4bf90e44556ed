"""What is measured: the workloads (app, interface, which servers) and bastion's targets."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SERVERS = ("bastion", "granian", "uvicorn", "gunicorn", "hypercorn", "waitress", "ceiling")
# not a peer: bench/ceiling.py, the least a Python server on uvloop + httptools does per
# request; a reference row for the hello workloads (bastion ÷ ceiling)
CEILING = "ceiling"
ASGI_PEERS = ("granian", "uvicorn", "hypercorn")
WSGI_PEERS = ("granian", "gunicorn", "hypercorn", "waitress")
WSGI_THREADS = 8  # thread pool size for every server in the WSGI threads workload

HELLO = b"Hello, world!"
JSON_BODY = {"message": "Hello, world!", "id": 1, "ok": True}
POST_BODY = b"x" * 10240  # what post_10k.lua sends


# -- workloads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    interface: str  # "asgi" | "wsgi"
    target: str  # module:attribute under bench/apps
    servers: tuple[str, ...]
    expect: Callable[[bytes], bool]  # does a 200 response body look right?
    post: bool = False  # POST 10 KiB (post_10k.lua) instead of GET
    threads: bool = False  # WSGI app on a thread pool of WSGI_THREADS
    # the request's Accept-Encoding; the answer must then be encoded so (gzip only)
    accept_encoding: str = ""
    bastion_config: str = ""  # a config file under bench/apps bastion is given (-c)
    peer_target: str = ""  # the target the other servers run, when not ``target``


def _is_hello(body: bytes) -> bool:
    return body == HELLO


def _is_json(body: bytes) -> bool:
    try:
        return bool(json.loads(body) == JSON_BODY)
    except ValueError:
        return False


def _is_echo(body: bytes) -> bool:
    return body == POST_BODY


def _is_item_list(body: bytes) -> bool:
    try:
        return len(json.loads(body)["items"]) == 120
    except (ValueError, KeyError, TypeError):
        return False


WORKLOADS = (
    Workload(
        "asgi-plaintext",
        "ASGI plaintext (raw ASGI hello, 13-byte body)",
        "asgi",
        "raw_asgi:hello",
        ("bastion", *ASGI_PEERS, CEILING),
        _is_hello,
    ),
    Workload(
        "asgi-json",
        "ASGI JSON (FastAPI, small dict)",
        "asgi",
        "fastapi_json:app",
        ("bastion", *ASGI_PEERS),
        _is_json,
    ),
    Workload(
        "asgi-echo",
        "ASGI 10 KiB POST echo (raw ASGI)",
        "asgi",
        "raw_asgi:echo",
        ("bastion", *ASGI_PEERS),
        _is_echo,
        post=True,
    ),
    Workload(
        "wsgi-plaintext",
        "WSGI plaintext, inline (raw WSGI hello, 13-byte body)",
        "wsgi",
        "raw_wsgi:hello",
        ("bastion", *WSGI_PEERS, CEILING),
        _is_hello,
    ),
    Workload(
        "wsgi-threads",
        f"WSGI plaintext on {WSGI_THREADS} threads (raw WSGI hello)",
        "wsgi",
        "raw_wsgi:hello",
        ("bastion", "granian", "gunicorn", "waitress"),
        _is_hello,
        threads=True,
    ),
    Workload(
        "wsgi-echo",
        "WSGI 10 KiB POST echo (raw WSGI)",
        "wsgi",
        "raw_wsgi:echo",
        ("bastion", *WSGI_PEERS),
        _is_echo,
        post=True,
    ),
    Workload(
        "flask-json",
        "WSGI JSON (Flask, small dict)",
        "wsgi",
        "flask_json:app",
        ("bastion", *WSGI_PEERS),
        _is_json,
    ),
    Workload(
        "asgi-gzip",
        "ASGI 8 KiB JSON gzipped (bastion's [compress]; others: Starlette's GZipMiddleware)",
        "asgi",
        "gzip_json:app",
        ("bastion", "granian", "uvicorn"),
        _is_item_list,
        accept_encoding="gzip",
        bastion_config="compress.toml",
        peer_target="gzip_json:with_middleware",
    ),
)
WORKLOADS_BY_NAME = {w.name: w for w in WORKLOADS}


# -- targets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    workload: str
    text: str
    check: Callable[[dict[str, dict[str, Any]]], tuple[bool | None, str]]
    servers: tuple[str, ...] = ()  # the rows the verdict rests on; () = every row


NOISY_PCT = 5.0  # other processes' share of the server's or wrk's core that spoils a figure


def interference(row: dict[str, Any]) -> float:
    """How much other processes held the server back: their share (percent) of the
    server's core, or of wrk's core when the server sat idle waiting for requests. (When
    the server kept its core busy, others using what wrk left of its core did no harm.)"""
    on_server = float(row.get("others_on_server_cpu_pct", 0.0))
    server_idle = 100.0 - float(row.get("server_cpu_pct", 0.0)) - on_server
    on_client = float(row.get("others_on_client_cpu_pct", 0.0))
    return max(on_server, on_client if server_idle > NOISY_PCT else 0.0)


def void_reason(row: dict[str, Any]) -> str | None:
    """Why a measured run is void (wrk saw a non-2xx answer or a socket error), or None.

    A void run has no figures: it is reported as VOID and no target uses it. (wrk counts
    4xx and 5xx answers as non-2xx; the probes before and after each run ask for a 200.)
    """
    if not row.get("ok"):
        return None
    reasons = []
    if non_2xx := int(row.get("non_2xx") or 0):
        reasons.append(f"{non_2xx} non-2xx answers")
    errors = {k: v for k, v in (row.get("socket_errors") or {}).items() if v}
    if errors:
        reasons.append("socket errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
    return "; ".join(reasons) or None


def rps_of(rows: dict[str, dict[str, Any]], name: str, key: str = "rps") -> float | None:
    """A server's requests per second (or another figure) if its run succeeded and is
    not void."""
    row = rows.get(name)
    if not row or not row.get("ok") or void_reason(row) or not row.get(key):
        return None
    return float(row[key])


def _ratio(rows: dict[str, dict[str, Any]], peer: str) -> tuple[float, str] | None:
    """bastion's req/s over ``peer``'s, and how it was found. Measured in rounds (both
    servers measured in each, one soon after the other), the median of the rounds'
    ratios: the machine's speed drifts between rounds by more than the differences
    measured, and a ratio within one round cancels that drift, where the ratio of each
    server's median round would not. Else the ratio of the two runs."""
    ours, theirs = rps_of(rows, "bastion"), rps_of(rows, peer)
    if ours is None or theirs is None:
        return None
    a, b = rows["bastion"].get("rounds_rps") or [], rows[peer].get("rounds_rps") or []
    if len(a) > 1 and len(a) == len(b) and all(a) and all(b):
        each = [x / y for x, y in zip(a, b, strict=True)]
        shown = "/".join(f"{r:.2f}" for r in each)
        return statistics.median(each), f" (median of rounds {shown})"
    return ours / theirs, ""


def _at_least(peer: str, factor: float) -> Callable[[dict[str, dict[str, Any]]], Any]:
    def check(rows: dict[str, dict[str, Any]]) -> tuple[bool | None, str]:
        found = _ratio(rows, peer)
        if found is None:
            return None, "no data"
        ratio, how = found
        return ratio >= factor, f"{ratio:.2f}x{how}{_per_cpu(rows, peer)}"

    return check


def _ahead_of_all(rows: dict[str, dict[str, Any]]) -> tuple[bool | None, str]:
    peers = {
        n: r for n in rows if n not in ("bastion", CEILING) and (r := _ratio(rows, n)) is not None
    }
    if not peers:
        return None, "no data"
    best = min(peers, key=lambda n: peers[n][0])  # the peer bastion leads least
    ratio, how = peers[best]
    return ratio > 1, f"{ratio:.2f}x best peer ({best}){how}{_per_cpu(rows, best)}"


def _per_cpu(rows: dict[str, dict[str, Any]], peer: str) -> str:
    ours, theirs = rps_of(rows, "bastion", "rps_per_cpu"), rps_of(rows, peer, "rps_per_cpu")
    return f" ({ours / theirs:.2f}x per CPU-second)" if ours and theirs else ""


def _worker_below(mb: float) -> Callable[[dict[str, dict[str, Any]]], Any]:
    def check(rows: dict[str, dict[str, Any]]) -> tuple[bool | None, str]:
        if rps_of(rows, "bastion", "rss_worker_mb") is None:
            return None, "no data"
        worker = rows["bastion"]["rss_worker_mb"]
        return worker < mb, f"{worker} MB"

    return check


TARGETS = (
    Target(
        "asgi-plaintext",
        "ASGI plaintext >= 1.3x Granian",
        _at_least("granian", 1.3),
        ("bastion", "granian"),
    ),
    Target(
        "asgi-plaintext",
        "ASGI plaintext >= 2.5x uvicorn",
        _at_least("uvicorn", 2.5),
        ("bastion", "uvicorn"),
    ),
    Target(
        "asgi-plaintext",
        "worker peak RSS < 40 MB (hello app)",
        _worker_below(40.0),
        ("bastion",),
    ),
    Target(
        "asgi-plaintext",
        "ASGI hello >= 0.8x the ceiling",
        _at_least(CEILING, 0.8),
        ("bastion", CEILING),
    ),
    Target(
        "wsgi-plaintext",
        "WSGI inline plaintext >= 1.1x Granian",
        _at_least("granian", 1.1),
        ("bastion", "granian"),
    ),
    Target(
        "wsgi-plaintext",
        "WSGI inline hello >= 0.8x the ceiling",
        _at_least(CEILING, 0.8),
        ("bastion", CEILING),
    ),
    Target(
        "wsgi-threads",
        "WSGI threads >= 4x gunicorn gthread",
        _at_least("gunicorn", 4.0),
        ("bastion", "gunicorn"),
    ),
    Target("asgi-json", "FastAPI JSON ahead of every peer", _ahead_of_all),
    Target("flask-json", "Flask JSON ahead of every peer", _ahead_of_all),
)


def check_targets(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for t in TARGETS:
        if t.workload not in results:
            continue
        rows = results[t.workload]
        used = [r for r in rows if not t.servers or r["server"] in t.servers]
        void = [f"{r['server']} ({why})" for r in used if (why := void_reason(r))]
        if void:  # a void run counts for nothing, not even for a MISS
            passed, detail, verdict = None, "void run: " + "; ".join(void), "VOID"
        else:
            passed, detail = t.check({r["server"]: r for r in rows})
            verdict = {True: "PASS", False: "MISS", None: "n/a"}[passed]
        noisy = passed is not None and any(interference(r) > NOISY_PCT for r in used)
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
