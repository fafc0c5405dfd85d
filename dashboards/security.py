"""Who may use the explorer, and what every HTTP request to it must look like.

Credentials come only from the environment: ``PATIENTGRAPH_TOKEN`` (an access token), or
``PATIENTGRAPH_USER`` and ``PATIENTGRAPH_PASSWORD`` (HTTP basic auth). Without one of them
the explorer serves on 127.0.0.1, ::1 or localhost only. When set, they are enforced on
every request by :class:`AuthMiddleware` (a WSGI wrapper): a token is accepted as an
``Authorization: Bearer`` header or as the session cookie that the ``/_login`` form sets
(the token is never put in a URL), basic auth as the browser's own prompt. A session cookie
is signed with a key made from the token and a secret drawn when the server starts, carries
its issue time and lasts ``PATIENTGRAPH_SESSION_HOURS`` (12); ``/_logout`` revokes it, a
restart revokes them all. Failed logins are throttled per client address.

:func:`protect` puts the whole stack around a WSGI app (the explorer's ``create_app`` does):
:class:`RequestGuard` outermost (the Host header must name an address the explorer serves,
which is what stops DNS rebinding; a POST's Origin must be the page's own or an allowed
host; a malformed Content-Length is a 400; security headers on every answer; no traceback
ever reaches the client), then the credentials, then :class:`CallbackBodyCheck` (a Dash
callback request must have the shape Dash expects, else 400 instead of Dash's 500).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import io
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

from patientgraph.errors import InputError
from patientgraph.options import env_number

TOKEN_ENV = "PATIENTGRAPH_TOKEN"
USER_ENV = "PATIENTGRAPH_USER"
PASSWORD_ENV = "PATIENTGRAPH_PASSWORD"
SESSION_HOURS_ENV = "PATIENTGRAPH_SESSION_HOURS"
ALLOWED_HOSTS_ENV = "PATIENTGRAPH_ALLOWED_HOSTS"
TRUST_PROXY_ENV = "PATIENTGRAPH_TRUST_PROXY"
LOGIN_PATH = "/_login"
LOGOUT_PATH = "/_logout"
CALLBACK_PATH = "/_dash-update-component"
COOKIE = "patientgraph_session"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
LOOPBACK_ADDRESSES = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})  # what a Host header may say
WILDCARD_HOSTS = {"", "*", "0.0.0.0", "::"}
MIN_TOKEN_LENGTH = 16
DEFAULT_SESSION_HOURS = 12.0
MAX_SESSION_HOURS = 24.0 * 365
LOGIN_FAILURES = 5  # failed logins per client address ...
LOGIN_WINDOW_S = 60.0  # ... in this many seconds, then 429 until the oldest one is this old
MAX_LOGIN_BODY = 4096
MAX_BODY = 64 * 2**20  # any request (a lasso over every lesion is a few MB)
STATIC_PREFIXES = ("/_dash-component-suites/", "/assets/", "/_favicon.ico")
SECURITY_HEADERS = (
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
BASIC_CHALLENGE = ("WWW-Authenticate", 'Basic realm="PatientGraph explorer"')

log = logging.getLogger(__name__)
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


@dataclass(frozen=True)
class AuthConfig:
    """The credentials the explorer asks for (none: open to whoever reaches the port)."""

    token: str | None = None
    user: str | None = None
    password: str | None = None
    session_hours: float = DEFAULT_SESSION_HOURS

    @property
    def enabled(self) -> bool:
        return bool(self.token) or bool(self.user and self.password)


def auth_from_env(environ: Mapping[str, str] | None = None) -> AuthConfig:
    """Read the credentials from the environment; a half-set pair or a short token is refused."""
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV) or None
    user, password = env.get(USER_ENV) or None, env.get(PASSWORD_ENV) or None
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise InputError(None, f"${TOKEN_ENV} is shorter than {MIN_TOKEN_LENGTH} characters",
                         "set a long random token, e.g. export PATIENTGRAPH_TOKEN=$(python -c "
                         "'import secrets; print(secrets.token_urlsafe(24))')")
    if bool(user) != bool(password):
        raise InputError(None, f"only one of ${USER_ENV} and ${PASSWORD_ENV} is set",
                         "set both for basic auth, or neither")
    hours = env_number(SESSION_HOURS_ENV, DEFAULT_SESSION_HOURS, low=0,
                       high=MAX_SESSION_HOURS, unit="hours a login lasts", low_open=True,
                       environ=env)
    return AuthConfig(token=token, user=user, password=password, session_hours=hours)


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is 127.0.0.1, ::1 or a localhost name (not the rest of 127.0.0.0/8)."""
    name = host.strip().strip("[]").lower()
    return name in LOOPBACK_NAMES or _ip(name) in LOOPBACK_ADDRESSES


