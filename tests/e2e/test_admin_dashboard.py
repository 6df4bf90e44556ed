"""The admin dashboard in a real browser: headless Chromium opens it while a bounded
load runs, and its numbers (requests per second, status totals, per-worker requests)
change from one second to the next; with a proxy route, the upstream panel lists the
backend with its state and counts, and the TLS and WebSocket panels are drawn. The
screenshots are kept in the test's tmp dir."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from admin_tools import admin_url
from browser import chromium, need_chromium
from server import BastionProcess, serve

LOAD_SECONDS = 20.0  # at most; the test stops the load as soon as it is done
LOAD_REQUESTS = 20_000


def _load(url: str, stop: threading.Event) -> None:
    deadline = time.monotonic() + LOAD_SECONDS
    with httpx.Client(base_url=url, timeout=5) as client:
        for i in range(LOAD_REQUESTS):
            if stop.is_set() or time.monotonic() > deadline:
                return
            client.get("/status/404" if i % 10 == 0 else "/")
            time.sleep(0.002)


@contextmanager
def dashboard(admin: str, site: str, height: int) -> Iterator[Any]:
    """The dashboard at ``admin`` open in headless Chromium while a bounded load runs
    against ``site``: the page; afterwards the browser is closed and the load stopped."""
    stop = threading.Event()
    load = threading.Thread(target=_load, args=(site, stop), daemon=True)
    load.start()
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1200, "height": height})
            page.goto(admin + "/", wait_until="load")
            yield page
    finally:
        stop.set()
        load.join(10)


def test_dashboard_shows_live_numbers(tmp_path: Path) -> None:
    need_chromium()  # (before the server starts)
    with (
        serve("admin_app:app", "--workers", "2", "--admin", "127.0.0.1:0") as server,
        dashboard(admin_url(server), server.url, height=900) as page,
    ):
        page.wait_for_function(
            "parseFloat($('rps').textContent.replace(/,/g, '')) > 0".replace(
                "$", "document.getElementById"
            ),
            timeout=15_000,
        )
        first = page.text_content("#statuses")
        first_rows = page.eval_on_selector_all(
            "#workers tr", "rows => rows.map(r => r.textContent)"
        )
        page.wait_for_function(
            f"document.getElementById('statuses').textContent !== {first!r}",
            timeout=10_000,
        )
        second = page.text_content("#statuses")
        rows = page.eval_on_selector_all(
            "#workers tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
        )
        state = page.text_content("#state")
        latency = page.text_content("#lat")
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    assert first != second
    assert "2xx" in second and "4xx" in second
    assert len(rows) == 2 and len(first_rows) == 2
    assert all(r[1] == "ready" for r in rows), rows
    assert sum(int(r[5].replace(",", "")) for r in rows) > 0, rows  # one keep-alive client
    assert state == "ready"
    assert latency is not None and latency.endswith(" ms") and latency[0].isdigit()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


def test_dashboard_shows_the_upstream_tls_and_websocket_panels(tmp_path: Path) -> None:
    need_chromium()  # (before the servers start)
    with serve("admin_app:app", "--workers", "1") as backend:
        host, port = backend.host_port
        config = tmp_path / "edge.toml"
        config.write_text(
            f'[upstreams.app]\nservers = ["{host}:{port}"]\n\n'
            '[[routes]]\npath = "/"\nproxy = { upstream = "app" }\n'
        )
        argv = ["serve", "-c", str(config), "--bind", "127.0.0.1:0", "--workers", "1"]
        with (
            BastionProcess([*argv, "--admin", "127.0.0.1:0"]) as edge,
            dashboard(admin_url(edge), edge.url, height=1100) as page,
        ):
            page.wait_for_function(
                "(() => { const r = document.querySelector('#upstreams tr');"
                " return r && parseFloat(r.cells[4].textContent.replace(/,/g, ''))"
                " > 0 && parseFloat(r.cells[3].textContent) > 0; })()",
                timeout=15_000,
            )
            rows = page.eval_on_selector_all(
                "#upstreams tr",
                "rows => rows.map(r => [...r.cells].map(c => c.textContent))",
            )
            hidden = page.eval_on_selector("#upstream-panel", "e => e.hidden")
            tls = page.text_content("#tls")
            ws = page.text_content("#ws")
            page.screenshot(path=str(tmp_path / "upstreams.png"), full_page=True)
    assert not hidden
    assert len(rows) == 1, rows
    upstream, server, state, rps, requests, failures, in_flight, latency = rows[0]
    assert (upstream, server, state) == ("app", f"{host}:{port}", "up")
    assert float(rps.replace(",", "")) > 0 and int(requests.replace(",", "")) > 0
    assert failures == "0" and in_flight.isdigit()
    assert latency.endswith(" ms") and float(latency[:-3]) > 0
    assert tls is not None and tls.startswith("handshakes") and "· 0in progress0" in tls
    assert tls.endswith("waiting0refused0evicted0failed0")
    assert ws is not None and "open" in ws and "ended" in ws
