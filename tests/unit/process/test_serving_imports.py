"""The supervisor imports, before it forks, every bastion module a worker needs to start
serving: a module a worker imports after the fork costs that worker private memory
(docs/process.md, "Sharing memory between workers")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
