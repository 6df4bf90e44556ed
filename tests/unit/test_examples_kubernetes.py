"""examples/kubernetes: the manifests parse, and what they say matches bastion: the
probe paths are the admin listener's, the ports are the ones the configuration in the
image and the Deployment binds, every BASTION_ variable is a real key with a valid
value, and the grace period covers the whole stop."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bastion.config.binds import parse_bind
from bastion.config.keys import KEYS
from bastion.config.load import load_config
from bastion.process.supervisor import SHUTDOWN_GRACE

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"
ENV_KEYS = {key.env: path for path, key in KEYS.items()}


def manifests() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((FOLDER / "deployment.yaml").read_text()))
    return {doc["kind"]: doc for doc in docs}


def dockerfile_env() -> dict[str, str]:
    # comment lines are dropped, even inside a continued instruction (as Docker does)
    lines = [ln for ln in (FOLDER / "Dockerfile").read_text().splitlines()]
    text = "\n".join(ln for ln in lines if not ln.strip().startswith("#"))
    env: dict[str, str] = {}
    for instruction in text.replace("\\\n", " ").splitlines():
        if instruction.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", instruction))
    return env


def container_env() -> dict[str, str]:
    container = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"]}


def test_every_variable_is_a_key_and_the_whole_configuration_loads() -> None:
    env = {**dockerfile_env(), **container_env()}
    bastion_env = {k: v for k, v in env.items() if k.startswith("BASTION_")}
    unknown = sorted(set(bastion_env) - set(ENV_KEYS))
    assert not unknown, unknown
    # the token file is mounted in the pod; here any readable file stands in for it
    bastion_env["BASTION_ADMIN__TOKEN_FILE"] = __file__
    config = load_config(file=None, env=bastion_env, cli={"app.target": "myproject.asgi:app"})
    assert config.admin.bind


def test_probes_and_ports_match_bastion() -> None:
    env = {**dockerfile_env(), **container_env()}
    site_port = parse_bind(env["BASTION_SERVER__BIND"]).port
    admin_port = parse_bind(env["BASTION_ADMIN__BIND"]).port
    deployment = manifests()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": site_port, "admin": admin_port}
    for probe, path in (
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/readyz"),
        ("livenessProbe", "/livez"),
    ):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == admin_port, probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == admin_port
    assert annotations["prometheus.io/path"] == "/metrics"
    exposed = re.search(r"^EXPOSE (.+)$", (FOLDER / "Dockerfile").read_text(), re.MULTILINE)
    assert exposed is not None
    assert {int(p) for p in exposed.group(1).split()} == {site_port, admin_port}
    service = manifests()["Service"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]  # never the admin


def test_grace_period_covers_the_whole_stop() -> None:
    env = container_env()
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = (
        pre_stop
        + float(env["BASTION_WORKERS__DRAIN_DELAY"])
        + float(env["BASTION_WORKERS__GRACEFUL_TIMEOUT"])
        + SHUTDOWN_GRACE
    )
    assert pod["terminationGracePeriodSeconds"] >= needed
