"""The supervisor imports, before it forks, every bastion module a worker needs to start
serving: a module a worker imports after the fork costs that worker private memory
(docs/process.md, "Sharing memory between workers")."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import bastion.process.worker as bastion_worker

APPS = Path(__file__).resolve().parents[1] / "apps"

# Run in a fresh interpreter: this test process has imported most of bastion already.
# It does what a worker does at start-up with the preloaded app (build the site, the
# protocol settings and the access log), after what the supervisor does before the fork.
PROBE = """
import json, sys
from bastion.config.schema import AppConfig, CompressConfig, Config
import bastion.process.supervisor  # (loaded in the supervisor, as everything it imports)
from bastion.process.startup import _import_serving_modules

config = Config(
    app=AppConfig(target="gateway_kinds:wsgi_function", app_dir=sys.argv[1]),
    compress=CompressConfig(enabled=True, algorithms=("zstd", "br", "gzip")),
)
_import_serving_modules(config)
from bastion.gateway.loader import load_app
loaded = load_app(config.app)
before = set(sys.modules)

from bastion.edge.assemble import build_site
from bastion.observe.accesslog import make_access_log
from bastion.protocol.http1 import ProtocolSettings
from bastion.tasks import WorkerTasks

site = build_site(config, loaded, WorkerTasks())
access_log = make_access_log(config.log, [])
ProtocolSettings.from_config(config, access_log=access_log)
ours = ("bastion", "zstandard", "brotli", "_brotli")
print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith(ours))))
"""


def test_a_worker_imports_no_bastion_module_the_supervisor_did_not() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(APPS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    imported_after_fork = json.loads(out.stdout.strip().splitlines()[-1])
    assert imported_after_fork == []


# The modules the worker's start-up code imports inside its functions (its listeners,
# the slow-request log, the metrics recorder, the HTTPS redirect, the TLS handshake
# gate), with every feature that adds one switched on: the supervisor must have imported
# each before the fork.
STARTUP_PROBE = """
import json, sys
from bastion.config.schema import AdminConfig, Config, LogConfig, TLSConfig
import bastion.process.supervisor
from bastion.process.startup import _import_serving_modules

config = Config(
    log=LogConfig(slow_request_ms=100.0),
    admin=AdminConfig(bind="127.0.0.1:0"),
    tls=TLSConfig(redirect_bind=("127.0.0.1:0",)),
)
_import_serving_modules(config)
wanted = json.loads(sys.argv[1])
print(json.dumps(sorted(m for m in wanted if m not in sys.modules)))
"""

WORKER_SOURCE = Path(bastion_worker.__file__).with_suffix(".py")
# the _Worker methods that run between the fork and "ready"
STARTUP_METHODS = {"run", "_reset_process", "_main", "_serve"}


def _startup_imports() -> list[str]:
    tree = ast.parse(WORKER_SOURCE.read_text())
    worker = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "_Worker")
    found = set()
    for method in worker.body:
        if isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef) and (
            method.name in STARTUP_METHODS
        ):
            for node in ast.walk(method):
                if isinstance(node, ast.ImportFrom) and node.module:
                    found.add(node.module)
                elif isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
    return sorted(found)


def test_the_worker_start_up_imports_what_the_supervisor_imported_before_the_fork() -> None:
    wanted = _startup_imports()
    # (the test reads what it means to read: the listeners' modules among them)
    assert "bastion.protocol.handshake" in wanted and "uvloop" in wanted
    out = subprocess.run(
        [sys.executable, "-c", STARTUP_PROBE, json.dumps(wanted)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
