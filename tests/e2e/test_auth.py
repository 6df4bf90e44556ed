"""Authentication routes through the real ``bastion``: Basic (and ``bastion passwd``),
API keys, JWT (a JWKS served by a real local HTTP server, refreshed on an unknown kid),
forward auth against a real auth service, and the identity as a Starlette app, a Flask
app and a WebSocket scope see it."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from server import BastionProcess, child_env
from websockets.sync.client import connect

API_KEY = "k3y-for-the-ci-robot-0123456789abcdef"
HS_SECRET = b"a shared secret of more than thirty-two bytes!"

CONFIG = """
[app]
target = "auth_starlette:app"

[apps.flask]
target = "auth_flask:app"

[[routes]]
path = "/basic/"
app = "flask"
[routes.auth_basic]
users_file = "{users}"
realm = "staff"
identity_header = "X-Remote-User"

[[routes]]
path = "/key/"
app = "default"
[routes.auth_api_key]
keys = {{ "ci-robot" = "{key_digest}" }}
query_param = "api_key"
identity_header = "X-Remote-User"

[[routes]]
path = "/jwt/"
app = "default"
[routes.auth_jwt]
algorithms = ["ES256", "RS256", "EdDSA"]
jwks_url = "{jwks_url}"
jwks_refresh_interval = 2.0
issuer = "https://issuer.test"
audience = ["bastion-tests"]
leeway = 5
identity_header = "X-Remote-User"

[[routes]]
path = "/hs/"
app = "default"
[routes.auth_jwt]
algorithms = ["HS256"]
secret_file = "{secret}"

[[routes]]
path = "/rsapem/"
app = "default"
[routes.auth_jwt]
algorithms = ["RS256", "ES256"]
public_key_file = "{rsa_pem}"

