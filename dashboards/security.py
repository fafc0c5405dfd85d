"""Who may use the explorer: loopback by default, else an access token or basic auth.

Credentials come only from the environment: ``PATIENTGRAPH_TOKEN`` (an access token), or
``PATIENTGRAPH_USER`` and ``PATIENTGRAPH_PASSWORD`` (HTTP basic auth). Serving on any host
but a loopback address without one of them is refused. When set, they are enforced on every
request by :class:`AuthMiddleware` (a WSGI wrapper): a token is accepted as an
``Authorization: Bearer`` header or as the session cookie that the ``/_login`` form sets
(the token is never put in a URL), basic auth as the browser's own prompt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

from patientgraph.errors import InputError

TOKEN_ENV = "PATIENTGRAPH_TOKEN"
USER_ENV = "PATIENTGRAPH_USER"
PASSWORD_ENV = "PATIENTGRAPH_PASSWORD"
LOGIN_PATH = "/_login"
COOKIE = "patientgraph_session"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class AuthConfig:
    """The credentials the explorer asks for (none: open to whoever reaches the port)."""

    token: str | None = None
    user: str | None = None
    password: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.token) or bool(self.user and self.password)

    def session_value(self) -> str:
        """The cookie value a valid token login sets: an HMAC of the token, not the token."""
        return hmac.new((self.token or "").encode(), b"patientgraph-explorer-session",
                        hashlib.sha256).hexdigest()


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
    return AuthConfig(token=token, user=user, password=password)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_host(host: str, auth: AuthConfig) -> None:
    """Refuse to serve beyond loopback without credentials (an InputError: exit code 2)."""
    if not is_loopback(host) and not auth.enabled:
        raise InputError(None, f"refusing to serve on --host {host} without an access token "
                         "or basic auth: anyone who can reach the port would see patient data",
                         f"set ${TOKEN_ENV} (a long random token), or ${USER_ENV} and "
                         f"${PASSWORD_ENV}, in the environment; or serve on 127.0.0.1")


WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class AuthMiddleware:
    """WSGI wrapper that lets a request through only with valid credentials."""

    def __init__(self, app: WSGIApp, auth: AuthConfig):
        self.app = app
        self.auth = auth

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not self.auth.enabled or self._authorised(environ):
            return self.app(environ, start_response)
        if self.auth.token and environ.get("PATH_INFO") == LOGIN_PATH:
            return self._login(environ, start_response)
        if self.auth.user and not self.auth.token:
            return _reply(start_response, "401 Unauthorized", "authentication required\n",
                          [("WWW-Authenticate", 'Basic realm="PatientGraph explorer"')])
        if environ.get("REQUEST_METHOD") == "GET" and "text/html" in environ.get(
                "HTTP_ACCEPT", ""):
            return _reply(start_response, "303 See Other", "", [("Location", LOGIN_PATH)])
        headers = ([("WWW-Authenticate", 'Basic realm="PatientGraph explorer"')]
                   if self.auth.user else [])
        return _reply(start_response, "401 Unauthorized", "authentication required\n", headers)

    def _authorised(self, environ: Mapping) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.partition(" ")
        if self.auth.token:
            if scheme.lower() == "bearer" and _same(value.strip(), self.auth.token):
                return True
            cookie = _cookies(environ.get("HTTP_COOKIE", "")).get(COOKIE)
            if cookie and _same(cookie, self.auth.session_value()):
                return True
        if self.auth.user and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return _same(user, self.auth.user) & _same(password, self.auth.password or "")
        return False

    def _login(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        error = ""
        if environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(min(length, 4096)).decode(errors="replace")
            token = parse_qs(body).get("token", [""])[0]
            if _same(token, self.auth.token or ""):
                cookie = (f"{COOKIE}={self.auth.session_value()}; Path=/; HttpOnly; "
                          "SameSite=Strict")
                return _reply(start_response, "303 See Other", "",
                              [("Location", "/"), ("Set-Cookie", cookie)])
            error = "<p style='color:#b00'>That token is not valid.</p>"
        page = (
            "<!doctype html><html><head><title>PatientGraph explorer</title></head>"
            "<body style='font-family:sans-serif;margin:4em'><h2>PatientGraph explorer</h2>"
            f"{error}<form method='post' action='{html.escape(LOGIN_PATH)}'>"
            "<label>Access token <input type='password' name='token' autofocus></label> "
            "<button type='submit'>Open</button></form></body></html>")
        return _reply(start_response, "200 OK" if not error else "401 Unauthorized", page,
                      [("Content-Type", "text/html; charset=utf-8")])


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _cookies(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            out[name] = value
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
