"""The explorer's HTTP layer under attack: each case forges what a hostile page or client sends.

Host, Origin, login throttling, session cookies and bad Content-Length go through a real
socket (waitress, and Werkzeug's development server that ``patientgraph serve --dev`` uses)
with http.client, so that raw headers can be forged; the rest use a WSGI test
client. The explorer itself is served where the case is about it (DNS rebinding, callbacks),
a one-line app behind the same middleware where the case is about the middleware.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import threading
import types
from dataclasses import dataclass

import pytest
import waitress
from waitress import wasyncore
from werkzeug.serving import make_server
from werkzeug.test import Client

from dashboards.app import create_app
from dashboards.protocol import find_callback
from dashboards.security import (
    COOKIE,
    LOGIN_PATH,
    LOGOUT_PATH,
    AuthConfig,
    AuthMiddleware,
    HttpPolicy,
    LoginThrottle,
    RequestGuard,
    Sessions,
    auth_from_env,
    check_host,
    http_policy_from_env,
    protect,
)
from patientgraph.errors import InputError

TOKEN = "s3cret-token-0123456789"
SERVERS = ["waitress", "werkzeug"]
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer",
                    "Content-Security-Policy": "frame-ancestors 'none'"}


# -- serving and forging ---------------------------------------------------------------------

@contextlib.contextmanager
def serving(app, kind: str = "waitress"):
    """Serve the WSGI ``app`` on 127.0.0.1 and a free port in a thread; yields the port."""
    if kind == "waitress":
        server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4,
                                        ident="patientgraph")
        port, stopping = int(server.effective_port), threading.Event()

        def run():
            # the server's own thread closes its sockets: closing them from another thread
            # while it waits in select() raised EBADF there
            while not stopping.is_set():
                wasyncore.loop(timeout=0.05, map=server._map, count=1)
            server.task_dispatcher.shutdown()
            wasyncore.close_all(server._map)

        stop = stopping.set
    else:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        port, run = server.port, server.serve_forever

        def stop():
            server.shutdown()
            server.server_close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop()
        thread.join(10)


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    text: str

    def cookie(self) -> str:
        """The session cookie's value from Set-Cookie."""
        return self.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]