[[routes]]
path = "/fwd/"
app = "default"
[routes.auth_forward]
url = "{forward_url}"
request_headers = ["authorization"]
response_headers = ["X-Auth-Groups"]
user_header = "X-Auth-User"
identity_header = "X-Remote-User"
timeout = 1.0
"""


# -- a real local HTTP server: the JWKS and the forward-auth service ---------------------
class Services:
    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.jwks_status = 200
        self.jwks_fetches = 0
        self.forward_seen: list[dict[str, str]] = []
        self.forward_delay = 0.0


def make_handler(state: Services) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except BrokenPipeError:
                pass  # bastion gave up waiting (the timeout test)

        def do_GET(self) -> None:
            if self.path == "/jwks":
                state.jwks_fetches += 1
                body = json.dumps(state.jwks).encode()
                self.reply(state.jwks_status, body, {"Content-Type": "application/json"})
                return
            # the forward-auth service
            state.forward_seen.append({k.lower(): v for k, v in self.headers.items()})
            if state.forward_delay:
                time.sleep(state.forward_delay)
            auth = self.headers.get("Authorization", "")
            if auth == "Bearer good":
                self.reply(
                    200, b"", {"X-Auth-User": "carol", "X-Auth-Groups": "admins", "X-Other": "no"}
                )
            elif auth == "Bearer long":  # a user name nobody can pass on
                self.reply(200, b"", {"X-Auth-User": "a" * 1100})
            elif auth == "Bearer banned":
                self.reply(403, b"banned here\n", {"Content-Type": "text/plain"})
            else:
                self.reply(
                    302,
                    b"log in first\n",
                    {"Location": "https://login.test/?next=x", "Set-Cookie": "state=abc"},
                )

    return Handler


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[Services, str]]:
    state = Services()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Keys:
    def __init__(self) -> None:
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.rotated = ec.generate_private_key(ec.SECP256R1())
        self.stranger = ec.generate_private_key(ec.SECP256R1())

    def jwk(self, key: Any, kid: str, alg: str) -> dict[str, Any]:
        algo = {"ES256": ECAlgorithm, "RS256": RSAAlgorithm, "EdDSA": OKPAlgorithm}[alg]
        data: dict[str, Any] = algo.to_jwk(key.public_key(), as_dict=True)  # type: ignore[attr-defined]
        data.update(kid=kid, alg=alg, use="sig")
        return data


def rpm(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def passwd(users: Path, user: str, password: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion", "passwd", str(users), user, *extra],
        input=password + "\n",
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, services: tuple[Services, str]
) -> Iterator[tuple[BastionProcess, Keys, Services, Path]]:
    state, base = services
    keys = Keys()
    state.jwks = {
        "keys": [
            keys.jwk(keys.ec, "ec-1", "ES256"),
            keys.jwk(keys.rsa, "rsa-1", "RS256"),
            keys.jwk(keys.ed, "ed-1", "EdDSA"),
        ]
    }
    tmp = tmp_path_factory.mktemp("auth")
    users = tmp / "users"
    assert passwd(users, "alice", "correct horse").returncode == 0
    assert passwd(users, "bob", "bobs pw").returncode == 0
    secret = tmp / "hs.secret"
    secret.write_bytes(HS_SECRET)
    rsa_pem = tmp / "rsa.pem"
    rsa_pem.write_bytes(rpm(keys.rsa))
    config = tmp / "bastion.toml"
    config.write_text(
        CONFIG.format(
            users=users,
            key_digest=hashlib.sha256(API_KEY.encode()).hexdigest(),
            jwks_url=base + "/jwks",
            secret=secret,
            rsa_pem=rsa_pem,
            forward_url=base + "/check",
        )
    )
    proc = BastionProcess(["serve", "-c", str(config), "--bind", "127.0.0.1:0", "--workers", "1"])
    with proc:
        yield proc, keys, state, users


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def get(proc: BastionProcess, path: str, **kw: Any) -> httpx.Response:
    return httpx.get(proc.url + path, timeout=10, **kw)


# -- Basic ---------------------------------------------------------------------------
def test_basic_right_wrong_unknown_and_flask_sees_the_user(site: Any) -> None:
    proc, _, _, _ = site
    r = get(proc, "/basic/x", headers={**basic("alice", "correct horse"), "X-Remote-User": "root"})
    assert r.status_code == 200
    assert r.json() == {
        "remote_user": "alice",
        "auth": {"user": "alice", "method": "basic"},
        "header": "alice",  # the client's forged copy was removed
    }
    for headers in (basic("alice", "wrong"), basic("nobody", "x"), {}):
        r = get(proc, "/basic/x", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Basic realm="staff", charset="UTF-8"'
    line = proc.wait_for_log(
        r"auth basic refused GET /basic/x from 127\.0\.0\.1:\d+: wrong password"
    )
    assert "wrong" in line.group(0)
    assert "correct horse" not in proc.log and "d3Jvbmc" not in proc.log


def test_basic_unknown_user_costs_as_much_as_a_wrong_password(site: Any) -> None:
    proc, _, _, _ = site

    def timed(user: str, password: str) -> float:
        start = time.perf_counter()
        assert get(proc, "/basic/", headers=basic(user, password)).status_code == 401
        return time.perf_counter() - start

    wrong = statistics.median(timed("alice", f"no{i}") for i in range(5))
    unknown = statistics.median(timed(f"ghost{i}", "no") for i in range(5))
    assert wrong > 0.005, wrong  # argon2 ran
    assert unknown > wrong * 0.4, (unknown, wrong)


def burst(proc: Any, heads: list[tuple[str, dict[str, str]]]) -> list[int]:
    """Send each request (source address, headers) on its own connection, all before
    reading any answer; the statuses in order."""
    host, port = proc.host_port
    socks = []
    for source, headers in heads:
        s = socket.create_connection((host, port), timeout=10, source_address=(source, 0))
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        socks.append((s, f"GET /basic/ HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode()))
    for s, request in socks:
        s.sendall(request)
    statuses = []
    for s, _ in socks:
        with s:
            statuses.append(int(s.recv(65536).split(b" ", 2)[1]))
    return statuses


def test_basic_checks_per_client_are_capped_and_shared(site: Any) -> None:
    """One client guessing passwords over many connections gets 429 beyond its two
    checks under way, at once; another client's login is not refused meanwhile; the same
    credentials sent at once (a browser loading a page) share one check: no 429."""
    proc, _, _, users = site
    assert passwd(users, "dave", "daves pw").returncode == 0
    time.sleep(1.2)  # the file is looked at once a second
    guesses = [("127.0.0.1", basic("alice", f"guess {i}")) for i in range(8)]
    statuses = burst(proc, [*guesses, ("127.0.0.2", basic("dave", "daves pw"))])
    assert set(statuses[:8]) <= {401, 429}, statuses
    assert statuses[:8].count(429) >= 4, statuses
    assert statuses[8] == 200, statuses
    proc.wait_for_log(r"auth basic refused GET /basic/ from 127\.0\.0\.1:\d+: too many password")
    assert passwd(users, "erin", "erins pw").returncode == 0
    time.sleep(1.2)
    same = burst(proc, [("127.0.0.1", basic("erin", "erins pw"))] * 6)
    assert same == [200] * 6, same


def test_passwd_change_and_delete_take_effect(site: Any) -> None:
    proc, _, _, users = site
    assert get(proc, "/basic/", headers=basic("bob", "bobs pw")).status_code == 200  # cached now
    assert passwd(users, "bob", "new pw").returncode == 0
    time.sleep(1.2)  # the file is looked at once a second
    assert get(proc, "/basic/", headers=basic("bob", "bobs pw")).status_code == 401
    assert get(proc, "/basic/", headers=basic("bob", "new pw")).status_code == 200
    done = passwd(users, "bob", "", "--delete")
    assert done.returncode == 0, done.stderr
    assert "bob:" not in users.read_text()
    time.sleep(1.2)
    assert get(proc, "/basic/", headers=basic("bob", "new pw")).status_code == 401
    missing = passwd(users, "bob", "", "--delete")
    assert missing.returncode == 1 and "no user" in missing.stderr


# -- API keys ----------------------------------------------------------------------------
def test_api_key_in_header_and_query(site: Any) -> None:
    proc, _, _, _ = site
    r = get(proc, "/key/a?x=1", headers={"X-API-Key": API_KEY})
    assert r.status_code == 200
    body = r.json()
    assert body["auth"] == {"user": "ci-robot", "method": "api_key", "key": "ci-robot"}
    assert body["remote_user"] == "ci-robot"
    assert body["query"] == "x=1"
    assert not body["has_user_key"]  # scope["user"] is left to Starlette's middleware
    r = get(proc, f"/key/a?x=1&api_key={API_KEY}&y=2")
    assert r.status_code == 200
    assert r.json()["query"] == "x=1&y=2"  # the key is not handed to the app
    for kw in ({"headers": {"X-API-Key": "guess"}}, {"params": {"api_key": "guess"}}, {}):
        r = get(proc, "/key/a", **kw)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'ApiKey header="X-API-Key"'
    assert "guess" not in proc.log


# -- JWT ---------------------------------------------------------------------------------
def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "dave", "iss": "https://issuer.test", "aud": "bastion-tests", "exp": now + 300}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_jwt_valid_with_each_algorithm(site: Any) -> None:
    proc, keys, _, _ = site
    for key, kid, alg in (
        (keys.ec, "ec-1", "ES256"),
        (keys.rsa, "rsa-1", "RS256"),
        (keys.ed, "ed-1", "EdDSA"),
    ):
        token = jwt.encode(claims(role="ops"), key, algorithm=alg, headers={"kid": kid})
        for _ in range(2):  # the second one from the cache
            r = get(proc, "/jwt/", headers={**bearer(token), "X-Remote-User": "root"})
            assert r.status_code == 200, (alg, r.text)
            auth = r.json()["auth"]
            assert auth["user"] == "dave" and auth["method"] == "jwt"
            assert auth["claims"]["role"] == "ops"
            assert r.json()["remote_user"] == "dave"
    hs = jwt.encode(claims(), HS_SECRET, algorithm="HS256")
    assert get(proc, "/hs/", headers=bearer(hs)).status_code == 200
    rs = jwt.encode(claims(), keys.rsa, algorithm="RS256")
    assert get(proc, "/rsapem/", headers=bearer(rs)).status_code == 200


def test_jwt_refusals(site: Any) -> None:
    proc, keys, _, _ = site
    now = int(time.time())

    def es(c: dict[str, Any], key: Any = None, kid: str = "ec-1") -> str:
        return jwt.encode(c, key or keys.ec, algorithm="ES256", headers={"kid": kid})

    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    pem = rpm(keys.rsa)
    confused_header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    signing_input = confused_header + b"." + body.encode()
    import hmac

    sig = base64.urlsafe_b64encode(hmac.new(pem, signing_input, "sha256").digest()).rstrip(b"=")
    mixed = base64.urlsafe_b64encode(b'{"alg":"ES256"}').rstrip(b"=").decode()
    cases = {
        "expired": (es(claims(exp=now - 60)), "/jwt/"),
        "not yet valid": (es(claims(nbf=now + 600)), "/jwt/"),
        "wrong audience": (es(claims(aud="someone-else")), "/jwt/"),
        "wrong issuer": (es(claims(iss="https://evil.test")), "/jwt/"),
        "bad signature": (es(claims(), key=keys.stranger), "/jwt/"),
        "alg none": (f"{header}.{body}.", "/jwt/"),
        "hs with the rsa public key": ((signing_input + b"." + sig).decode(), "/rsapem/"),
        "hs not listed": (jwt.encode(claims(), HS_SECRET, algorithm="HS256"), "/jwt/"),
        "malformed": ("not.a.token", "/jwt/"),
        "missing exp": (es(claims(exp=None)), "/jwt/"),
        # an allowed algorithm naming another kind of key than the route's (ES256 with
        # its RSA key): no signature needed to send it
        "es256 with an rsa key": (f"{mixed}.{body}.AAAA", "/rsapem/"),
    }
    for name, (token, path) in cases.items():
        r = get(proc, path, headers=bearer(token))
        assert r.status_code == 401, name
        assert r.headers["www-authenticate"].startswith('Bearer realm="bastion"'), name
    # within the leeway of 5 s, an expired token still passes
    assert get(proc, "/jwt/", headers=bearer(es(claims(exp=now - 2)))).status_code == 200
    assert get(proc, "/jwt/").status_code == 401
    log = proc.log
    for reason in ("expired", "not yet valid", "wrong audience", "wrong issuer", "bad signature"):
        assert "from 127.0.0.1" in log and f": {reason}" in log, reason
    assert es(claims(exp=now - 60)) not in log
    assert "the key does not fit the token's algorithm" in log
    assert "Traceback" not in log


def test_jwt_names_with_line_breaks_are_refused(site: Any) -> None:
    """A signed token whose user claim holds CR/LF (an identity provider that lets
    users choose their name) must not put a header of its choosing into the request."""
    proc, keys, _, _ = site
    for name in ("mallory\r\nX-Admin: 1", "mallory\nContent-Length: 0", "nul\x00"):
        token = jwt.encode(claims(sub=name), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})
        r = get(proc, "/jwt/", headers=bearer(token))
        assert r.status_code == 403, name
        assert "auth" not in r.text
    assert "the sub claim is not a usable name" in proc.log
    ok = jwt.encode(claims(sub="dåvé"), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})
    r = get(proc, "/jwt/", headers={**bearer(ok), "X_Remote_User": "root"})
    assert r.status_code == 200 and r.json()["auth"]["user"] == "dåvé"
    assert r.json()["remote_user"] == "dåvé".encode().decode("latin-1")


def test_jwks_refresh_on_unknown_kid_and_failure_keeps_keys(site: Any) -> None:
    proc, keys, state, _ = site
    assert state.jwks_fetches >= 1  # at start-up
    rotated = jwt.encode(claims(), keys.rotated, algorithm="ES256", headers={"kid": "ec-2"})
    state.jwks = {"keys": [*state.jwks["keys"], keys.jwk(keys.rotated, "ec-2", "ES256")]}
    time.sleep(2.1)  # past jwks_refresh_interval since the last fetch
    before = state.jwks_fetches
    assert get(proc, "/jwt/", headers=bearer(rotated)).status_code == 200
    assert state.jwks_fetches == before + 1
    # unknown kids again at once: no new fetch within the interval
    stray = jwt.encode(claims(), keys.stranger, algorithm="ES256", headers={"kid": "nope"})
    for _ in range(3):
        assert get(proc, "/jwt/", headers=bearer(stray)).status_code == 401
    assert state.jwks_fetches == before + 1
    # the key server fails: the keys already known stay in use
    state.jwks_status = 500
    time.sleep(2.1)
    assert get(proc, "/jwt/", headers=bearer(stray)).status_code == 401
    assert state.jwks_fetches == before + 2
    proc.wait_for_log(r"cannot fetch the key set .*status 500 \(keeping 4 keys\)")
    fresh = jwt.encode(claims(n=1), keys.rotated, algorithm="ES256", headers={"kid": "ec-2"})
    assert get(proc, "/jwt/", headers=bearer(fresh)).status_code == 200
    state.jwks_status = 200


# -- forward auth ------------------------------------------------------------------------
def test_forward_auth(site: Any) -> None:
    proc, _, state, _ = site
    r = get(
        proc,
        "/fwd/page?q=1",
        headers={**bearer("good"), "X-Auth-Groups": "forged", "Cookie": "not=sent"},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["auth"] == {"user": "carol", "method": "forward"}
    assert body["groups"] == "admins"  # copied from the answer; the client's copy removed
    assert body["remote_user"] == "carol"
    seen = state.forward_seen[-1]
    assert seen["x-forwarded-method"] == "GET"
    assert seen["x-forwarded-uri"] == "/fwd/page?q=1"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["authorization"] == "Bearer good"
    assert "cookie" not in seen
    r = get(proc, "/fwd/p%61ge", headers=bearer("banned"))
    assert (r.status_code, r.text) == (403, "banned here\n")
    # logged as sent, still percent-encoded (nothing decoded can start a log line)
    proc.wait_for_log(r"auth forward refused GET /fwd/p%61ge from 127\.0\.0\.1")
    r = get(proc, "/fwd/page", headers=bearer("long"))
    assert r.status_code == 403
    proc.wait_for_log(r"auth forward refused GET /fwd/page from .*not a usable name")
    r = get(proc, "/fwd/page")
    assert r.status_code == 302
    assert r.headers["location"] == "https://login.test/?next=x"
    assert r.headers["set-cookie"] == "state=abc"
    assert r.text == "log in first\n"


def test_forward_auth_timeout_is_503(site: Any) -> None:
    proc, _, state, _ = site
    state.forward_delay = 1.5
    try:
        start = time.monotonic()
        r = get(proc, "/fwd/slow", headers=bearer("good"))
        assert r.status_code == 503
        assert time.monotonic() - start < 1.4
    finally:
        state.forward_delay = 0.0
    proc.wait_for_log(r"auth forward: GET /fwd/slow from 127\.0\.0\.1:\d+: no answer")


# -- WebSocket ---------------------------------------------------------------------------
def test_websocket_scope_carries_the_identity(site: Any) -> None:
    proc, _, _, _ = site
    host, port = proc.host_port
    with connect(f"ws://{host}:{port}/key/ws", additional_headers={"X-API-Key": API_KEY}) as ws:
        got = json.loads(ws.recv())
    assert got["auth"] == {"user": "ci-robot", "method": "api_key", "key": "ci-robot"}
    assert got["remote_user"] == "ci-robot"
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://{host}:{port}/key/ws", additional_headers={"X-API-Key": "nope"})
    assert info.value.response.status_code == 401


# -- configuration ------------------------------------------------------------------------
def test_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text(
        """
