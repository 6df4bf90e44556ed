"""The admin dashboard in a real browser: headless Chromium opens it while a bounded
load runs, and its numbers (requests per second, status totals, per-worker requests)
change from one second to the next. The screenshot is kept in the test's tmp dir."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from admin_tools import admin_url
from server import serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
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


def test_dashboard_shows_live_numbers(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (scripts/system-deps.sh installs it)")
    with serve("admin_app:app", "--workers", "2", "--admin", "127.0.0.1:0") as server:
        admin = admin_url(server)
        stop = threading.Event()
        load = threading.Thread(target=_load, args=(server.url, stop), daemon=True)
        load.start()
        try:
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM,
                    args=[
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-background-networking",
                        "--disable-component-update",
                    ],
                )
                try:
                    page = browser.new_page(viewport={"width": 1200, "height": 900})
                    page.goto(admin + "/", wait_until="load")
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
                finally:
                    browser.close()
        finally:
            stop.set()
            load.join(10)
    assert first != second
    assert "2xx" in second and "4xx" in second
    assert len(rows) == 2 and len(first_rows) == 2
    assert all(r[1] == "ready" for r in rows), rows
    assert sum(int(r[5].replace(",", "")) for r in rows) > 0, rows  # one keep-alive client
    assert state == "ready"
    assert latency is not None and latency.endswith(" ms") and latency[0].isdigit()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