def send(port: int, method: str, path: str, headers: dict | None = None, body: bytes = b"",
         *, host: str | None = "", length: str | None = "") -> Answer:
    """One request with exactly these headers: ``host`` None sends no Host header, ``""`` the
    right one; ``length`` None sends no Content-Length, ``""`` the body's."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host or f"127.0.0.1:{port}")
        if length is not None and (body or method == "POST" or length):
            conn.putheader("Content-Length", length or str(len(body)))
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders(body or None)
        reply = conn.getresponse()
        return Answer(reply.status, reply.headers, reply.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def assert_refused_plainly(answer: Answer, status: int | tuple[int, ...]) -> None:
    """Refused with that status and a short plain-text body: no traceback, no page."""
    assert answer.status in ((status,) if isinstance(status, int) else status), answer
    assert "Traceback" not in answer.text and "<html" not in answer.text.lower()
    assert len(answer.text) < 300


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def form(token: str) -> dict:
    return {"Content-Type": "application/x-www-form-urlencoded"}, f"token={token}".encode()


def login(port: int, token: str = TOKEN, **headers) -> Answer:
    kind, body = form(token)
    return send(port, "POST", LOGIN_PATH, {**kind, **headers}, body)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the explorer, served ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def explorer(workspace):
    """The explorer without credentials, as ``patientgraph serve`` builds it on 127.0.0.1."""
    return create_app(workspace.root, http=http_policy_from_env("127.0.0.1", {}))


@pytest.fixture(scope="module", params=SERVERS)
def port(request, explorer):
    with serving(explorer.server, request.param) as port:
        yield port


@pytest.fixture(scope="module")
def callback_body(explorer) -> bytes:
    spec = find_callback(explorer, "page.children")
    return json.dumps(spec.body({"url.pathname": "/"})).encode()


JSON = {"Content-Type": "application/json"}

REBINDING_HOSTS = [
    "attacker.example", "attacker.example:{port}", "127.0.0.1.attacker.example:{port}",
    "localhost.attacker.example:{port}", "127.0.0.2:{port}", "127.1.2.3", "0.0.0.0:{port}",
    "localhost.:{port}", "[::2]:{port}", "LOCALHOST.attacker.example",
]
MALFORMED_HOSTS = ["localhost:{port}@attacker.example", "[::1", "localhost:99999",
                   "localhost:abc", "localhost:{port}, attacker.example", "local host", "@"]


@pytest.mark.parametrize("forged", REBINDING_HOSTS + MALFORMED_HOSTS)
def test_dns_rebinding_a_host_the_explorer_does_not_serve_is_refused(port, callback_body,
                                                                     forged):
    host = forged.format(port=port)
    for method, path, headers, body in [("GET", "/", {}, b""),
                                        ("GET", "/_dash-layout", {}, b""),
                                        ("POST", "/_dash-update-component", JSON,
                                         callback_body)]:
        answer = send(port, method, path, headers, body, host=host)
        assert_refused_plainly(answer, 400)
        assert "props" not in answer.text and "response" not in answer.text


@pytest.mark.parametrize("named", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}",
                                   "LocalHost:{port}", "localhost", None])
def test_the_names_it_serves_are_answered(port, named):
    host = named.format(port=port) if named else None
    answer = send(port, "GET", "/_dash-layout", host=host)
    assert answer.status == 200 and json.loads(answer.text)["props"]


@pytest.mark.parametrize("origin", ["http://attacker.example", "http://attacker.example:{port}",
                                    "null", "http://localhost:{other}", "http://127.0.0.2:{port}",
                                    "http://127.0.0.1:{port}@attacker.example", "file://",
                                    "http://localhost:{port}/x"])
def test_a_cross_origin_post_is_refused(port, callback_body, origin, caplog):
    origin = origin.format(port=port, other=port + 1)
    with caplog.at_level(logging.INFO):
        answer = send(port, "POST", "/_dash-update-component", {**JSON, "Origin": origin},
                      callback_body, host=f"localhost:{port}")
    assert_refused_plainly(answer, 403)
    assert "show page" not in caplog.text  # the callback did not run


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", None])
def test_a_same_origin_or_non_browser_post_is_answered(port, callback_body, origin):
    headers = {**JSON, **({"Origin": origin.format(port=port)} if origin else {})}
    answer = send(port, "POST", "/_dash-update-component", headers, callback_body)
    assert answer.status == 200
    assert json.loads(answer.text)["response"]["page"]["children"]


MALFORMED_CALLBACKS = [
    b"{not json", b"\xff\xfe\x00{", b"[]", b"{}", b"null", b'"page.children"',
    b'{"output": 5}', b'{"output": "nope.children", "inputs": []}',
    b'{"output": "page.children", "inputs": "x"}',
    b'{"output": "page.children", "inputs": [1, 2]}',
    b'{"output": "page.children", "inputs": []}',  # the callback takes one input
    b'{"output": "page.children", "inputs": [{"id": "url", "property": "pathname"}], '
    b'"state": [], "outputs": 7}',
    b'{"output": "page.children", "inputs": [{"id": "url", "property": "pathname"}], '
    b'"changedPropIds": [1]}',
    b"[" * 100_000,
]


@pytest.mark.parametrize("body", MALFORMED_CALLBACKS, ids=range(len(MALFORMED_CALLBACKS)))
def test_a_malformed_callback_request_is_400_not_a_500(port, body, caplog):
    with caplog.at_level(logging.ERROR):
        answer = send(port, "POST", "/_dash-update-component", JSON, body)
    assert_refused_plainly(answer, 400)
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", ["/", "/_dash-layout", "/_dash-dependencies", "/no-such"])
def test_every_answer_carries_the_security_headers(port, path):
    for host in ("", "attacker.example"):
        answer = send(port, "GET", path, host=host)
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value, (path, host, name)
        assert answer.headers["Cache-Control"] == "no-store"


def test_static_files_keep_their_caching_but_get_the_headers(port, explorer):
    page = send(port, "GET", "/").text
    script = next(part.split('"')[0] for part in page.split('src="')[1:]
                  if part.startswith("/_dash-component-suites/"))
    answer = send(port, "GET", script)
    assert answer.status == 200 and answer.headers["Cache-Control"] != "no-store"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


# -- serving without credentials: 127.0.0.1 and ::1 only -----------------------------------

@pytest.mark.parametrize("host", ["127.0.0.2", "127.1.2.3", "127.255.255.254", "::ffff:127.0.0.1"])
def test_other_loopback_addresses_need_credentials(host):
    with pytest.raises(InputError, match=r"127\.0\.0\.1, ::1 or localhost only"):
        check_host(host, AuthConfig())
    check_host(host, AuthConfig(token=TOKEN))


def test_serve_binds_localhost_to_127_0_0_1_and_refuses_127_x(workspace, monkeypatch):
    import dashboards.app
    from dashboards.server import serve

    served = {}
    built = {}

    def fake_create_app(workspace, **kwargs):
        built.update(kwargs)
        return types.SimpleNamespace(server=object())

    monkeypatch.setattr(dashboards.app, "create_app", fake_create_app)
    monkeypatch.setattr(waitress, "serve", lambda app, **kw: served.update(kw))
    serve(workspace.root, host="localhost", port=8123, workers=2, environ={},
          echo=lambda _m: None)
    assert served["host"] == "127.0.0.1" and served["port"] == 8123
    policy = built["http"]
    assert policy.host_allowed("localhost:8123") and not policy.host_allowed("127.0.0.2:8123")
    with pytest.raises(InputError, match="refusing to serve on --host 127.0.0.2"):
        serve(workspace.root, host="127.0.0.2", environ={}, echo=lambda _m: None)


# -- credentials: login throttling ---------------------------------------------------------

@pytest.fixture(params=SERVERS)
def token_port(request):
    """A fresh token-protected app (its own throttle and sessions) on a real socket."""
    with serving(protect(hello, AuthConfig(token=TOKEN)), request.param) as port:
        yield port


def test_login_guesses_are_throttled(token_port):
    for _ in range(5):
        assert login(token_port, "wrong-guess-0123456789").status == 401
    refused = login(token_port, "wrong-guess-0123456789")
    assert_refused_plainly(refused, 429)
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    # while throttled even the right token, or a Bearer guess, gets no answer but 429
    assert login(token_port).status == 429
    assert send(token_port, "GET", "/", {"Authorization": f"Bearer {TOKEN}"}).status == 429


def test_bearer_guesses_are_throttled(token_port):
    for _ in range(5):
        assert send(token_port, "GET", "/", {"Authorization": "Bearer nope"}).status == 401
    assert_refused_plainly(send(token_port, "GET", "/", {"Authorization": "Bearer nope"}), 429)


def test_basic_auth_guesses_are_throttled():
    app = protect(hello, AuthConfig(user="ana", password="pw"))
    guess = {"Authorization": "Basic " + base64.b64encode(b"ana:guess").decode()}
    with serving(app) as port:
        for _ in range(5):
            assert send(port, "GET", "/", guess).status == 401
        assert send(port, "GET", "/", guess).status == 429


def login_from(app, address: str, token: str) -> int:
    return Client(app).post(LOGIN_PATH, data={"token": token},
                            environ_base={"REMOTE_ADDR": address}).status_code


def test_the_throttle_is_per_client_and_ends_after_the_window():
    clock = Clock()
    app = AuthMiddleware(hello, AuthConfig(token=TOKEN),
                         throttle=LoginThrottle(clock=clock))
    for _ in range(5):
        login_from(app, "10.0.0.66", "wrong")
    assert login_from(app, "10.0.0.66", TOKEN) == 429
    assert login_from(app, "10.0.0.7", TOKEN) == 303  # someone else
    clock.now += 61
    assert login_from(app, "10.0.0.66", TOKEN) == 303


def test_the_throttle_counts_an_ipv6_client_by_its_64_and_forgets_the_oldest():
    throttle = LoginThrottle(max_clients=100)
    app = AuthMiddleware(hello, AuthConfig(token=TOKEN), throttle=throttle)
    for i in range(5):
        login_from(app, f"2001:db8::{i + 1:x}", "wrong")
    assert login_from(app, "2001:db8::ffff", TOKEN) == 429
    assert login_from(app, "2001:db8:0:1::1", TOKEN) == 303
    for i in range(5000):
        throttle.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(throttle._seen) == 100


# -- credentials: session cookies ----------------------------------------------------------

@pytest.fixture(params=SERVERS)
def clocked(request):
    """A token-protected app whose sessions read a clock the test moves; yields (port, clock)."""
    clock = Clock()
    app = RequestGuard(AuthMiddleware(hello, AuthConfig(token=TOKEN), clock=clock))
    with serving(app, request.param) as port:
        yield port, clock


def cookie_header(value: str) -> dict:
    return {"Cookie": f"{COOKIE}={value}"}


def test_the_session_cookie_expires(clocked):
    port, clock = clocked
    answer = login(port)
    assert answer.status == 303
    set_cookie = answer.headers["Set-Cookie"]
    assert "Max-Age=43200" in set_cookie and "HttpOnly" in set_cookie
    assert "SameSite=Strict" in set_cookie and "Secure" not in set_cookie  # plain http
    value = answer.cookie()
    assert TOKEN not in value
    assert send(port, "GET", "/", cookie_header(value)).text == "hello"
    clock.now += 12 * 3600 - 5
    assert send(port, "GET", "/", cookie_header(value)).text == "hello"
    clock.now += 10
    assert send(port, "GET", "/", cookie_header(value)).status == 401
    # the issue time is signed: moving it forward does not revive the session
    sid, issued, mac = value.split(".")
    fresh = f"{sid}.{int(clock.now)}.{mac}"
    assert send(port, "GET", "/", cookie_header(fresh)).status == 401


def test_the_old_never_expiring_cookie_is_refused(token_port):
    old = hmac.new(TOKEN.encode(), b"patientgraph-explorer-session", hashlib.sha256).hexdigest()
    assert send(token_port, "GET", "/", cookie_header(old)).status == 401


def test_logout_revokes_the_session(clocked):
    port, _ = clocked
    value = login(port).cookie()
    assert send(port, "GET", "/", cookie_header(value)).text == "hello"
    answer = send(port, "GET", LOGOUT_PATH, cookie_header(value))
    assert answer.status == 303 and answer.headers["Location"] == LOGIN_PATH
    assert "Max-Age=0" in answer.headers["Set-Cookie"]
    assert answer.cookie() == ""
    # a copy of the cookie kept by an attacker is dead too
    assert send(port, "GET", "/", cookie_header(value)).status == 401
    again = login(port).cookie()
    assert again != value and send(port, "GET", "/", cookie_header(again)).text == "hello"


def test_a_restart_revokes_every_session():
    with serving(protect(hello, AuthConfig(token=TOKEN))) as port:
        value = login(port).cookie()
        assert send(port, "GET", "/", cookie_header(value)).text == "hello"
    with serving(protect(hello, AuthConfig(token=TOKEN))) as restarted:
        assert send(restarted, "GET", "/", cookie_header(value)).status == 401


def test_revoked_sessions_are_bounded():
    sessions = Sessions(TOKEN, 3600, max_revoked=3)
    values = [sessions.issue() for _ in range(5)]
    for value in values[:3]:
        sessions.revoke(value)
    assert len(sessions._revoked) == 3 and sessions.check(values[3])
    sessions.revoke(values[3])  # one too many: the secret is drawn again
    assert len(sessions._revoked) == 0 and not sessions.check(values[4])


def test_session_hours_come_from_the_environment():
    auth = auth_from_env({"PATIENTGRAPH_TOKEN": TOKEN, "PATIENTGRAPH_SESSION_HOURS": "1.5"})
    assert auth.session_hours == 1.5
    client = Client(AuthMiddleware(hello, auth))
    assert "Max-Age=5400" in client.post(LOGIN_PATH, data={"token": TOKEN}).headers["Set-Cookie"]
    for bad in ("0", "-3", "soon", "nan", "inf", "9000"):
        with pytest.raises(InputError, match="PATIENTGRAPH_SESSION_HOURS"):
            auth_from_env({"PATIENTGRAPH_TOKEN": TOKEN, "PATIENTGRAPH_SESSION_HOURS": bad})


def test_the_cookie_is_secure_over_https_or_a_trusted_proxy():
    auth = AuthConfig(token=TOKEN)

    def set_cookie(app, **kwargs) -> str:
        return Client(app).post(LOGIN_PATH, data={"token": TOKEN}, **kwargs).headers[
            "Set-Cookie"]

    assert "; Secure" in set_cookie(protect(hello, auth), base_url="https://localhost")
    proxied = {"headers": {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}}
    trusted = http_policy_from_env("127.0.0.1", {"PATIENTGRAPH_TRUST_PROXY": "1"})
    assert "; Secure" in set_cookie(protect(hello, auth, trusted), **proxied)
    assert "Secure" not in set_cookie(protect(hello, auth), **proxied)


def test_a_trusted_proxy_throttles_by_the_forwarded_address():
    trusted = http_policy_from_env("127.0.0.1", {"PATIENTGRAPH_TRUST_PROXY": "yes"})
    client = Client(protect(hello, AuthConfig(token=TOKEN), trusted))

    def attempt(address: str, token: str) -> int:
        return client.post(LOGIN_PATH, data={"token": token},
                           headers={"X-Forwarded-For": address}).status_code

    for _ in range(5):
        attempt("203.0.113.9", "wrong")
    assert attempt("203.0.113.9", TOKEN) == 429
    assert attempt("198.51.100.4", TOKEN) == 303  # another user behind the same proxy


# -- malformed requests --------------------------------------------------------------------

@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "+7", "0x10", "7, 7",
                                    "99999999999999999999"])
def test_a_bad_content_length_is_refused_without_a_traceback(token_port, length, caplog):
    kind, body = form("x")
    with caplog.at_level(logging.ERROR):
        answer = send(token_port, "POST", LOGIN_PATH, kind, body, length=length)
    assert_refused_plainly(answer, (400, 413))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert login(token_port).status == 303  # and the server still answers


@pytest.mark.parametrize("length", ["abc", "-1"])
def test_a_bad_content_length_on_the_open_explorer_is_refused(port, callback_body, length):
    answer = send(port, "POST", "/_dash-update-component", JSON, callback_body, length=length)
    assert_refused_plainly(answer, 400)


@pytest.mark.parametrize("body, status", [
    (b"token=\xff\xfe", 400),  # not UTF-8
    (b"token=%ff%fe", 400),  # percent-encoded, not UTF-8
    (b"token=" + b"a" * 5000, 413),  # beyond the login body's cap
    (b"&".join(b"f%d=1" % i for i in range(50)), 400),  # too many fields
])
def test_a_malformed_login_body_is_refused(token_port, body, status):
    answer = send(token_port, "POST", LOGIN_PATH,
                  {"Content-Type": "application/x-www-form-urlencoded"}, body)
    assert_refused_plainly(answer, status)


@pytest.mark.parametrize("header", [
    "Basic %%%", "Basic", "Basic " + base64.b64encode(b"\xff\xfe:pw").decode(),
    "Basic " + base64.b64encode(b"no-colon").decode(), "Basic " + "A" * 6000,
    "Bearer", "Digest x=1",
])
def test_bad_basic_auth_is_refused_without_a_traceback(header):
    with serving(protect(hello, AuthConfig(user="ana", password="pw"))) as port:
        answer = send(port, "GET", "/", {"Authorization": header})
    assert_refused_plainly(answer, 401)


@pytest.mark.parametrize("cookie", [
    f"{COOKIE}=\xff\xfe\x80", f"{COOKIE}=a.b.c", f"{COOKIE}=...", f"{COOKIE}=1.2",
    f"{COOKIE}=x.99999999999999999999.y", f"{COOKIE}=" + "a" * 4000, "=;;;==;",
    f'{COOKIE}="quoted"', f"{COOKIE}=x.-5.y",
])
def test_garbage_cookies_are_refused_without_a_traceback(token_port, cookie):
    answer = send(token_port, "GET", "/", {"Cookie": cookie})
    assert_refused_plainly(answer, 401)


def test_a_token_explorer_end_to_end(workspace):
    """Login form -> cookie -> a callback from the page's own origin -> logout."""
    app = create_app(workspace.root, auth=AuthConfig(token=TOKEN),
                     http=http_policy_from_env("127.0.0.1", {}))
    body = json.dumps(find_callback(app, "page.children").body({"url.pathname": "/"})).encode()
    with serving(app.server) as port:
        own = {"Origin": f"http://127.0.0.1:{port}"}
        assert send(port, "POST", "/_dash-update-component", {**JSON, **own}, body).status == 401
        forged = send(port, "GET", "/", {"Accept": "text/html"}, host="attacker.example")
        assert_refused_plainly(forged, 400)  # the Host check comes before the login page
        cross = login(port, Origin="http://attacker.example")
        assert_refused_plainly(cross, 403)  # no login from another site's form
        value = login(port, **own).cookie()
        session = {**JSON, **own, **cookie_header(value)}
        answer = send(port, "POST", "/_dash-update-component", session, body)
        assert answer.status == 200 and answer.headers["X-Frame-Options"] == "DENY"
        assert send(port, "GET", LOGOUT_PATH, cookie_header(value)).status == 303
        assert send(port, "POST", "/_dash-update-component", session, body).status == 401