[app]
target = "auth_starlette:app"

[[routes]]
path = "/"
app = "default"
[routes.auth_jwt]
algorithms = ["HS256", "RS256"]
public_key_file = "missing.pem"
[routes.auth_api_key]
keys = { "x" = "abc" }
"""
    )
    done = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert done.returncode != 0
    err = done.stderr
    assert "auth_api_key and auth_jwt are both set" in err, err
    assert "HS* algorithms need secret_file" in err
    assert 'no such file: "missing.pem"' in err
    assert "expected the SHA-256 of the key in hex" in err
    assert 'got "abc"' in err and "{toml_value" not in err


def test_missing_extra_is_named(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    # as if argon2-cffi were not installed
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['argon2'] = None\n")
    users = tmp_path / "users"
    users.write_text("")
    config = tmp_path / "bastion.toml"
    config.write_text(
        f"""
[app]
target = "auth_starlette:app"

[[routes]]
path = "/"
app = "default"
auth_basic = {{ users_file = "{users}" }}
"""
    )
    env = child_env()
    env["PYTHONPATH"] = f"{hide}:{env.get('PYTHONPATH', '')}"
    done = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode != 0
    assert "routes[0].auth_basic: needs the auth extra" in done.stderr, done.stderr
    assert "pip install 'bastion[auth]'" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "bastion", "passwd", str(users), "x"],
        input="pw\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1 and "bastion[auth]" in done.stderr
