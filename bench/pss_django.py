"""Total PSS of four workers serving the Django test project (tests/e2e/apps/fw_django):
bastion --preload against gunicorn --preload (sync workers, from bench/.peers).

    .venv/bin/python bench/pss_django.py

On Python 3.12 and 3.13 bastion is measured with workers.immortalize on (the default)
and off. Run it with another Python by pointing PEERS_VENV at a venv of that Python
with gunicorn installed (bench/.peers is Python 3.11):

    python3.12 -m venv /tmp/peers-3.12 && /tmp/peers-3.12/bin/pip install gunicorn
    PEERS_VENV=/tmp/peers-3.12 .venv-3.12/bin/python bench/pss_django.py

PSS counts each page shared between processes for its share, so the PSS of the
supervisor and its workers adds up to the memory they really take together.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from bastion.process.immortal import supported

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "e2e" / "apps"
# bench/.peers (see bench/README.md); PEERS_VENV points elsewhere (a worktree)
PEERS = Path(os.environ.get("PEERS_VENV", ROOT / "bench" / ".peers")) / "bin"
BASTION_ARGS = ["--workers", "4", "--preload", "--bind", "127.0.0.1:18741"]
GUNICORN_ARGS = ["--preload", "-w", "4", "-b", "127.0.0.1:18742"]


def pss_kib(pid: int, field: str = "Pss:") -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry))
    return found


def get(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/json", headers={"Connection": "close"})
    conn.getresponse().read()
    conn.close()


def measure(name: str, argv: list[str], env: dict[str, str], port: int) -> int:
    proc = subprocess.Popen(
        argv, env=env, cwd=APPS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(300):
            try:
                get(port)
                if len(children(proc.pid)) >= 4:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        time.sleep(1)
        for _ in range(400):  # every worker serves some requests
            get(port)
        time.sleep(1)
        workers = children(proc.pid)
        sizes = [pss_kib(w) / 1024 for w in workers]
        total = pss_kib(proc.pid) + sum(pss_kib(w) for w in workers)
        # the anonymous part alone (heap, Python's objects): the file-backed part (code
        # of libpython and the extension modules) is shared with any other process of
        # the machine mapping the same files, so it moves with what else runs
        anon = sum(pss_kib(p, "Pss_Anon:") for p in [proc.pid, *workers])
        private = [pss_kib(w, "Private_Dirty:") / 1024 for w in workers]
        print(
            f"{name}: supervisor {pss_kib(proc.pid) / 1024:.1f} MiB, workers "
            f"{', '.join(f'{s:.1f}' for s in sizes)} MiB, total {total / 1024:.1f} MiB "
            f"(anonymous {anon / 1024:.1f} MiB; private dirty per worker "
            f"{', '.join(f'{s:.1f}' for s in private)} MiB)"
        )
        return total
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="fw_django.settings")
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and p != here)
    argv = [sys.executable, "-m", "bastion", "serve", "fw_django.wsgi:application"]
    mortal = 0
    if supported():
        mortal = measure(
            "bastion --preload, workers.immortalize off",
            [*argv, *BASTION_ARGS],
            dict(env, BASTION_WORKERS__IMMORTALIZE="false"),
            18741,
        )
    bastion = measure("bastion --preload", [*argv, *BASTION_ARGS], env, 18741)
    # gunicorn from its own venv, with this interpreter's Django
    genv = dict(env, PYTHONPATH=sysconfig.get_paths()["purelib"])
    gunicorn = measure(
        "gunicorn --preload",
        [str(PEERS / "gunicorn"), *GUNICORN_ARGS, "fw_django.wsgi:application"],
        genv,
        18742,
    )
    print(f"bastion / gunicorn = {bastion / gunicorn:.2f}")
    if mortal:
        print(f"bastion, workers.immortalize off / gunicorn = {mortal / gunicorn:.2f}")


if __name__ == "__main__":
    main()