# -- which hosts a server answers to -------------------------------------------------------

def test_a_wildcard_bind_answers_to_addresses_and_listed_names():
    policy = HttpPolicy.serving("0.0.0.0", allowed_hosts=["explorer.example.org",
                                                          "proxy.lan:8443"])
    for host in ("10.1.2.3:8050", "[2001:db8::1]:8050", "localhost:9000",
                 "explorer.example.org", "Explorer.Example.Org:443", "proxy.lan:8443"):
        assert policy.host_allowed(host), host
    for host in ("attacker.example", "proxy.lan:9000", "explorer.example.org.attacker.example"):
        assert not policy.host_allowed(host), host
    assert policy.origin_allowed("https://explorer.example.org", "127.0.0.1:8050")
    assert policy.origin_allowed("http://10.1.2.3:8050", "10.1.2.3:8050")
    assert not policy.origin_allowed("http://10.1.2.3:3000", "10.1.2.3:8050")
    assert not policy.origin_allowed("https://attacker.example", "10.1.2.3:8050")


def test_a_named_bind_answers_to_its_name_only():
    policy = HttpPolicy.serving("192.168.1.5")
    assert policy.host_allowed("192.168.1.5:8050")
    assert not policy.host_allowed("attacker.example:8050")
    assert not policy.host_allowed("192.168.1.6:8050")


