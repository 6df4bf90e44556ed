"""The environment of a run: the peers' virtualenv, tools, versions and the machine."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

from harness.servers import (
    CLIENT_CPU,
    PEERS,
    PEERS_REQUIREMENTS,
    PROJECT_PY,
    ROOT,
    SERVER_CPU,
    server_env,
)

# -- environment ----------------------------------------------------------------------------


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_peers() -> None:
    """Create bench/.peers from peers-requirements.txt once; reuse it while unchanged."""
    stamp = PEERS / ".requirements.sha256"
    want = _hash(PEERS_REQUIREMENTS)
    if (PEERS / "bin" / "python").exists() and stamp.exists() and stamp.read_text() == want:
        return
    print(f"installing the peer servers into {PEERS.relative_to(ROOT)} ...", flush=True)
    if not (PEERS / "bin" / "python").exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(PEERS)
    pip = [str(PEERS / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-r", str(PEERS_REQUIREMENTS)], check=True, timeout=900)
    stamp.write_text(want)


def bastion_available() -> str | None:
    """None if ``bastion serve`` can run from the project's venv, else why not."""
    if not PROJECT_PY.exists():
        return f"{PROJECT_PY} missing (run `make` first)"
    proc = subprocess.run(
        [str(PROJECT_PY), "-m", "bastion", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env("bastion"),
        check=False,
    )
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _versions(python: Path, packages: tuple[str, ...], server: str) -> dict[str, str]:
    if not python.exists():  # the peers' virtualenv when no peer was asked for
        return {}
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [str(python), "-c", code, *packages],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(server),
        check=False,
    )
    try:
        return dict(json.loads(proc.stdout))
    except ValueError:
        return {}


def versions() -> dict[str, Any]:
    common = ("uvloop", "httptools", "fastapi", "starlette", "flask")
    peers = ("uvicorn", "granian", "gunicorn", "hypercorn", "waitress", *common)
    git = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "bastion": {
            **_versions(PROJECT_PY, ("bastion", *common), "bastion"),
            "git": git,
            **bastion_build(),
        },
        "peers": _versions(PEERS / "bin" / "python", peers, "peers"),
        "wrk": (wrk.stdout + wrk.stderr).split("Copyright")[0].strip(),
    }


def source_tree() -> dict[str, Any]:
    """The commit measured and whether the working tree differed from it: ``dirty`` when
    any tracked file was changed (``git status``; untracked files do not count), with the
    changed paths, so that a figure can be traced to the code that made it."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    status = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    return {
        "commit": commit,
        "dirty": bool(changed) or status.returncode != 0,
        "changed": changed[:50],
    }


def bastion_build() -> dict[str, list[str]]:
    """Which of bastion's modules are compiled extensions (an extension module beside its
    source is what Python imports), and which of those are older than their source."""
    package = ROOT / "src" / "bastion"
    compiled, stale = [], []
    for ext in sorted(package.rglob("*.so")):
        source = ext.with_name(ext.name.split(".", 1)[0] + ".py")
        module = ".".join(source.relative_to(package.parent).with_suffix("").parts)
        compiled.append(module)
        if source.exists() and source.stat().st_mtime > ext.stat().st_mtime:
            stale.append(module)
    return {"compiled_modules": compiled, "stale_compiled_modules": stale}


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, IndexError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "memory": mem,
        "python": platform.python_version(),
        "hostname": platform.node(),
    }


def preflight() -> None:
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(
            f"bench: missing {', '.join(missing)} (`make system-deps`; taskset is in util-linux)"
        )
    cpus = os.sched_getaffinity(0)
    if not {SERVER_CPU, CLIENT_CPU} <= cpus:
        sys.exit(f"bench: needs CPUs {SERVER_CPU} and {CLIENT_CPU}; this process may use {cpus}")