def bind_address(host: str) -> str:
    """The address to listen on for ``--host``: a localhost name is 127.0.0.1 (::1 for
    ip6-localhost), so that no resolver can send it elsewhere."""
    name = host.strip().strip("[]")
    if name.lower() in LOOPBACK_NAMES:
        return "::1" if name.lower() == "ip6-localhost" else "127.0.0.1"
    return name


def check_host(host: str, auth: AuthConfig) -> None:
    """Refuse to serve beyond loopback without credentials (an InputError: exit code 2)."""
    if not is_loopback(host) and not auth.enabled:
        raise InputError(None, f"refusing to serve on --host {host} without an access token "
                         "or basic auth: without credentials the explorer serves on "
                         "127.0.0.1, ::1 or localhost only, since anyone who can reach another "
                         "address would see patient data",
                         f"set ${TOKEN_ENV} (a long random token), or ${USER_ENV} and "
                         f"${PASSWORD_ENV}, in the environment; or serve on 127.0.0.1")


# --- Host and Origin ------------------------------------------------------------------------

_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<host>[^/]+)")
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a Host header or host entry (names lower case, IPs normalised);
    None when it is no plain host name, IP or ``[IPv6]`` with an optional port."""
    match = _HOST.fullmatch(value.strip().lower())
    if match is None:
        return None
    name = match["name"] or match["v6"]
    address = _ip(name)
    if match["v6"] is not None and (address is None or address.version != 6):
        return None
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        return None
    return (str(address) if address is not None else name), port


@dataclass(frozen=True)
class HttpPolicy:
    """Which Host names the explorer answers to, and whether to believe a proxy's headers.

    ``names`` are the served names (any port: an SSH tunnel may move it); ``any_ip`` accepts
    any IP address as the host (a wildcard bind: an address cannot be rebound to another
    machine, unlike a name); ``allowed`` are extra ``(name, port or None)`` entries, such as
    a reverse proxy's public name, that Origin headers may name too; with ``trust_proxy``
    the client's address and scheme come from X-Forwarded-For and X-Forwarded-Proto.
    """

    names: frozenset[str] = LOOPBACK_HOSTS
    any_ip: bool = False
    allowed: tuple[tuple[str, int | None], ...] = ()
    trust_proxy: bool = False

    @classmethod
    def serving(cls, host: str, *, allowed_hosts: Iterable[str] = (),
                trust_proxy: bool = False) -> HttpPolicy:
        """The policy for a server started with ``--host host``."""
        entries = []
        for entry in allowed_hosts:
            parsed = split_host(entry)
            if parsed is None:
                raise InputError(None, f"{entry!r} in ${ALLOWED_HOSTS_ENV} is no host name",
                                 "give host names or IPs, each with an optional :port, "
                                 "separated by commas (e.g. explorer.example.org,10.0.0.5:8443)"
                                 ", not URLs or wildcards")
            entries.append(parsed)
        bound = split_host(host)
        bound_name = bound[0] if bound else host.strip().strip("[]").lower()
        if is_loopback(host):
            names = LOOPBACK_HOSTS | {bound_name}
        elif bound_name in WILDCARD_HOSTS:
            names = LOOPBACK_HOSTS | {socket.gethostname().lower()}
        else:
            names = frozenset({bound_name})
        return cls(names=frozenset(names), any_ip=bound_name in WILDCARD_HOSTS,
                   allowed=tuple(entries), trust_proxy=trust_proxy)

    def host_allowed(self, host: str, scheme: str = "http") -> bool:
        """Whether a Host header names this server."""
        parsed = split_host(host)
        if parsed is None:
            return False
        name, _ = parsed
        return (name in self.names or (self.any_ip and _ip(name) is not None)
                or self._listed(parsed, scheme))

    def origin_allowed(self, origin: str, host: str | None, scheme: str = "http") -> bool:
        """Whether an Origin header is this page's own (same name and port as the Host the
        request came to) or an allowed host; ``null`` and anything else are refused."""
        match = _ORIGIN.fullmatch(origin.strip().lower())
        parsed = split_host(match["host"]) if match else None
        if parsed is None:
            return False
        own = (parsed[0], parsed[1] or DEFAULT_PORTS[match["scheme"]])
        target = split_host(host) if host else None
        if target is not None and own == (target[0], target[1] or DEFAULT_PORTS.get(scheme)):
            return True
        return self._listed(parsed, match["scheme"])

    def _listed(self, parsed: tuple[str, int | None], scheme: str) -> bool:
        name, port = parsed
        port = port or DEFAULT_PORTS.get(scheme)
        return any(name == n and (p is None or p == port) for n, p in self.allowed)


def http_policy_from_env(host: str, environ: Mapping[str, str] | None = None,
                         allowed_hosts: Iterable[str] = ()) -> HttpPolicy:
    """The policy for ``--host host``, with ``$PATIENTGRAPH_ALLOWED_HOSTS`` (comma separated)
    and ``allowed_hosts`` as extra names, and ``$PATIENTGRAPH_TRUST_PROXY``."""
    env = os.environ if environ is None else environ
    listed = [h for h in re.split(r"[,\s]+", env.get(ALLOWED_HOSTS_ENV, "")) if h]
    trust = env.get(TRUST_PROXY_ENV, "").strip().lower()
    if trust not in {"", "0", "false", "no", "off", "1", "true", "yes", "on"}:
        raise InputError(None, f"${TRUST_PROXY_ENV} is {trust!r}",
                         "set it to 1 behind a reverse proxy that sets X-Forwarded-For and "
                         "X-Forwarded-Proto, or leave it unset")
    return HttpPolicy.serving(host, allowed_hosts=[*listed, *allowed_hosts],
                              trust_proxy=trust in {"1", "true", "yes", "on"})


# --- Requests that are refused --------------------------------------------------------------

class HttpError(Exception):
    """A request refused with ``status`` and a short plain-text ``message``."""

    def __init__(self, status: str, message: str, headers: Iterable[tuple[str, str]] = ()):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, list(headers)

    def reply(self, start_response: Callable) -> list[bytes]:
        return _reply(start_response, self.status, self.message + "\n", self.headers)


def content_length(environ: Mapping) -> int | None:
    """The request's Content-Length (None when absent); 400 unless digits, 413 above MAX_BODY."""
    text = environ.get("CONTENT_LENGTH")
    if text is None or text == "":
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise HttpError("400 Bad Request", "bad Content-Length")
    if int(text) > MAX_BODY:
        raise HttpError("413 Content Too Large", "request body too large")
    return int(text)