def test_allowed_hosts_and_the_proxy_switch_come_from_the_environment():
    policy = http_policy_from_env("0.0.0.0", {"PATIENTGRAPH_ALLOWED_HOSTS":
                                              "a.example.org, b.example.org:8443"},
                                  allowed_hosts=["c.example.org"])
    assert {n for n, _ in policy.allowed} == {"a.example.org", "b.example.org", "c.example.org"}
    assert not policy.trust_proxy
    for bad in ("https://a.example.org/", "*", "a.example.org/path", "user@a.example.org"):
        with pytest.raises(InputError, match="PATIENTGRAPH_ALLOWED_HOSTS"):
            http_policy_from_env("0.0.0.0", {"PATIENTGRAPH_ALLOWED_HOSTS": bad})
    with pytest.raises(InputError, match="PATIENTGRAPH_TRUST_PROXY"):
        http_policy_from_env("0.0.0.0", {"PATIENTGRAPH_TRUST_PROXY": "maybe"})


def test_serve_wires_the_allowed_hosts_through_to_the_server(workspace, monkeypatch):
    """``serve`` on a wildcard with a token and $PATIENTGRAPH_ALLOWED_HOSTS, over a socket."""
    from dashboards.server import serve

    captured = {}
    monkeypatch.setattr(waitress, "serve", lambda app, **kw: captured.update(app=app, **kw))
    serve(workspace.root, host="0.0.0.0", workers=2, echo=lambda _m: None,
          environ={"PATIENTGRAPH_TOKEN": TOKEN,
                   "PATIENTGRAPH_ALLOWED_HOSTS": "explorer.example.org"})
    with serving(captured["app"]) as port:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert send(port, "GET", "/_dash-layout", bearer,
                    host="explorer.example.org").status == 200
        assert send(port, "GET", "/_dash-layout", bearer, host=f"127.0.0.1:{port}").status == 200
        assert_refused_plainly(send(port, "GET", "/_dash-layout", bearer,
                                    host="attacker.example"), 400)
