"""The real ``bastion`` command: ``check``, ``serve`` with a bad configuration, ``--version``.

Every test runs ``python -m bastion`` in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from server import BastionProcess, child_env

from bastion import __version__

HELLO_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello from cli test"})
"""


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    full_env = child_env(env, base=clean)
    return subprocess.run(
        [sys.executable, "-m", "bastion", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_check_prints_the_effective_configuration(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text(
        '[app]\ntarget = "hello:app"\n\n[workers]\ncount = 2\nmax_requests = 500\n'
    )
    result = run(
        "check",
        "-c",
        "bastion.toml",
        "--max-requests",
        "900",
        "-b",
        "127.0.0.1:9100",
        "-b",
        "unix:/tmp/x.sock",
        cwd=tmp_path,
        env={"BASTION_LOG__ACCESS": "json"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert out.endswith("configuration OK\n")
    effective = tomllib.loads(out.removesuffix("configuration OK\n"))
    assert effective["app"]["target"] == "hello:app"
    assert effective["workers"]["count"] == 2
    assert effective["workers"]["max_requests"] == 900
    assert effective["server"]["bind"] == ["127.0.0.1:9100", "unix:/tmp/x.sock"]
    assert effective["log"]["access"] == "json"
    assert effective["limits"]["max_header_count"] == 100  # defaults are printed too
    assert "count = 2  # bastion.toml:5" in out
    assert "max_requests = 900  # command line --max-requests" in out
    assert 'access = "json"  # environment variable BASTION_LOG__ACCESS' in out


def test_check_without_a_config_file(tmp_path: Path) -> None:
    result = run("check", "main:app", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'target = "main:app"  # command line APP' in result.stdout


@pytest.mark.parametrize(
    ("toml", "args", "env", "message"),
    [
        pytest.param(
            '[app]\ntarget = "a:b"\n[server]\nbnd = ["127.0.0.1:80"]\n',
            (),
            {},
            "bastion.toml:4: unknown key server.bnd (did you mean server.bind?)",
            id="unknown-key",
        ),
        pytest.param(
            '[limits]\n\nmax_header_count = "abc"\n',
            (),
            {},
            'bastion.toml:3: limits.max_header_count: expected an integer >= 1, got "abc"',
            id="wrong-type",
        ),
        pytest.param(
            "[workers]\ncount = -2\n",
            (),
            {},
            "bastion.toml:2: workers.count: expected an integer >= 0, got -2",
            id="out-of-range",
        ),
        pytest.param(
            '[server]\nbind = ["127.0.0.1:80", "127.0.0.1:http"]\n',
            (),
            {},
            "bastion.toml:2: server.bind[1]: expected a port number 0-65535",
            id="bad-bind",
        ),
        pytest.param(
            "[server\nbind = 1\n",
            (),
            {},
            "bastion.toml:1:8: invalid TOML: ",
            id="toml-syntax",
        ),
        pytest.param(
            None,
            ("-c", "missing.toml"),
            {},
            "missing.toml: config file not found",
            id="missing-file",
        ),
        pytest.param(
            None,
            (),
            {"BASTION_WORKER__COUNT": "2"},
            "environment variable BASTION_WORKER__COUNT: unknown setting "
            "(did you mean BASTION_WORKERS__COUNT?)",
            id="unknown-env",
        ),
        pytest.param(
            None,
            (),
            {"BASTION_WORKERS__TIMEOUT": "soon"},
            "environment variable BASTION_WORKERS__TIMEOUT: workers.timeout: "
            'expected a number > 0, got "soon"',
            id="bad-env-value",
        ),
        pytest.param(
            None,
            ("--workers", "many"),
            {},
            'command line --workers: workers.count: expected an integer >= 0, got "many"',
            id="bad-flag-value",
        ),
        pytest.param(
            None,
            ("nocolon",),
            {},
            "command line APP: app.target: expected MODULE:ATTR",
            id="bad-target",
        ),
    ],
)
def test_check_rejects_bad_configuration(
    tmp_path: Path, toml: str | None, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    argv = ["check", *args]
    if toml is not None:
        (tmp_path / "bastion.toml").write_text(toml)
        argv += ["-c", "bastion.toml"]
    result = run(*argv, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"bastion: error: {message}" in result.stderr
    assert "configuration OK" not in result.stdout
    assert "Traceback" not in result.stderr


def test_check_lists_every_problem(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text('[workers]\ncount = "x"\n[limits]\nmax_body = 1\n')
    result = run("check", "-c", "bastion.toml", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines == [
        'bastion: error: bastion.toml:2: workers.count: expected an integer >= 0, got "x"',
        "bastion: error: bastion.toml:4: unknown key limits.max_body "
        "(did you mean limits.max_body_size?)",
    ]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = run("check", "--interface", "cgi", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'cgi'" in result.stderr
    assert run(cwd=tmp_path).returncode == 2  # no command
    assert run("frobnicate", cwd=tmp_path).returncode == 2


def test_version(tmp_path: Path) -> None:
    result = run("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"bastion {__version__}"


def test_serve_with_bad_configuration_exits_2_before_starting(tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text(HELLO_APP)
    (tmp_path / "bastion.toml").write_text('[app]\ntarget = "hello:app"\n[workers]\ncuont = 1\n')
    started = time.monotonic()
    result = run("serve", "-c", "bastion.toml", "--bind", "127.0.0.1:0", cwd=tmp_path, timeout=20)
    assert result.returncode == 2
    assert time.monotonic() - started < 10
    assert result.stderr.splitlines() == [
        "bastion: error: bastion.toml:4: unknown key workers.cuont (did you mean workers.count?)"
    ]
    assert "listening" not in result.stdout + result.stderr


def test_serve_without_an_app_exits_2(tmp_path: Path) -> None:
    result = run("serve", "--bind", "127.0.0.1:0", cwd=tmp_path, timeout=20)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "bastion: error: no app given: pass MODULE:ATTR or set [app] target in the config file"
    ]


def test_serve_uses_file_environment_and_flags(tmp_path: Path) -> None:
    """The file names the app, the environment sets the Server header, a flag the bind."""
    (tmp_path / "hello.py").write_text(HELLO_APP)
    (tmp_path / "bastion.toml").write_text(
        '[app]\ntarget = "hello:app"\n[server]\nbind = ["127.0.0.1:1"]\n'
        'server_header = "from-file"\n[workers]\ncount = 1\n'
    )
    proc = BastionProcess(
        ["serve", "-c", "bastion.toml", "--bind", "127.0.0.1:0"],
        cwd=tmp_path,
        env={"BASTION_SERVER__SERVER_HEADER": "from-env"},
    )
    with proc:
        response = httpx.get(proc.url + "/", timeout=10)
        assert response.status_code == 200
        assert response.text == "hello from cli test"
        assert response.headers["server"] == "from-env"
        assert proc.host_port[1] not in (0, 1)


@pytest.mark.parametrize("value", ["0", "1"])
def test_check_runs_with_the_build_switch_set(tmp_path: Path, value: str) -> None:
    """BASTION_COMPILE is setup.py's switch (the README's pure install); keeping it set
    in the shell must not stop bastion, nor change or print any setting."""
    result = run("check", "main:app", cwd=tmp_path, env={"BASTION_COMPILE": value})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.endswith("configuration OK\n")
    assert "BASTION_COMPILE" not in result.stdout


def test_serve_runs_with_the_build_switch_set(tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text(HELLO_APP)
    proc = BastionProcess(
        ["serve", "hello:app", "-w", "1", "--bind", "127.0.0.1:0"],
        cwd=tmp_path,
        env={"BASTION_COMPILE": "0"},
    )
    with proc:
        response = httpx.get(proc.url + "/", timeout=10)
        assert response.status_code == 200
        assert response.text == "hello from cli test"
    assert "BASTION_COMPILE" not in proc.log


def test_sighup_reads_the_config_file_again(tmp_path: Path) -> None:
    """A bad edit is reported and ignored; a good one is served after the reload."""
    (tmp_path / "hello.py").write_text(HELLO_APP)
    config = tmp_path / "bastion.toml"
    config.write_text('[app]\ntarget = "hello:app"\n[server]\nserver_header = "first"\n')
    with BastionProcess(
        ["serve", "-c", "bastion.toml", "-w", "1", "-b", "127.0.0.1:0"], cwd=tmp_path
    ) as proc:
        assert httpx.get(proc.url, timeout=10).headers["server"] == "first"

        config.write_text('[app]\ntarget = "hello:app"\n[server]\nserver_headr = "x"\n')
        mark = len(proc.log)
        proc.signal(signal.SIGHUP)
        proc.wait_for_log(r"bastion\.toml:4: unknown key server\.server_headr", start=mark)
        assert httpx.get(proc.url, timeout=10).headers["server"] == "first"

        config.write_text('[app]\ntarget = "hello:app"\n[server]\nserver_header = "second"\n')
        proc.signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        seen = "first"
        while seen != "second" and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = httpx.get(proc.url, timeout=10).headers["server"]
        assert seen == "second", proc.log