def read_body(environ: dict, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond); the input is left readable."""
    length = content_length(environ)
    stream = environ["wsgi.input"]
    if length is None:
        data = stream.read(limit + 1) if environ.get("wsgi.input_terminated") else b""
    elif length > limit:
        raise HttpError("413 Content Too Large", "request body too large")
    else:
        data = stream.read(length)
    if len(data) > limit:
        raise HttpError("413 Content Too Large", "request body too large")
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(data), str(len(data))
    return data


class RequestGuard:
    """Outermost WSGI wrapper: Host and Origin checks, Content-Length, security headers,
    and a plain 500 instead of whatever an unexpected exception would have shown."""

    def __init__(self, app: WSGIApp, policy: HttpPolicy | None = None):
        self.app = app
        self.policy = policy or HttpPolicy()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        started = []

        def respond(status, headers, exc_info=None):
            started.append(status)
            return start_response(status, _secured(headers, path), exc_info)

        try:
            self._check(environ)
            return self.app(environ, respond)
        except HttpError as refused:
            log.warning("refused a request: %s %s", refused.status, refused.message)
            return refused.reply(respond)
        except Exception:
            if started:
                raise
            log.exception("error while answering a %s request", environ.get("REQUEST_METHOD"))
            return _reply(respond, "500 Internal Server Error", "internal error\n", [])

    def _check(self, environ: dict) -> None:
        scheme = environ.get("wsgi.url_scheme", "http")
        host = environ.get("HTTP_HOST")
        if host is not None and not self.policy.host_allowed(host, scheme):
            raise HttpError("400 Bad Request", "Host header names no host this explorer serves "
                            f"(a reverse proxy's name goes in ${ALLOWED_HOSTS_ENV})")
        origin = environ.get("HTTP_ORIGIN")
        if (origin is not None and environ.get("REQUEST_METHOD", "GET").upper() in UNSAFE_METHODS
                and not self.policy.origin_allowed(origin, host, scheme)):
            raise HttpError("403 Forbidden", "cross-origin request refused")
        content_length(environ)


def _secured(headers: list[tuple[str, str]], path: str) -> list[tuple[str, str]]:
    fixed = [name for name, _ in SECURITY_HEADERS]
    if not path.startswith(STATIC_PREFIXES):
        fixed.append("Cache-Control")
    drop = {name.lower() for name in fixed}
    kept = [(name, value) for name, value in headers if name.lower() not in drop]
    extra = [] if path.startswith(STATIC_PREFIXES) else [("Cache-Control", "no-store")]
    return [*kept, *SECURITY_HEADERS, *extra]


# --- Credentials ----------------------------------------------------------------------------

class Sessions:
    """Login sessions as signed cookie values ``id.issued.mac``.

    The MAC key is an HMAC of the token under a secret drawn at start, so a restart (or a new
    token) ends every session. Values older than ``max_age_s`` are refused; a logout adds the
    id to a set kept until it would have expired anyway; if that set grows past
    ``max_revoked``, the secret is drawn again instead (every session ends).
    """

    def __init__(self, token: str, max_age_s: float, *, clock: Callable[[], float] = time.time,
                 max_revoked: int = 10_000):
        self.token, self.max_age_s, self.clock, self.max_revoked = (
            token, max_age_s, clock, max_revoked)
        self._lock = threading.Lock()
        self._rotate()

    def _rotate(self) -> None:
        self._key = hmac.new(secrets.token_bytes(32), self.token.encode(),
                             hashlib.sha256).digest()
        self._revoked: dict[str, float] = {}

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        payload = f"{secrets.token_urlsafe(18)}.{int(self.clock())}"
        return f"{payload}.{self._mac(payload)}"

    def check(self, value: str) -> str | None:
        """The session id of a valid, unexpired, unrevoked value; None otherwise."""
        parts = value.split(".")
        if len(value) > 256 or len(parts) != 3:
            return None
        sid, issued, mac = parts
        if not (issued.isascii() and issued.isdigit() and len(issued) <= 12):
            return None
        with self._lock:
            if not _same(mac, self._mac(f"{sid}.{issued}")) or sid in self._revoked:
                return None
        age = self.clock() - int(issued)
        return sid if -60 <= age < self.max_age_s else None

    def revoke(self, value: str) -> None:
        sid = self.check(value)
        if sid is None:
            return
        now = self.clock()
        with self._lock:
            self._revoked = {s: t for s, t in self._revoked.items() if t > now}
            if len(self._revoked) >= self.max_revoked:
                self._rotate()
            else:
                self._revoked[sid] = now + self.max_age_s


class LoginThrottle:
    """At most ``failures`` failed logins per client in ``window_s`` seconds, per address
    (an IPv6 client by its /64), for at most ``max_clients`` addresses (the oldest go)."""

    def __init__(self, failures: int = LOGIN_FAILURES, window_s: float = LOGIN_WINDOW_S, *,
                 max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.failures, self.window_s, self.max_clients, self.clock = (
            failures, window_s, max_clients, clock)
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again (0: now)."""
        with self._lock:
            times = self._seen.get(client)
            if times is None or len(times) < self.failures:
                return 0
            return max(0, math.ceil(times[0] + self.window_s - self.clock()))

    def failed(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            times = self._seen.setdefault(client, deque(maxlen=self.failures))
            times.append(now)
            self._seen.move_to_end(client)
            while len(self._seen) > self.max_clients:
                self._seen.popitem(last=False)


def client_address(environ: Mapping) -> str:
    """Who is asking, for throttling: REMOTE_ADDR, an IPv6 address by its /64 network."""
    address = _ip(environ.get("REMOTE_ADDR", ""))
    if address is None:
        return environ.get("REMOTE_ADDR", "")
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class AuthMiddleware:
    """WSGI wrapper that lets a request through only with valid credentials."""

    def __init__(self, app: WSGIApp, auth: AuthConfig, *,
                 clock: Callable[[], float] = time.time,
                 throttle: LoginThrottle | None = None):
        self.app = app
        self.auth = auth
        self.sessions = Sessions(auth.token or "", auth.session_hours * 3600, clock=clock)
        self.throttle = throttle or LoginThrottle()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not self.auth.enabled:
            return self.app(environ, start_response)
        try:
            return self._answer(environ, start_response)
        except HttpError as refused:
            return refused.reply(start_response)

    def _answer(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == LOGOUT_PATH:
            return self._logout(environ, start_response)
        if self._session(environ) is not None:
            return self.app(environ, start_response)
        verdict = self._credentials(environ)
        if verdict is not None:
            self._not_throttled(environ)
            if verdict:
                return self.app(environ, start_response)
            self.throttle.failed(client_address(environ))
        if self.auth.token and path == LOGIN_PATH:
            return self._login(environ, start_response)
        if self.auth.user and not self.auth.token:
            return _reply(start_response, "401 Unauthorized", "authentication required\n",
                          [BASIC_CHALLENGE])
        if verdict is None and environ.get("REQUEST_METHOD") == "GET" and "text/html" in (
                environ.get("HTTP_ACCEPT", "")):
            return _reply(start_response, "303 See Other", "", [("Location", LOGIN_PATH)])
        return _reply(start_response, "401 Unauthorized", "authentication required\n",
                      [BASIC_CHALLENGE] if self.auth.user else [])

    def _session(self, environ: Mapping) -> str | None:
        cookie = _cookies(environ.get("HTTP_COOKIE", "")).get(COOKIE)
        return self.sessions.check(cookie) if cookie and self.auth.token else None

    def _credentials(self, environ: Mapping) -> bool | None:
        """True or False for an Authorization header this server takes, None without one."""
        scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        scheme = scheme.lower()
        if self.auth.token and scheme == "bearer":
            return _same(value.strip(), self.auth.token)
        if self.auth.user and scheme == "basic":
            try:
                decoded = base64.b64decode(value.strip()).decode()
            except (binascii.Error, ValueError):
                return False
            user, _, password = decoded.partition(":")
            return _same(user, self.auth.user) & _same(password, self.auth.password or "")
        return None

    def _not_throttled(self, environ: Mapping) -> None:
        wait = self.throttle.retry_after(client_address(environ))
        if wait:
            raise HttpError("429 Too Many Requests", "too many failed logins; try again later",
                            [("Retry-After", str(wait))])

    def _login(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        error = ""
        if environ.get("REQUEST_METHOD") == "POST":
            self._not_throttled(environ)
            token = _form_field(read_body(environ, MAX_LOGIN_BODY), "token")
            if _same(token, self.auth.token or ""):
                cookie = (f"{COOKIE}={self.sessions.issue()}; Path=/; "
                          f"Max-Age={int(self.sessions.max_age_s)}; HttpOnly; SameSite=Strict"
                          + ("; Secure" if environ.get("wsgi.url_scheme") == "https" else ""))
                return _reply(start_response, "303 See Other", "",
                              [("Location", "/"), ("Set-Cookie", cookie)])
            self.throttle.failed(client_address(environ))
            error = "<p style='color:#b00'>That token is not valid.</p>"
        page = (
            "<!doctype html><html><head><title>PatientGraph explorer</title></head>"
            "<body style='font-family:sans-serif;margin:4em'><h2>PatientGraph explorer</h2>"
            f"{error}<form method='post' action='{html.escape(LOGIN_PATH)}'>"
            "<label>Access token <input type='password' name='token' autofocus></label> "
            "<button type='submit'>Open</button></form></body></html>")
        return _reply(start_response, "200 OK" if not error else "401 Unauthorized", page,
                      [("Content-Type", "text/html; charset=utf-8")])

    def _logout(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        cookie = _cookies(environ.get("HTTP_COOKIE", "")).get(COOKIE)
        if cookie:
            self.sessions.revoke(cookie)
        clear = ("Set-Cookie", f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
                 + ("; Secure" if environ.get("wsgi.url_scheme") == "https" else ""))
        if self.auth.token:
            return _reply(start_response, "303 See Other", "",
                          [("Location", LOGIN_PATH), clear])
        return _reply(start_response, "401 Unauthorized",
                      "signed out; close the browser to forget basic-auth credentials\n",
                      [clear, BASIC_CHALLENGE])


def _form_field(body: bytes, name: str) -> str:
    """One field of a urlencoded form body; 400 for bytes that are not UTF-8."""
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, errors="strict",
                          max_num_fields=20)
    except ValueError as exc:  # UnicodeDecodeError is one
        raise HttpError("400 Bad Request", "malformed form body") from exc
    return fields.get(name, [""])[0]


# --- Dash callback requests -----------------------------------------------------------------

class CallbackBodyCheck:
    """A POST to Dash's callback endpoint must be a JSON object naming a registered callback,
    with the inputs and states it takes: else a 400 here rather than a 500 (and a traceback in
    the log) from inside Dash."""

    def __init__(self, app: WSGIApp, callbacks: Callable[[], Mapping[str, Mapping]],
                 path: str = CALLBACK_PATH):
        self.app, self.callbacks, self.path = app, callbacks, path

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == self.path and environ.get("REQUEST_METHOD") == "POST":
            try:
                problem = callback_body_problem(json.loads(read_body(environ, MAX_BODY)),
                                                self.callbacks())
            except HttpError as refused:
                return refused.reply(start_response)
            except (ValueError, RecursionError):  # also UnicodeDecodeError, JSONDecodeError
                problem = "the body is not JSON"
            if problem:
                return _reply(start_response, "400 Bad Request",
                              f"malformed callback request: {problem}\n", [])
        return self.app(environ, start_response)


def callback_body_problem(body: object, callbacks: Mapping[str, Mapping]) -> str | None:
    """What is wrong with a decoded callback request body (None: nothing Dash would trip on)."""
    if not isinstance(body, dict):
        return "not a JSON object"
    callback = callbacks.get(body.get("output")) if isinstance(body.get("output"), str) else None
    if callback is None:
        return "'output' names no callback"
    for key, expected in (("inputs", callback.get("inputs", [])),
                          ("state", callback.get("state", []))):
        items = body.get(key, [])
        if not (isinstance(items, list) and all(map(_props, items))):
            return f"{key!r} is not a list of properties"
        if len(items) != len(expected):
            return f"{key!r} has {len(items)} items, the callback takes {len(expected)}"
    outputs = body.get("outputs", [])
    declared = callback.get("output")
    if isinstance(declared, list):
        if not (isinstance(outputs, list) and len(outputs) in (0, len(declared))
                and all(map(_props, outputs))):
            return f"'outputs' is not a list of {len(declared)} properties"
    elif not (outputs == [] or _props(outputs)):
        return "'outputs' is not a property"
    changed = body.get("changedPropIds", [])
    if not (isinstance(changed, list) and all(isinstance(c, str) for c in changed)):
        return "'changedPropIds' is not a list of names"
    return None


def _props(item: object) -> bool:
    """A property reference (``{"id": ..., "property": ...}``) or a list of them."""
    if isinstance(item, list):
        return all(_prop(i) for i in item)
    return _prop(item)


def _prop(item: object) -> bool:
    return (isinstance(item, dict) and isinstance(item.get("id"), (str, dict))
            and isinstance(item.get("property"), str))


# --- The stack ------------------------------------------------------------------------------

def protect(app: WSGIApp, auth: AuthConfig | None = None, policy: HttpPolicy | None = None, *,
            callbacks: Callable[[], Mapping[str, Mapping]] | None = None,
            callback_path: str = CALLBACK_PATH) -> WSGIApp:
    """``app`` behind the checks: [proxy headers] -> guard -> credentials -> callback bodies."""
    policy = policy or HttpPolicy()
    if callbacks is not None:
        app = CallbackBodyCheck(app, callbacks, callback_path)
    if auth is not None and auth.enabled:
        app = AuthMiddleware(app, auth)
    app = RequestGuard(app, policy)
    if policy.trust_proxy:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app = ProxyFix(app, x_for=1, x_proto=1)
    return app


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _cookies(header: str) -> dict[str, str]:
    """Cookie name -> value; the first of repeated names wins, junk parts are skipped."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name and name not in out:
            out[name] = value.strip().strip('"')
    return out


def _reply(start_response: Callable, status: str, body: str,
           headers: list[tuple[str, str]]) -> list[bytes]:
    data = body.encode()
    names = {h[0].lower() for h in headers}
    if "content-type" not in names:
        headers = [*headers, ("Content-Type", "text/plain; charset=utf-8")]
    start_response(status, [*headers, ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store")])
    return [data]
