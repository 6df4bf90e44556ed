"""A page whose script talks WebSocket to a FastAPI route, for tests/e2e/test_websocket_browser.py.

``GET /`` is the page; its script opens ``/ws/chat``, sends two text messages (one not
ASCII), one binary message and ``bye``, and lists what comes back in ``#log``; when the
socket closes it writes the close code and reason in ``#status``. The route greets with
the ``Origin`` the browser sent, echoes text as ``echo: ...`` and binary reversed, and
closes with 4001 "done" on ``bye``.
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket
from fastapi.responses import HTMLResponse

app = FastAPI()

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ws</title></head>
<body>
<ol id="log"></ol>
<p id="status">connecting</p>
<script>
const log = document.getElementById("log");
const status = document.getElementById("status");
function show(text) {
  const li = document.createElement("li");
  li.textContent = text;
  log.appendChild(li);
}
const ws = new WebSocket(`ws://${location.host}/ws/chat`);
ws.binaryType = "arraybuffer";
let step = 0;
ws.onopen = () => { status.textContent = "open"; };
ws.onmessage = (event) => {
  if (typeof event.data === "string") {
    show(event.data);
  } else {
    show("bytes " + Array.from(new Uint8Array(event.data)).join(","));
  }
  step += 1;
  if (step === 1) ws.send("hello");
  else if (step === 2) ws.send("wörld ✓");
  else if (step === 3) ws.send(new Uint8Array([1, 2, 3, 250]).buffer);
  else if (step === 4) ws.send("bye");
};
ws.onerror = () => { show("error"); };
ws.onclose = (event) => {
  status.textContent = `closed ${event.code} ${event.reason} clean=${event.wasClean}`;
};
</script>
</body></html>
"""


@app.get("/")
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE)


@app.websocket("/ws/{room}")
async def chat(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    await websocket.send_text(f"welcome to {room} from {websocket.headers.get('origin')}")
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text == "bye":
            await websocket.close(code=4001, reason="done")
            return
        if text is not None:
            await websocket.send_text(f"echo: {text}")
        else:
            await websocket.send_bytes(bytes(reversed(message.get("bytes") or b"")))
