"""The JSON access log's request id (the client's X-Request-ID, else one made per
request) and its sub-millisecond durations."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from server import serve


def test_request_ids_and_precise_durations(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    args = ("admin_app:app", "--workers", "1", "--access-log", "json")
    with serve(*args, "--access-log-file", str(log)) as server:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            assert client.get("/", headers={"X-Request-ID": "abc-123"}).status_code == 200
            for _ in range(20):
                assert client.get("/").status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = log.read_text().splitlines() if log.exists() else []
            if len(lines) >= 21:
                break
            time.sleep(0.1)
    records = [json.loads(line) for line in lines]
    assert len(records) == 21
    assert records[0]["request_id"] == "abc-123"
    made = [r["request_id"] for r in records[1:]]
    assert len(set(made)) == 20 and all(len(i) >= 16 for i in made)
    assert all(r["route"] is None and r["tls"] is None and r["upstream"] is None for r in records)
    durations = [r["duration_ms"] for r in records]
    assert all(0 < d < 5000 for d in durations), durations
    # to the microsecond, not whole milliseconds (uvloop's clock)
    assert any(d != int(d) for d in durations), durations
