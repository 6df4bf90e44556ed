"""Every kind of configuration mistake gives a message that names where and what."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from bastion.config.errors import ConfigError
from bastion.config.load import load_config


def problems(
    tmp_path: Path,
    text: str | None = None,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, object] | None = None,
    flags: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    file = None
    if text is not None:
        (tmp_path / "bastion.toml").write_text(text)
        file = "bastion.toml"
    # chdir so the file is named as a user would type it
    with pytest.raises(ConfigError) as err, pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        load_config(file=file, env=env or {}, cli=cli or {}, cli_flags=flags)
    assert err.value.exit_code == 2
    return err.value.problems


def test_unknown_key_with_suggestion_and_line(tmp_path: Path) -> None:
    text = '[app]\ntarget = "a:b"\n\n[server]\n# where\nbnd = ["127.0.0.1:80"]\n'
    assert problems(tmp_path, text) == (
        "bastion.toml:6: unknown key server.bnd (did you mean server.bind?)",
    )


def test_unknown_key_that_belongs_to_another_section(tmp_path: Path) -> None:
    assert problems(tmp_path, "[server]\ngraceful_timeout = 3\n") == (
        "bastion.toml:2: unknown key server.graceful_timeout "
        "(did you mean workers.graceful_timeout?)",
    )


def test_unknown_key_without_a_close_match_lists_the_keys(tmp_path: Path) -> None:
    (msg,) = problems(tmp_path, "[timeouts]\nzzz = 1\n")
    assert msg == (
        "bastion.toml:2: unknown key timeouts.zzz "
        "(the keys of [timeouts] are header, body, keepalive, send, min_body_rate, "
        "min_send_rate, rate_grace)"
    )


def test_unknown_section(tmp_path: Path) -> None:
    assert problems(tmp_path, "\n[workrs]\ncount = 2\n") == (
        "bastion.toml:2: unknown section [workrs] (did you mean [workers]?)",
    )


def test_top_level_key_that_belongs_in_a_section(tmp_path: Path) -> None:
    assert problems(tmp_path, 'bind = ["127.0.0.1:80"]\n') == (
        "bastion.toml:1: unknown key bind (did you mean server.bind?)",
    )


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert problems(tmp_path, "workers = 4\n") == (
        "bastion.toml:1: workers: expected a table [workers], got 4",
    )


def test_wrong_type_with_line(tmp_path: Path) -> None:
    text = '[limits]\nmax_request_line = 8190\nmax_header_count = "abc"\n'
    assert problems(tmp_path, text) == (
        'bastion.toml:3: limits.max_header_count: expected an integer >= 1, got "abc"',
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "[limits]\nmax_header_count = 0",
            "limits.max_header_count: expected an integer >= 1, got 0",
        ),
        ("[workers]\ntimeout = 0", "workers.timeout: expected a number > 0, got 0"),
        ("[workers]\ntimeout = -1.5", "workers.timeout: expected a number > 0, got -1.5"),
        ("[workers]\ntimeout = inf", "workers.timeout: expected a number > 0, got inf"),
        ("[workers]\ncount = -1", "workers.count: expected an integer >= 0, got -1"),
        ("[workers]\ncount = 2.5", "workers.count: expected an integer >= 0, got 2.5"),
        ("[workers]\npreload = 1", "workers.preload: expected true or false, got 1"),
        ('[workers]\npreload = "yes"', 'workers.preload: expected true or false, got "yes"'),
        (
            '[app]\ninterface = "rsgi"',
            'app.interface: expected one of "auto", "asgi", "wsgi", got "rsgi"',
        ),
        ("[server]\nbind = [1]", "server.bind: expected a list of strings, got [1]"),
        (
            "[server]\nunix_socket_mode = 660",
            "server.unix_socket_mode: expected a file mode from 0o000 to 0o777 "
            "(write it in octal, like 0o660), got 660",
        ),
        (
            '[limits]\nmax_body_size = "lots"',
            "limits.max_body_size: expected an integer >= 0 (a number of bytes, or with a k/m/g "
            'suffix like "10m"), got "lots"',
        ),
    ],
)
def test_out_of_range_and_wrong_types(tmp_path: Path, line: str, message: str) -> None:
    assert problems(tmp_path, line + "\n") == (f"bastion.toml:2: {message}",)


def test_dotted_and_inline_keys_get_their_line(tmp_path: Path) -> None:
    text = '# top\nworkers.count = "x"\n\napp = { target = "a:b", factory = 3 }\n'
    assert problems(tmp_path, text) == (
        'bastion.toml:2: workers.count: expected an integer >= 0, got "x"',
        "bastion.toml:4: app.factory: expected true or false, got 3",
    )


def test_multiline_string_does_not_confuse_line_numbers(tmp_path: Path) -> None:
    text = '[server]\nserver_header = """\ncount = 1\n"""\n[workers]\ncount = "x"\n'
    (msg, *_) = problems(tmp_path, text)
    assert msg == 'bastion.toml:6: workers.count: expected an integer >= 0, got "x"'


def test_toml_syntax_error(tmp_path: Path) -> None:
    (msg,) = problems(tmp_path, '[server]\nbind = ["a"\ncount = \n')
    assert msg.startswith("bastion.toml:3:")
    assert "invalid TOML" in msg


def test_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path, None, cli={}, env={"BASTION_CONFIG": "nope.toml"}) == (
        "nope.toml: config file not found (named by environment variable BASTION_CONFIG)",
    )
    with pytest.raises(ConfigError) as err:
        load_config(file=str(tmp_path / "gone.toml"), env={}, cli={})
    assert err.value.problems == (f"{tmp_path / 'gone.toml'}: config file not found",)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(file=str(tmp_path), env={}, cli={})
    assert err.value.problems == (f"{tmp_path}: is a directory, not a config file",)


def test_unknown_environment_variable(tmp_path: Path) -> None:
    assert problems(tmp_path, env={"BASTION_WORKERS_COUNT": "2"}) == (
        "environment variable BASTION_WORKERS_COUNT: unknown setting "
        "(did you mean BASTION_WORKERS__COUNT?)",
    )
    (msg,) = problems(tmp_path, env={"BASTION_FOO": "2"})
    assert msg.startswith("environment variable BASTION_FOO: unknown setting (bastion reads")


def test_bad_environment_value(tmp_path: Path) -> None:
    assert problems(tmp_path, env={"BASTION_WORKERS__COUNT": "four"}) == (
        "environment variable BASTION_WORKERS__COUNT: workers.count: "
        'expected an integer >= 0, got "four"',
    )
    assert problems(tmp_path, env={"BASTION_WORKERS__PRELOAD": "maybe"}) == (
        "environment variable BASTION_WORKERS__PRELOAD: workers.preload: "
        'expected true or false, got "maybe"',
    )


def test_bad_flag_value(tmp_path: Path) -> None:
    assert problems(
        tmp_path, cli={"workers.count": "abc"}, flags={"workers.count": "--workers"}
    ) == ('command line --workers: workers.count: expected an integer >= 0, got "abc"',)


def test_bad_bind_names_its_index_and_the_accepted_forms(tmp_path: Path) -> None:
    (msg,) = problems(tmp_path, '[server]\nbind = ["127.0.0.1:80", "localhost"]\n')
    assert msg.startswith("bastion.toml:2: server.bind[1]: expected ")
    assert "HOST:PORT, [IPV6]:PORT, unix:/path, fd://N or systemd" in msg
    assert "'localhost'" in msg


def test_duplicate_bind(tmp_path: Path) -> None:
    assert problems(
        tmp_path, cli={"server.bind": [":8000", "0.0.0.0:8000"]}, flags={"server.bind": "--bind"}
    ) == ('command line --bind: server.bind[1]: "0.0.0.0:8000" repeats server.bind[0] ":8000"',)
    # each port-0 address gets its own free port, so repeating it is fine
    config = load_config(file=None, env={}, cli={"server.bind": ["127.0.0.1:0", "127.0.0.1:0"]})
    assert len(config.server.bind) == 2


def test_empty_bind_list(tmp_path: Path) -> None:
    (msg,) = problems(tmp_path, "[server]\nbind = []\n")
    assert msg.startswith("bastion.toml:2: server.bind: expected at least one address")


def test_bad_target(tmp_path: Path) -> None:
    assert problems(tmp_path, '[app]\ntarget = "main"\n') == (
        "bastion.toml:2: app.target: expected MODULE:ATTR (like myproject.asgi:application) "
        'or path/to/app.py:ATTR, got "main"',
    )


def test_bad_root_path(tmp_path: Path) -> None:
    (msg,) = problems(tmp_path, env={"BASTION_APP__ROOT_PATH": "api"})
    assert msg.startswith("environment variable BASTION_APP__ROOT_PATH: app.root_path: expected")


def test_missing_app_dir(tmp_path: Path) -> None:
    assert problems(tmp_path, '[app]\napp_dir = "nowhere"\n') == (
        'bastion.toml:2: app.app_dir: no such directory: "nowhere"',
    )


def test_jitter_without_max_requests(tmp_path: Path) -> None:
    (msg,) = problems(tmp_path, "[workers]\nmax_requests_jitter = 50\n")
    assert msg.startswith("bastion.toml:2: workers.max_requests_jitter: has no effect while")
    config = load_config(
        file=None, env={}, cli={"workers.max_requests": "1000", "workers.max_requests_jitter": "50"}
    )
    assert config.workers.max_requests_jitter == 50


def test_server_header_with_control_characters(tmp_path: Path) -> None:
    (msg,) = problems(tmp_path, '[server]\nserver_header = "a\\r\\nX-Evil: 1"\n')
    assert msg == (
        "bastion.toml:2: server.server_header: expected printable ASCII text "
        '(it is sent as a header), got "a\\r\\nX-Evil: 1"'
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        '[server]\nbnd = 1\nbind = ["x"]\n[workers]\ncount = "y"\n',
        env={"BASTION_NOPE": "1"},
        cli={"workers.timeout": "0"},
        flags={"workers.timeout": "--timeout"},
    )
    assert [p.split(":")[0] for p in found] == [
        "bastion.toml",
        "bastion.toml",
        "environment variable BASTION_NOPE",
        "command line --timeout",
        "bastion.toml",
    ]
    assert "server.bind[0]" in found[-1]


def test_heartbeat_must_be_shorter_than_the_worker_timeout(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        "[workers]\ntimeout = 5\n",
        env={"BASTION_WORKERS__HEARTBEAT_INTERVAL": "5"},
    ) == (
        "environment variable BASTION_WORKERS__HEARTBEAT_INTERVAL: workers.heartbeat_interval: "
        "must be shorter than workers.timeout (5s), or every worker would be killed as blocked; "
        "got 5",
    )


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert problems(tmp_path, 'title = "my app"\n') == (
        "bastion.toml:1: unknown key title (the sections are app, server, workers, limits, "
        "timeouts, log, websocket, tls, apps, routes, upstreams, compress, headers, "
        "rate_limit, admin, process)",
    )
