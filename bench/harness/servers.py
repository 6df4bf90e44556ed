"""How each server is started, watched (RSS of its process tree) and stopped."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import http.client
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.procfs import process_tree
from harness.workloads import POST_BODY, WSGI_THREADS, Workload

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
APPS = BENCH / "apps"
RESULTS = BENCH / "results"
PEERS = BENCH / ".peers"
PEERS_REQUIREMENTS = BENCH / "peers-requirements.txt"
PROJECT_PY = ROOT / ".venv" / "bin" / "python"
HOST = "127.0.0.1"
SERVER_CPU = 0
CLIENT_CPU = 1

START_TIMEOUT = 30.0  # seconds for a server to import its app and answer
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL


# -- servers ------------------------------------------------------------------------------


def server_command(server: str, w: Workload, port: int) -> list[str]:
    """The command line that starts ``server`` with one worker on ``port`` for ``w``."""
    peers_bin = PEERS / "bin"
    if server == "bastion":
        cmd = [str(PROJECT_PY), "-m", "bastion", "serve", w.target, "--workers", "1"]
        cmd += ["--bind", f"{HOST}:{port}", "--interface", w.interface, "--log-level", "warning"]
        if w.bastion_config:
            cmd += ["--config", str(APPS / w.bastion_config)]
        if w.interface == "wsgi":
            mode = ["threads", "--threads", str(WSGI_THREADS)] if w.threads else ["inline"]
            cmd += ["--wsgi-mode", *mode]
        return cmd
    if w.peer_target:
        w = dataclasses.replace(w, target=w.peer_target)
    if server == "ceiling":
        return [
            *(str(PROJECT_PY), str(BENCH / "ceiling.py"), "--interface", w.interface),
            *("--host", HOST, "--port", str(port), w.target),
        ]
    if server == "uvicorn":
        return [
            *(str(peers_bin / "uvicorn"), w.target, "--host", HOST, "--port", str(port)),
            *("--loop", "uvloop", "--http", "httptools", "--no-access-log"),
            *("--log-level", "warning"),
        ]
    if server == "granian":
        cmd = [str(peers_bin / "granian"), "--interface", w.interface, "--workers", "1"]
        cmd += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
        if w.threads:
            cmd += ["--blocking-threads", str(WSGI_THREADS)]
        return [*cmd, w.target]
    if server == "gunicorn":
        return [
            *(str(peers_bin / "gunicorn"), "--workers", "1", "--worker-class", "gthread"),
            *("--threads", str(WSGI_THREADS), "--bind", f"{HOST}:{port}"),
            *("--log-level", "warning", w.target),
        ]
    if server == "hypercorn":
        return [
            *(str(peers_bin / "hypercorn"), "--workers", "1", "--worker-class", "uvloop"),
            *("--bind", f"{HOST}:{port}", "--log-level", "warning"),
            f"{w.interface}:{w.target}",
        ]
    if server == "waitress":
        cmd = [str(peers_bin / "waitress-serve"), f"--listen={HOST}:{port}"]
        if w.threads:
            cmd.append(f"--threads={WSGI_THREADS}")
        return [*cmd, w.target]
    raise ValueError(f"unknown server {server!r}")


def server_env(server: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    paths = [str(APPS)]
    if server == "bastion":
        paths.append(str(ROOT / "src"))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# -- processes ----------------------------------------------------------------------------


_live: set[subprocess.Popen[bytes]] = set()


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_all() -> None:
    for proc in list(_live):
        _kill_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2)
        _live.discard(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            s.settimeout(0.5)
            try:
                s.connect((HOST, port))
            except ConnectionRefusedError:
                return True
            except OSError:
                pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def probe(w: Workload, port: int) -> str | None:
    """One request like the workload's; None if the answer is right, else what was wrong."""
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        if w.post:
            headers = {"Content-Type": "application/octet-stream"}
            conn.request("POST", "/", body=POST_BODY, headers=headers)
        elif w.accept_encoding:
            conn.request("GET", "/", headers={"Accept-Encoding": w.accept_encoding})
        else:
            conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        return f"status {resp.status}: {body[:200]!r}"
    if w.accept_encoding:
        encoding = resp.getheader("content-encoding", "")
        if encoding != w.accept_encoding:
            return f"Content-Encoding {encoding!r}, expected {w.accept_encoding!r}"
        body = gzip.decompress(body)
    if not w.expect(body):
        return f"unexpected body: {body[:200]!r}"
    return None


def pinned(cpu: int, nice: int, cmd: list[str]) -> list[str]:
    """``cmd`` run on ``cpu`` only, at niceness ``nice`` (below 0 needs root)."""
    return ["taskset", "-c", str(cpu), *(["nice", "-n", str(nice)] if nice else []), *cmd]


def renice_session(pid: int, nice: int) -> bool:
    """Give the scheduler autogroup of ``pid``'s session the niceness ``nice``.

    Where the kernel groups tasks by session (``sched_autogroup``), a process's own nice
    value only ranks it within its session: weighing against other sessions' processes
    takes the group's niceness. True if it was set (or there are no autogroups).
    """
    path = Path(f"/proc/{pid}/autogroup")
    if not path.exists():
        return True
    try:
        path.write_text(str(nice))
    except OSError:
        return False
    return True


@dataclass
class Server:
    """One running server, started in its own session so the whole tree can be killed."""

    name: str
    cmd: list[str]
    port: int
    log_path: Path
    nice: int = 0
    proc: subprocess.Popen[bytes] | None = None
    seen: set[int] = field(default_factory=set)

    def start(self) -> int:
        """Start the server; its pid."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                pinned(SERVER_CPU, self.nice, self.cmd),
                cwd=APPS,
                env=server_env(self.name),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _live.add(self.proc)
        if self.nice:
            renice_session(self.proc.pid, self.nice)
        return self.proc.pid

    def wait_ready(self, w: Workload) -> None:
        if self.proc is None:
            raise RuntimeError("not started")
        deadline = time.monotonic() + START_TIMEOUT
        problem = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with status {self.proc.returncode}")
            try:
                wrong = probe(w, self.port)
            except (OSError, http.client.HTTPException) as exc:
                problem = f"no answer ({exc.__class__.__name__})"
            else:
                if wrong is None:
                    self.seen.update(process_tree(self.proc.pid))
                    return
                problem = wrong
            time.sleep(0.1)
        raise RuntimeError(f"not ready after {START_TIMEOUT:.0f} s: {problem}")

    def stop(self) -> bool:
        """Stop the tree (SIGTERM, then SIGKILL); True if the port is free afterwards."""
        if self.proc is None:
            return True
        self.seen.update(process_tree(self.proc.pid))
        _kill_group(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc, signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)
        _live.discard(self.proc)
        for pid in self.seen:  # a child that left the process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return port_is_free(self.port, STOP_TIMEOUT)

    def exited(self) -> int | None:
        """The exit status if the server has stopped by itself, else None."""
        return None if self.proc is None else self.proc.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
