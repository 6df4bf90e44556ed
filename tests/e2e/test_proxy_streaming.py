"""The proxy streams bodies both ways with backpressure: a large upload and download
through ``bastion serve --proxy`` (a proxy-only site, no app) keep the worker's memory
bounded while the far side stalls."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from proc_tools import child_pids
from server import BastionProcess

MIB = 1024 * 1024
SIZE_MIB = 256
# what the proxy worker may grow by while moving SIZE_MIB each way: buffers of a few
# transports and chunks; without backpressure it would hold most of the body
BOUND = 48 * MIB
NO_LIMIT = {"BASTION_LIMITS__MAX_BODY_SIZE": "0"}


def rss(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[BastionProcess, int]]:
    with (
        BastionProcess(
            ["serve", "proxy_stream:app", "--bind", "127.0.0.1:0", "--workers", "1"], env=NO_LIMIT
        ) as backend,
        BastionProcess(
            ["serve", "--proxy", f"/={backend.url}", "--bind", "127.0.0.1:0", "--workers", "1"],
            env=NO_LIMIT,
        ) as proxy,
    ):
        (worker,) = child_pids(proxy.pid)
        httpx.get(proxy.url + "/download/1")  # warm up: imports, first connection
        yield proxy, worker


def test_large_download_with_a_stalled_client_keeps_memory_bounded(
    chain: tuple[BastionProcess, int],
) -> None:
    proxy, worker = chain
    before = rss(worker, "VmRSS")
    with httpx.stream("GET", f"{proxy.url}/download/{SIZE_MIB}", timeout=60) as r:
        assert r.status_code == 200
        time.sleep(1.5)  # the client takes nothing: the upstream must be held back
        stalled = rss(worker, "VmRSS")
        received = sum(len(c) for c in r.iter_raw(MIB))
    assert received == SIZE_MIB * MIB
    assert stalled - before < BOUND, (stalled - before) / MIB
    assert rss(worker, "VmHWM") - before < BOUND, (rss(worker, "VmHWM") - before) / MIB


def test_large_upload_to_a_stalled_upstream_keeps_memory_bounded(
    chain: tuple[BastionProcess, int],
) -> None:
    proxy, worker = chain
    before = rss(worker, "VmRSS")
    chunk = b"u" * MIB

    def body() -> Iterator[bytes]:
        for _ in range(SIZE_MIB):
            yield chunk

    # the upstream reads nothing for 1.5 s: the proxy must stop reading the client
    r = httpx.post(f"{proxy.url}/upload?wait=1.5", content=body(), timeout=60)
    assert r.status_code == 200
    assert r.text == str(SIZE_MIB * MIB)
    assert rss(worker, "VmHWM") - before < BOUND, (rss(worker, "VmHWM") - before) / MIB
