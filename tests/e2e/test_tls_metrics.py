"""The TLS handshake gate in /metrics (docs/operations.md): handshakes in progress and
waiting for a slot under tls.max_handshakes, and the connections refused, the
handshakes evicted and those that failed, counters that survive the worker."""

from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack

import pytest
from admin_tools import admin_url, metrics, sample, wait_until
from server import serve
from test_tls import Certs, connect, port_of, request, tls_args
from test_tls_handshakes import stall

STALLED = 10
GAUGES = ("bastion_tls_handshakes_in_progress", "bastion_tls_handshakes_waiting")
COUNTERS = (
    "bastion_tls_handshakes_refused_total",
    "bastion_tls_handshakes_evicted_total",
    "bastion_tls_handshakes_failed_total",
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls-metrics"))


def test_stalled_handshakes_move_the_gauges_and_counters(certs: Certs) -> None:
    # two slots; a waiting connection gets one when the oldest stalled handshake turns a
    # second old and is cut, or is closed after 2.5 s; a handshake times out after 3 s
    env = {
        "BASTION_TLS__MAX_HANDSHAKES": "2",
        "BASTION_TLS__HANDSHAKE_WAIT": "2.5",
        "BASTION_TLS__HANDSHAKE_TIMEOUT": "3",
    }
    args = tls_args(certs, "--workers", "1", "--admin", "127.0.0.1:0")
    with serve("tls_apps:asgi_app", *args, env=env) as srv, ExitStack() as stack:
        admin = admin_url(srv)
        port = port_of(srv.url)
        found = metrics(admin)
        for name in (*GAUGES, *COUNTERS):
            assert (name, ()) in found, name
            assert sample(found, name) == 0, name
        stalled = [stack.enter_context(stall(port)) for _ in range(STALLED)]
        # every second two stalled handshakes are cut and two waiting ones start
        seen = {name: 0.0 for name in GAUGES}

        def busy() -> bool:
            found = metrics(admin)
            for name in GAUGES:
                seen[name] = max(seen[name], sample(found, name))
            return seen[GAUGES[0]] == 2 and seen[GAUGES[1]] >= 2

        assert wait_until(busy, 5, every=0.2), seen
        assert seen[GAUGES[0]] == 2, "never more than tls.max_handshakes in progress"

        # each stalled connection ends one way: evicted for a newcomer, refused after its
        # wait, or failed at the handshake timeout
        def settled() -> bool:
            found = metrics(admin)
            return sum(sample(found, name) for name in COUNTERS) == STALLED and not any(
                sample(found, name) for name in GAUGES
            )

        assert wait_until(settled, 20, every=0.3), metrics(admin)
        found = metrics(admin)
        evicted, refused, failed = (sample(found, name) for name in COUNTERS)
        assert evicted >= 2 and refused >= 1 and failed >= 1, (evicted, refused, failed)
        assert sample(found, "bastion_tls_handshakes_total") == 0
        for sock in stalled:
            sock.close()

        # a real client: a completed handshake, no failure
        with connect(port, certs.client_context()) as sock:
            assert request(sock)[0] == 200
        assert wait_until(lambda: sample(metrics(admin), "bastion_tls_handshakes_total") == 1)
        assert sample(metrics(admin), "bastion_tls_handshakes_failed_total") == failed

        # the worker dies: its counts stay, folded into those of exited workers
        (pid,) = {
            int(dict(labels)["worker"])
            for (name, labels), _ in found.items()
            if name == "bastion_worker_age_seconds"
        }
        os.kill(pid, signal.SIGKILL)

        def replaced() -> bool:
            found = metrics(admin)
            workers = [
                dict(labels)["worker"]
                for (name, labels), _ in found.items()
                if name == "bastion_worker_age_seconds"
            ]
            return workers != [str(pid)] and sample(found, "bastion_workers", state="ready") == 1

        assert wait_until(replaced, 20), metrics(admin)
        time.sleep(1.2)  # a sample of the new worker
        after = metrics(admin)
        assert [sample(after, name) for name in COUNTERS] == [evicted, refused, failed]
        assert sample(after, "bastion_tls_handshakes_total") == 1
