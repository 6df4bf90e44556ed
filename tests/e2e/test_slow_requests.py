"""log.slow_request_ms: slow responses are reported in the error log, fast ones not."""

from __future__ import annotations

import re

import pytest
from proc_tools import get, pid_of, wait_until
from server import serve


@pytest.mark.parametrize("access", ["off", "json"])
def test_slow_requests_are_logged_with_their_time_and_worker(access: str) -> None:
    env = {"BASTION_LOG__SLOW_REQUEST_MS": "300"}
    with serve("proc_app:app", "--workers", "1", "--access-log", access, env=env) as srv:
        status, body = get(srv.url)
        assert status == 200
        worker = pid_of(body)
        assert get(srv.url, "/slow?s=0.5")[0] == 200
        wait_until(lambda: "slow request:" in srv.log, 10, "the slow-request line")
        m = re.search(
            r"WARNING slow request: GET (\S+) -> 200, ([\d.]+) ms, (\d+) bytes \(worker (\d+)\)",
            srv.log,
        )
        assert m is not None, srv.log
        assert m.group(1) == "/slow?s=0.5"
        assert 450 <= float(m.group(2)) < 5000
        assert int(m.group(4)) == worker
        assert srv.log.count("slow request:") == 1  # the fast one is not reported
        if access == "json":  # the access log still writes every line (from its thread)
            wait_until(lambda: '"path":"/slow"' in srv.log, 10, "the access-log line")
        assert srv.stop() == 0
