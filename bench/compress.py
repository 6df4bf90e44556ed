"""CPU cost of on-the-fly compression: one response body, per algorithm, in-process.

    .venv/bin/python bench/compress.py                # 10 KB JSON, default levels
    .venv/bin/python bench/compress.py --size 100000 --repeat 500

For each algorithm at the levels ``[compress]`` uses by default it reports the time to
compress the whole body at once (what a response sent in one piece costs), the time when
the same body is streamed in 1 KB writes each flushed (what a streaming response costs),
the time through the whole filter (head handling, Vary, ETag, the compressed response
handed on), and the compressed size; then what the filter adds to a response it does
not compress, and to one whose compressed body it has kept (it has an ``ETag``).
Pinned to one CPU when it can be; the figures are the best of ``--rounds`` rounds, the
least disturbed by other work on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.fake_exchange import FakeExchange

from bastion.config.schema import CompressConfig
from bastion.edge.compress import compress_filter
from bastion.edge.encoders import build_codecs


def json_body(size: int) -> bytes:
    """A JSON document like an API list response, cut to about ``size`` bytes."""
    items = []
    n = 0
    i = 0
    while n < size:
        item = {
            "id": i,
            "username": f"user{i:05d}",
            "email": f"user{i:05d}@example.com",
            "active": i % 3 != 0,
            "score": round((i * 7919) % 1000 / 7.0, 3),
            "tags": ["alpha", "beta", "gamma"][: i % 3 + 1],
            "created": f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}T12:{i % 60:02d}:00Z",
        }
        items.append(item)
        n += len(json.dumps(item)) + 2
        i += 1
    return json.dumps(items).encode()[:size]


def per_call_us(fn: Callable[[], object], repeat: int, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        samples.append((time.perf_counter() - start) / repeat * 1e6)
    return min(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10_000, help="body size in bytes")
    ap.add_argument("--repeat", type=int, default=300, help="calls per round")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--piece", type=int, default=1024, help="write size when streaming")
    args = ap.parse_args()
    try:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass
    cfg = CompressConfig(enabled=True)
    body = json_body(args.size)
    pieces = [body[i : i + args.piece] for i in range(0, len(body), args.piece)]
    codecs = build_codecs(
        cfg.algorithms,
        gzip_level=cfg.gzip_level,
        brotli_quality=cfg.brotli_quality,
        zstd_level=cfg.zstd_level,
    )
    filt = compress_filter(cfg)
    assert filt is not None
    levels = {"gzip": cfg.gzip_level, "br": cfg.brotli_quality, "zstd": cfg.zstd_level}
    print(f"body: {len(body)} bytes of JSON; streamed in {len(pieces)} writes of {args.piece}")
    print(
        f"{'algorithm':<10}{'level':>6}{'whole µs':>10}{'stream µs':>11}{'filter µs':>11}"
        f"{'bytes':>8}{'ratio':>8}"
    )
    for codec in codecs:

        def whole(codec: object = codec) -> bytes:
            return codec.compress(body)  # type: ignore[attr-defined,no-any-return]

        def stream(codec: object = codec) -> None:
            enc = codec.stream()  # type: ignore[attr-defined]
            for p in pieces:
                enc.compress(p)
            enc.finish()

        accept = [("accept-encoding", codec.name)]

        def through_filter(accept: list[tuple[str, str]] = accept) -> None:
            ex = FakeExchange(headers=accept)
            w = filt(ex)
            w.start_response(200, [(b"content-type", b"application/json")])
            w.finish(body)

        size = len(codec.compress(body))
        print(
            f"{codec.name:<10}{levels[codec.name]:>6}"
            f"{per_call_us(whole, args.repeat, args.rounds):>10.1f}"
            f"{per_call_us(stream, args.repeat // 4 or 1, args.rounds):>11.1f}"
            f"{per_call_us(through_filter, args.repeat, args.rounds):>11.1f}"
            f"{size:>8}{size / len(body):>8.3f}"
        )

    def baseline() -> None:
        ex = FakeExchange(headers=[("accept-encoding", "identity")])
        w = filt(ex)
        w.start_response(200, [(b"content-type", b"application/json")])
        w.finish(body)

    def bare() -> None:
        ex = FakeExchange(headers=[("accept-encoding", "identity")])
        ex.start_response(200, [(b"content-type", b"application/json")])
        ex.finish(body)

    def cached() -> None:
        ex = FakeExchange(headers=[("accept-encoding", "gzip")])
        w = filt(ex)
        w.start_response(200, [(b"content-type", b"application/json"), (b"etag", b'"v1"')])
        w.finish(body)

    def bare_gzip() -> None:
        ex = FakeExchange(headers=[("accept-encoding", "gzip")])
        ex.start_response(200, [(b"content-type", b"application/json"), (b"etag", b'"v1"')])
        ex.finish(body)

    hit = per_call_us(cached, args.repeat, args.rounds) - per_call_us(
        bare_gzip, args.repeat, args.rounds
    )
    print(f"the filter when the body has an ETag and is compressed already: {hit:.2f} µs")
    extra = per_call_us(baseline, args.repeat, args.rounds) - per_call_us(
        bare, args.repeat, args.rounds
    )
    print(f"the filter when the client accepts no encoding: {extra:.2f} µs per response")


if __name__ == "__main__":
    main()
