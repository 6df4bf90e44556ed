"""WebSocket in a real browser: headless Chromium loads a page served by bastion whose
script talks to a FastAPI WebSocket route (tests/e2e/apps/ws_browser.py); the test reads
what the page shows."""

from __future__ import annotations

from browser import chromium, need_chromium
from server import serve


def test_page_exchanges_messages_over_websocket() -> None:
    need_chromium()  # (before the server starts)
    with serve("ws_browser:app", "--workers", "1") as server, chromium() as browser:
        page = browser.new_page()
        socket_errors: list[str] = []
        page.on(
            "websocket", lambda ws: ws.on("socketerror", lambda e: socket_errors.append(str(e)))
        )
        page.goto(server.url + "/", wait_until="load")
        page.wait_for_function(
            "document.getElementById('status').textContent.startsWith('closed')",
            timeout=10_000,
        )
        status = page.text_content("#status")
        items = page.eval_on_selector_all("#log li", "els => els.map(e => e.textContent)")
    assert status == "closed 4001 done clean=true"
    assert items == [
        f"welcome to chat from {server.url}",
        "echo: hello",
        "echo: wörld ✓",
        "bytes 250,3,2,1",
    ]
    assert not socket_errors
